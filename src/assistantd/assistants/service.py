"""Storing and loading assistants."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd import ids, tool_resources
from assistantd.api.dependencies import OneOfTenant
from assistantd.api.pagination import PageParams, paginate
from assistantd.api.types import dump_response_format, dump_tools
from assistantd.assistants.schemas import CreateAssistantRequest, ModifyAssistantRequest
from assistantd.db.models import Assistant


async def create(session: AsyncSession, tenant: str, body: CreateAssistantRequest) -> Assistant:
    row = Assistant(
        id=ids.new_id("asst_"),
        tenant=tenant,
        created_at=ids.now(),
        model=body.model,
        name=body.name,
        description=body.description,
        instructions=body.instructions,
        reasoning_effort=body.reasoning_effort,
        tools=dump_tools(body.tools),
        tool_resources=await tool_resources.normalize(session, tenant, body.tool_resources),
        metadata_=body.metadata or {},
        temperature=body.temperature,
        top_p=body.top_p,
        response_format=dump_response_format(body.response_format),
    )
    session.add(row)
    await session.flush()
    return row


async def modify(session: AsyncSession, row: Assistant, body: ModifyAssistantRequest) -> Assistant:
    """``row``: the tenant's assistant, as its loader found it."""
    given = body.model_fields_set
    for field in ("name", "description", "instructions", "reasoning_effort", "temperature", "top_p"):
        if field in given:
            setattr(row, field, getattr(body, field))
    if "model" in given and body.model is not None:
        row.model = body.model
    if "tools" in given:
        row.tools = dump_tools(body.tools)
    if "tool_resources" in given:
        row.tool_resources = await tool_resources.normalize(session, row.tenant, body.tool_resources)
    if "metadata" in given:
        row.metadata_ = body.metadata or {}
    if "response_format" in given:
        row.response_format = dump_response_format(body.response_format)
    await session.flush()
    return row


get = OneOfTenant(Assistant, "assistant")


async def list_page(session: AsyncSession, tenant: str, page: PageParams):
    return await paginate(session, select(Assistant).where(Assistant.tenant == tenant), Assistant, page)
