"""Storing and loading vector stores, their files and file batches.

A store's ``file_counts``/``usage_bytes``/``status`` are derived from its ``vector_store_files``
rows (one GROUP BY), so they move as the ingestion worker finishes files, with nothing to keep
in step.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd import ids
from assistantd.api.dependencies import OneOfTenant, one_or_404
from assistantd.api.errors import APIError, invalid
from assistantd.api.pagination import PageParams, paginate
from assistantd.api.types import Deleted
from assistantd.db.models import Chunk, File, VectorStore, VectorStoreFile, VectorStoreFileBatch
from assistantd.files import service as files_service
from assistantd.vector_stores import chunking, ingest
from assistantd.vector_stores.schemas import (
    DAY,
    CreateVectorStoreRequest,
    UpdateVectorStoreRequest,
    VectorStoreFileBatchObject,
    VectorStoreObject,
)

FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")


get = OneOfTenant(VectorStore, "vector store")


async def existing_ids(session: AsyncSession, tenant: str, vector_store_ids: Iterable[str]) -> set[str]:
    wanted = set(vector_store_ids)
    if not wanted:
        return set()
    rows = await session.scalars(
        select(VectorStore.id).where(VectorStore.tenant == tenant, VectorStore.id.in_(wanted)))
    return set(rows)


async def require_files(session: AsyncSession, tenant: str, file_ids: dict[str, str]) -> None:
    """400 unless every id names a live file of this tenant. ``file_ids`` maps param → id."""
    if not file_ids:
        return
    rows = await session.execute(files_service.live(
        select(File.id).where(File.tenant == tenant, File.id.in_(set(file_ids.values())))))
    known = set(rows.scalars())
    for param, file_id in file_ids.items():
        if file_id not in known:
            raise invalid(f"No file found with id '{file_id}'.", param=param)


def _expiry(expires_after: dict[str, Any] | None, last_active_at: int) -> int | None:
    return last_active_at + expires_after["days"] * DAY if expires_after else None


def is_expired(row: VectorStore, now: int | None = None) -> bool:
    return row.expires_at is not None and row.expires_at <= (ids.now() if now is None else now)


def expired_error(vector_store_id: str) -> APIError:
    return invalid(f"Vector store '{vector_store_id}' has expired: create a new vector store and "
                   "add the files to it again.", code="vector_store_expired")


def touch(row: VectorStore, now: int | None = None) -> None:
    """The store was used: move ``last_active_at`` and the expiry anchored to it (an expired
    store stays expired)."""
    now = ids.now() if now is None else now
    if is_expired(row, now):
        return
    row.last_active_at = now
    row.expires_at = _expiry(row.expires_after, now)


async def create(session: AsyncSession, tenant: str, *, name: str | None = None,
                 description: str | None = None, expires_after: dict[str, Any] | None = None,
                 metadata: dict[str, str] | None = None, file_ids: list[str] | None = None,
                 chunking_strategy: Any = None, param: str = "") -> VectorStore:
    """Make a store (and queue its files). ``param`` prefixes error params (tool_resources helper)."""
    prefix = f"{param}." if param else ""
    strategy = chunking.normalize(chunking_strategy, f"{prefix}chunking_strategy")
    file_ids = list(dict.fromkeys(file_ids or []))
    await require_files(session, tenant, {f"{prefix}file_ids[{i}]": f for i, f in enumerate(file_ids)})
    now = ids.now()
    row = VectorStore(id=ids.new_id("vs_"), tenant=tenant, created_at=now, name=name,
                      description=description, metadata_=metadata or {}, expires_after=expires_after)
    touch(row, now)
    session.add(row)
    await session.flush()
    for file_id in file_ids:
        await add_file(session, row, file_id, strategy, {}, None, now)
    return row


async def create_from_request(session: AsyncSession, tenant: str, body: CreateVectorStoreRequest) -> VectorStore:
    return await create(
        session, tenant, name=body.name, description=body.description,
        expires_after=body.expires_after.model_dump() if body.expires_after else None,
        metadata=body.metadata, file_ids=body.file_ids, chunking_strategy=body.chunking_strategy)


async def update_store(session: AsyncSession, row: VectorStore, body: UpdateVectorStoreRequest) -> VectorStore:
    """``row``: the tenant's store, as its loader found it (so for the other functions taking one)."""
    given = body.model_fields_set
    if "name" in given:
        row.name = body.name
    if "metadata" in given:
        row.metadata_ = body.metadata or {}
    if "expires_after" in given:
        row.expires_after = body.expires_after.model_dump() if body.expires_after else None
        row.expires_at = _expiry(row.expires_after, row.last_active_at or ids.now())
    await session.flush()
    return row


async def delete_store(session: AsyncSession, row: VectorStore) -> Deleted:
    for table in (Chunk, VectorStoreFile, VectorStoreFileBatch):
        await session.execute(sql_delete(table).where(table.vector_store_id == row.id))
    await session.delete(row)
    return Deleted(id=row.id, object="vector_store.deleted")


async def list_page(session: AsyncSession, tenant: str, page: PageParams):
    return await paginate(session, select(VectorStore).where(VectorStore.tenant == tenant), VectorStore, page)


async def counts(session: AsyncSession, column, keys: list[str]) -> dict[str, tuple[dict[str, int], int]]:
    """Per store (or batch) id in ``keys``: files by status, and their usage bytes."""
    out: dict[str, tuple[dict[str, int], int]] = {k: ({}, 0) for k in keys}
    if not keys:
        return out
    rows = await session.execute(
        select(column, VectorStoreFile.status, func.count(), func.coalesce(func.sum(VectorStoreFile.usage_bytes), 0))
        .where(column.in_(keys)).group_by(column, VectorStoreFile.status))
    by: dict[str, dict[str, int]] = defaultdict(dict)
    usage: dict[str, int] = defaultdict(int)
    for key, status, n, used in rows:
        by[key][status] = int(n)
        usage[key] += int(used)
    for key in keys:
        out[key] = (by.get(key, {}), usage.get(key, 0))
    return out


async def store_objects(session: AsyncSession, rows: list[VectorStore]) -> list[VectorStoreObject]:
    stats = await counts(session, VectorStoreFile.vector_store_id, [r.id for r in rows])
    now = ids.now()
    return [VectorStoreObject.from_row(r, stats[r.id][0], stats[r.id][1], now) for r in rows]


async def store_object(session: AsyncSession, row: VectorStore) -> VectorStoreObject:
    return (await store_objects(session, [row]))[0]


async def batch_object(session: AsyncSession, row: VectorStoreFileBatch) -> VectorStoreFileBatchObject:
    stats = await counts(session, VectorStoreFile.batch_id, [row.id])
    return VectorStoreFileBatchObject.from_row(row, stats[row.id][0])


# --- files -------------------------------------------------------------------------------------

async def add_file(session: AsyncSession, store: VectorStore, file_id: str, strategy: dict[str, Any],
                   attributes: dict[str, Any], batch_id: str | None, now: int | None = None) -> VectorStoreFile:
    """Queue ``file_id`` for ingestion into ``store``; adding it again starts it over."""
    now = ids.now() if now is None else now
    await session.execute(sql_delete(Chunk).where(Chunk.vector_store_id == store.id, Chunk.file_id == file_id))
    await session.execute(sql_delete(VectorStoreFile).where(
        VectorStoreFile.vector_store_id == store.id, VectorStoreFile.id == file_id))
    row = VectorStoreFile(id=file_id, tenant=store.tenant, created_at=now, vector_store_id=store.id,
                          batch_id=batch_id, status="in_progress", last_error=None, usage_bytes=0,
                          chunking_strategy=strategy, attributes=attributes or {})
    session.add(row)
    await session.flush()
    ingest.files_queued(session)
    return row


async def get_file(session: AsyncSession, tenant: str, vector_store_id: str, file_id: str) -> VectorStoreFile:
    """The file of that store of that tenant, or the 404 of the store or of the file."""
    return await one_or_404(session, select(VectorStoreFile).where(
        VectorStoreFile.vector_store_id == vector_store_id, VectorStoreFile.id == file_id,
        VectorStoreFile.tenant == tenant), {},
        lambda: APIError(404, f"No file found with id '{file_id}' in vector store '{vector_store_id}'."),
        lambda: get(session, tenant, vector_store_id))


async def delete_file(session: AsyncSession, row: VectorStoreFile) -> Deleted:
    await session.execute(sql_delete(Chunk).where(Chunk.vector_store_id == row.vector_store_id,
                                                  Chunk.file_id == row.id))
    await session.delete(row)
    return Deleted(id=row.id, object="vector_store.file.deleted")


async def ingesting(session: AsyncSession, vector_store_ids: list[str]) -> bool:
    """Whether any file of these stores is still being ingested (``in_progress``)."""
    return await session.scalar(select(VectorStoreFile.seq).where(
        VectorStoreFile.vector_store_id.in_(vector_store_ids), VectorStoreFile.status == "in_progress").limit(1)) \
        is not None


def _status_filter(query, status: str | None):
    if status is None:
        return query
    if status not in FILE_STATUSES:
        raise invalid(f"Invalid value for 'filter': expected one of {', '.join(FILE_STATUSES)}, "
                      f"but got '{status}'.", param="filter", code="invalid_value")
    return query.where(VectorStoreFile.status == status)


async def list_files(session: AsyncSession, of: VectorStore | VectorStoreFileBatch, page: PageParams,
                     status: str | None):
    """The files of a store, or of a batch (either as its loader found it)."""
    if isinstance(of, VectorStoreFileBatch):
        query = select(VectorStoreFile).where(VectorStoreFile.batch_id == of.id)
        store_id = of.vector_store_id
    else:
        query, store_id = select(VectorStoreFile), of.id
    query = query.where(VectorStoreFile.vector_store_id == store_id, VectorStoreFile.tenant == of.tenant)
    return await paginate(session, _status_filter(query, status), VectorStoreFile, page)


# --- batches -----------------------------------------------------------------------------------

async def get_batch(session: AsyncSession, tenant: str, vector_store_id: str, batch_id: str) -> VectorStoreFileBatch:
    return await one_or_404(session, select(VectorStoreFileBatch).where(
        VectorStoreFileBatch.id == batch_id, VectorStoreFileBatch.vector_store_id == vector_store_id,
        VectorStoreFileBatch.tenant == tenant), {},
        lambda: APIError(404, f"No file batch found with id '{batch_id}' in vector store '{vector_store_id}'."))


async def create_batch(session: AsyncSession, tenant: str, store: VectorStore,
                       items: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> VectorStoreFileBatch:
    """``items``: (file id, normalised chunking strategy, attributes), already validated."""
    now = ids.now()
    batch = VectorStoreFileBatch(id=ids.new_id("vsfb_"), tenant=tenant, created_at=now,
                                 vector_store_id=store.id, cancelled=False)
    session.add(batch)
    await session.flush()
    seen: set[str] = set()
    for file_id, strategy, attributes in items:
        if file_id in seen:
            continue
        seen.add(file_id)
        await add_file(session, store, file_id, strategy, attributes, batch.id, now)
    touch(store, now)
    return batch


async def cancel_batch(session: AsyncSession, batch: VectorStoreFileBatch) -> None:
    batch.cancelled = True
    await session.execute(
        update(VectorStoreFile)
        .where(VectorStoreFile.batch_id == batch.id, VectorStoreFile.status == "in_progress")
        .values(status="cancelled", worker=None, lease_until=None))
    await session.flush()


async def forget_files(session: AsyncSession, file_ids: list[str]) -> None:
    """Deleted (or expired) files leave every vector store, their chunks with them."""
    if not file_ids:
        return
    await session.execute(sql_delete(Chunk).where(Chunk.file_id.in_(file_ids)))
    await session.execute(sql_delete(VectorStoreFile).where(VectorStoreFile.id.in_(file_ids)))
