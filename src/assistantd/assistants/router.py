"""``/v1/assistants``: thin handlers over :mod:`assistantd.assistants.service`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from assistantd.api.auth import require_tenant
from assistantd.api.body import JSONRoute
from assistantd.api.pagination import PageParams, page_params
from assistantd.api.types import Deleted, ListResponse
from assistantd.assistants import service
from assistantd.assistants.schemas import AssistantObject, CreateAssistantRequest, ModifyAssistantRequest

router = APIRouter(prefix="/assistants", tags=["assistants"], route_class=JSONRoute)


@router.post("")
async def create_assistant(body: CreateAssistantRequest, request: Request, tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        row = await service.create(session, tenant, body)
        return AssistantObject.from_row(row).response()


@router.get("")
async def list_assistants(
    request: Request, page: PageParams = Depends(page_params), tenant: str = Depends(require_tenant)
):
    async with request.app.state.db.read() as session:
        rows, has_more = await service.list_page(session, tenant, page)
    return ListResponse.of([AssistantObject.from_row(r) for r in rows], has_more).response()


@router.get("/{assistant_id}")
async def retrieve_assistant(assistant_id: str, request: Request, tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        row = await service.get(session, tenant, assistant_id)
    return AssistantObject.from_row(row).response()


@router.post("/{assistant_id}")
async def modify_assistant(
    assistant_id: str, body: ModifyAssistantRequest, request: Request, tenant: str = Depends(require_tenant)
):
    async with request.app.state.db.write() as session:
        row = await service.modify(session, tenant, assistant_id, body)
        return AssistantObject.from_row(row).response()


@router.delete("/{assistant_id}")
async def delete_assistant(assistant_id: str, request: Request, tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        await service.delete(session, tenant, assistant_id)
    return Deleted(id=assistant_id, object="assistant.deleted").response()
