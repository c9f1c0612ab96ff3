"""``/v1/assistants``: thin handlers over :mod:`assistantd.assistants.service`."""

from __future__ import annotations

from fastapi import APIRouter

from assistantd.api.body import JSONRoute
from assistantd.api.dependencies import RequestScope
from assistantd.api.pagination import Page, listed
from assistantd.api.types import Deleted
from assistantd.assistants import service
from assistantd.assistants.dependencies import TenantAssistant
from assistantd.assistants.schemas import AssistantObject, CreateAssistantRequest, ModifyAssistantRequest

router = APIRouter(prefix="/assistants", tags=["assistants"], route_class=JSONRoute)


@router.post("")
async def create_assistant(body: CreateAssistantRequest, scope: RequestScope):
    return AssistantObject.from_row(await service.create(scope.session, scope.tenant, body)).response()


@router.get("")
async def list_assistants(page: Page, scope: RequestScope):
    return listed(await service.list_page(scope.session, scope.tenant, page), AssistantObject.from_row)


@router.get("/{assistant_id}")
async def retrieve_assistant(assistant: TenantAssistant):
    return AssistantObject.from_row(assistant).response()


@router.post("/{assistant_id}")
async def modify_assistant(body: ModifyAssistantRequest, assistant: TenantAssistant, scope: RequestScope):
    return AssistantObject.from_row(await service.modify(scope.session, assistant, body)).response()


@router.delete("/{assistant_id}")
async def delete_assistant(assistant: TenantAssistant, scope: RequestScope):
    await scope.session.delete(assistant)
    return Deleted(id=assistant.id, object="assistant.deleted").response()
