"""``tool_resources`` on assistants and threads: checked against what the tenant owns, then
stored in one normal form (only the tools given, each with its id list)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from sqlalchemy.ext.asyncio import AsyncSession

from assistantd.api.errors import invalid
from assistantd.api.types import ToolResources
from assistantd.db.models import File
from assistantd.files import service as files_service


async def require_files(session: AsyncSession, tenant: str, file_ids: dict[str, str]) -> None:
    """400 unless every id names a live file of this tenant. ``file_ids`` maps param → id."""
    if not file_ids:
        return
    rows = await session.execute(
        files_service.live(
            select(File.id).where(File.tenant == tenant, File.id.in_(set(file_ids.values())))
        )
    )
    known = set(rows.scalars())
    for param, file_id in file_ids.items():
        if file_id not in known:
            raise invalid(f"No file found with id '{file_id}'.", param=param)


async def normalize(
    session: AsyncSession, tenant: str, resources: ToolResources | None, param: str = "tool_resources"
) -> dict[str, Any]:
    if resources is None:
        return {}
    out: dict[str, Any] = {}
    if resources.code_interpreter is not None:
        file_ids = resources.code_interpreter.file_ids
        await require_files(session, tenant, {
            f"{param}.code_interpreter.file_ids[{i}]": file_id for i, file_id in enumerate(file_ids)
        })
        out["code_interpreter"] = {"file_ids": list(file_ids)}
    if resources.file_search is not None:
        from assistantd.vector_stores import service as vector_stores

        fs = resources.file_search
        where = f"{param}.file_search"
        if fs.vector_store_ids and fs.vector_stores:
            raise invalid("Only one of 'vector_store_ids' or 'vector_stores' may be provided.",
                          param=f"{where}.vector_stores")
        store_ids = list(fs.vector_store_ids or [])
        known = await vector_stores.existing_ids(session, tenant, store_ids)
        for i, store_id in enumerate(store_ids):
            if store_id not in known:
                raise invalid(f"No vector store found with id '{store_id}'.",
                              param=f"{where}.vector_store_ids[{i}]")
        for i, helper in enumerate(fs.vector_stores or []):
            # The helper makes a vector store on the fly, its files queued for ingestion.
            store = await vector_stores.create(
                session, tenant, metadata=helper.metadata, file_ids=helper.file_ids,
                chunking_strategy=helper.chunking_strategy, param=f"{where}.vector_stores[{i}]")
            store_ids.append(store.id)
        out["file_search"] = {"vector_store_ids": store_ids}
    return out
