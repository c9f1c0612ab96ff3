"""``/v1/threads`` and ``/v1/threads/{thread_id}/messages``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from assistantd.api.auth import require_tenant
from assistantd.api.body import JSONRoute
from assistantd.api.pagination import PageParams, page_params
from assistantd.api.types import Deleted, ListResponse
from assistantd.runs import service as runs_service
from assistantd.threads import service
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
async def create_thread(request: Request, body: CreateThreadRequest | None = None,
                        tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        thread = await service.create(session, tenant, body or CreateThreadRequest())
        return ThreadObject.from_row(thread).response()


@router.get("/{thread_id}")
async def retrieve_thread(thread_id: str, request: Request, tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        thread = await service.get(session, tenant, thread_id)
    return ThreadObject.from_row(thread).response()


@router.post("/{thread_id}")
async def modify_thread(thread_id: str, body: ModifyThreadRequest, request: Request,
                        tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        thread = await service.modify(session, tenant, thread_id, body)
        return ThreadObject.from_row(thread).response()


@router.delete("/{thread_id}")
async def delete_thread(thread_id: str, request: Request, tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        await service.delete(session, tenant, thread_id)
    await request.app.state.sandboxes.release_thread(thread_id)  # its code interpreter goes with it
    return Deleted(id=thread_id, object="thread.deleted").response()


@router.post("/{thread_id}/messages")
async def create_message(thread_id: str, body: CreateMessageRequest, request: Request,
                         tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        thread = await service.get(session, tenant, thread_id)
        await runs_service.require_no_active_run(session, thread.id, "add messages to")
        message = await service.add_message(session, tenant, thread, body)
        return MessageObject.from_row(message).response()


@router.get("/{thread_id}/messages")
async def list_messages(thread_id: str, request: Request, page: PageParams = Depends(page_params),
                        run_id: str | None = Query(None), tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        rows, has_more = await service.list_messages(session, tenant, thread_id, page, run_id)
    return ListResponse.of([MessageObject.from_row(r) for r in rows], has_more).response()


@router.get("/{thread_id}/messages/{message_id}")
async def retrieve_message(thread_id: str, message_id: str, request: Request,
                           tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        await service.get(session, tenant, thread_id)
        message = await service.get_message(session, tenant, thread_id, message_id)
    return MessageObject.from_row(message).response()


@router.post("/{thread_id}/messages/{message_id}")
async def modify_message(thread_id: str, message_id: str, body: ModifyMessageRequest, request: Request,
                         tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        message = await service.modify_message(session, tenant, thread_id, message_id, body)
        return MessageObject.from_row(message).response()


@router.delete("/{thread_id}/messages/{message_id}")
async def delete_message(thread_id: str, message_id: str, request: Request,
                         tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        await service.delete_message(session, tenant, thread_id, message_id)
    return Deleted(id=message_id, object="thread.message.deleted").response()
