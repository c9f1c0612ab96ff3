"""``/v1/threads`` and ``/v1/threads/{thread_id}/messages``."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from assistantd.api.body import JSONRoute
from assistantd.api.dependencies import RequestScope
from assistantd.api.pagination import Page, listed
from assistantd.api.types import Deleted
from assistantd.runs import service as runs_service
from assistantd.threads import service
from assistantd.threads.dependencies import TenantMessage, TenantThread
from assistantd.threads.schemas import (
    CreateMessageRequest,
    CreateThreadRequest,
    MessageObject,
    ModifyMessageRequest,
    ModifyThreadRequest,
    ThreadObject,
)

router = APIRouter(prefix="/threads", tags=["threads"], route_class=JSONRoute)


@router.post("")
async def create_thread(scope: RequestScope, body: CreateThreadRequest | None = None):
    thread = await service.create(scope.session, scope.tenant, body or CreateThreadRequest())
    return ThreadObject.from_row(thread).response()


@router.get("/{thread_id}")
async def retrieve_thread(thread: TenantThread):
    return ThreadObject.from_row(thread).response()


@router.post("/{thread_id}")
async def modify_thread(body: ModifyThreadRequest, thread: TenantThread, scope: RequestScope):
    return ThreadObject.from_row(await service.modify(scope.session, thread, body)).response()


@router.delete("/{thread_id}")
async def delete_thread(thread: TenantThread, scope: RequestScope, request: Request):
    thread_id, sandboxes = thread.id, request.app.state.sandboxes
    await service.delete(scope.session, thread)
    scope.after(lambda: sandboxes.release_thread(thread_id))  # its code interpreter goes with it
    return Deleted(id=thread_id, object="thread.deleted").response()


@router.post("/{thread_id}/messages")
async def create_message(body: CreateMessageRequest, thread: TenantThread, scope: RequestScope):
    await runs_service.require_no_active_run(scope.session, thread.id, "add messages to")
    message = await service.add_message(scope.session, scope.tenant, thread, body)
    return MessageObject.from_row(message).response()


@router.get("/{thread_id}/messages")
async def list_messages(page: Page, thread: TenantThread, scope: RequestScope, run_id: str | None = Query(None)):
    return listed(await service.list_messages(scope.session, thread, page, run_id), MessageObject.from_row)


@router.get("/{thread_id}/messages/{message_id}")
async def retrieve_message(message: TenantMessage):
    return MessageObject.from_row(message).response()


@router.post("/{thread_id}/messages/{message_id}")
async def modify_message(body: ModifyMessageRequest, message: TenantMessage):
    return MessageObject.from_row(service.modify_message(message, body)).response()


@router.delete("/{thread_id}/messages/{message_id}")
async def delete_message(message: TenantMessage, scope: RequestScope):
    await scope.session.delete(message)
    return Deleted(id=message.id, object="thread.message.deleted").response()
