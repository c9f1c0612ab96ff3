"""``/v1/vector_stores``: stores, their files, file batches, file content and search."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from assistantd import ids
from assistantd.api.auth import require_tenant
from assistantd.api.body import JSONRoute
from assistantd.api.errors import invalid
from assistantd.api.pagination import PageParams, page_params
from assistantd.api.types import Deleted, ListResponse
from assistantd.db.models import File
from assistantd.vector_stores import chunking, service
from assistantd.vector_stores.extract import ExtractError, extract
from assistantd.vector_stores.schemas import (
    CreateVectorStoreFileBatchRequest,
    CreateVectorStoreFileRequest,
    CreateVectorStoreRequest,
    FileContentPage,
    SearchResultItem,
    SearchResultsPage,
    TextContent,
    UpdateVectorStoreFileAttributesRequest,
    UpdateVectorStoreRequest,
    VectorStoreFileObject,
    VectorStoreSearchRequest,
)

router = APIRouter(prefix="/vector_stores", tags=["vector_stores"], route_class=JSONRoute)

# The SDK's pollers wait this long between polls (``openai-poll-after-ms``) instead of 1 s.
POLL_AFTER_MS = "200"


def _polled(response):
    response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return response


# --- stores ------------------------------------------------------------------------------------

@router.post("")
async def create_vector_store(body: CreateVectorStoreRequest, request: Request, tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        row = await service.create_from_request(session, tenant, body)
        return (await service.store_object(session, row)).response()


@router.get("")
async def list_vector_stores(request: Request, page: PageParams = Depends(page_params),
                             tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        rows, has_more = await service.list_page(session, tenant, page)
        objects = await service.store_objects(session, rows)
    return ListResponse.of(objects, has_more).response()


@router.get("/{vector_store_id}")
async def retrieve_vector_store(vector_store_id: str, request: Request, tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        row = await service.get(session, tenant, vector_store_id)
        return _polled((await service.store_object(session, row)).response())


@router.post("/{vector_store_id}")
async def update_vector_store(vector_store_id: str, body: UpdateVectorStoreRequest, request: Request,
                              tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        row = await service.update_store(session, tenant, vector_store_id, body)
        return (await service.store_object(session, row)).response()


@router.delete("/{vector_store_id}")
async def delete_vector_store(vector_store_id: str, request: Request, tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        await service.delete_store(session, tenant, vector_store_id)
    return Deleted(id=vector_store_id, object="vector_store.deleted").response()


# --- files -------------------------------------------------------------------------------------

@router.post("/{vector_store_id}/files")
async def create_vector_store_file(vector_store_id: str, body: CreateVectorStoreFileRequest, request: Request,
                                   tenant: str = Depends(require_tenant)):
    strategy = chunking.normalize(body.chunking_strategy)
    async with request.app.state.db.write() as session:
        store = await service.get(session, tenant, vector_store_id)
        await service.require_files(session, tenant, {"file_id": body.file_id})
        row = await service.add_file(session, store, body.file_id, strategy, body.attributes or {}, None)
        service.touch(store)
        return VectorStoreFileObject.from_row(row).response()


@router.get("/{vector_store_id}/files")
async def list_vector_store_files(vector_store_id: str, request: Request, page: PageParams = Depends(page_params),
                                  filter: str | None = Query(None), tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        await service.get(session, tenant, vector_store_id)
        rows, has_more = await service.list_files(session, tenant, vector_store_id, page, filter)
    return ListResponse.of([VectorStoreFileObject.from_row(r) for r in rows], has_more).response()


@router.get("/{vector_store_id}/files/{file_id}")
async def retrieve_vector_store_file(vector_store_id: str, file_id: str, request: Request,
                                     tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        await service.get(session, tenant, vector_store_id)
        row = await service.get_file(session, tenant, vector_store_id, file_id)
    return _polled(VectorStoreFileObject.from_row(row).response())


@router.post("/{vector_store_id}/files/{file_id}")
async def update_vector_store_file(vector_store_id: str, file_id: str, body: UpdateVectorStoreFileAttributesRequest,
                                   request: Request, tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        await service.get(session, tenant, vector_store_id)
        row = await service.get_file(session, tenant, vector_store_id, file_id)
        row.attributes = body.attributes or {}
        await session.flush()
        return VectorStoreFileObject.from_row(row).response()


@router.delete("/{vector_store_id}/files/{file_id}")
async def delete_vector_store_file(vector_store_id: str, file_id: str, request: Request,
                                   tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        await service.get(session, tenant, vector_store_id)
        await service.delete_file(session, tenant, vector_store_id, file_id)
    return Deleted(id=file_id, object="vector_store.file.deleted").response()


@router.get("/{vector_store_id}/files/{file_id}/content")
async def vector_store_file_content(vector_store_id: str, file_id: str, request: Request,
                                    tenant: str = Depends(require_tenant)):
    """The file's parsed text (extracted again from its bytes: extraction is deterministic)."""
    async with request.app.state.db.read() as session:
        await service.get(session, tenant, vector_store_id)
        row = await service.get_file(session, tenant, vector_store_id, file_id)
        filename = await session.scalar(select(File.filename).where(File.id == file_id, File.tenant == tenant))
    data: list[TextContent] = []
    if row.status == "completed" and filename is not None:
        path = request.app.state.files.path(file_id)
        try:
            text = await to_thread.run_sync(lambda: extract(filename, path.read_bytes()))
            data.append(TextContent(text=text))
        except (ExtractError, FileNotFoundError):
            pass
    return FileContentPage(data=data).response()


# --- file batches ------------------------------------------------------------------------------

@router.post("/{vector_store_id}/file_batches")
async def create_file_batch(vector_store_id: str, body: CreateVectorStoreFileBatchRequest, request: Request,
                            tenant: str = Depends(require_tenant)):
    if (body.file_ids is None) == (body.files is None):
        raise invalid("Exactly one of 'file_ids' or 'files' must be provided.",
                      param="files" if body.files is not None else "file_ids")
    if body.file_ids is not None:
        strategy = chunking.normalize(body.chunking_strategy)
        items = [(f, strategy, body.attributes or {}) for f in body.file_ids]
        params = {f"file_ids[{i}]": f for i, f in enumerate(body.file_ids)}
    else:
        items = [(f.file_id, chunking.normalize(f.chunking_strategy, f"files[{i}].chunking_strategy"),
                  f.attributes or {}) for i, f in enumerate(body.files or [])]
        params = {f"files[{i}].file_id": f.file_id for i, f in enumerate(body.files or [])}
    async with request.app.state.db.write() as session:
        store = await service.get(session, tenant, vector_store_id)
        await service.require_files(session, tenant, params)
        batch = await service.create_batch(session, tenant, store, items)
        return (await service.batch_object(session, batch)).response()


@router.get("/{vector_store_id}/file_batches/{batch_id}")
async def retrieve_file_batch(vector_store_id: str, batch_id: str, request: Request,
                              tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        batch = await service.get_batch(session, tenant, vector_store_id, batch_id)
        return _polled((await service.batch_object(session, batch)).response())


@router.post("/{vector_store_id}/file_batches/{batch_id}/cancel")
async def cancel_file_batch(vector_store_id: str, batch_id: str, request: Request,
                            tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        batch = await service.get_batch(session, tenant, vector_store_id, batch_id)
        await service.cancel_batch(session, batch)
        return (await service.batch_object(session, batch)).response()


@router.get("/{vector_store_id}/file_batches/{batch_id}/files")
async def list_file_batch_files(vector_store_id: str, batch_id: str, request: Request,
                                page: PageParams = Depends(page_params), filter: str | None = Query(None),
                                tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        await service.get_batch(session, tenant, vector_store_id, batch_id)
        rows, has_more = await service.list_files(session, tenant, vector_store_id, page, filter, batch_id)
    return ListResponse.of([VectorStoreFileObject.from_row(r) for r in rows], has_more).response()


# --- search ------------------------------------------------------------------------------------

ACTIVITY_RESOLUTION_SECONDS = 60

@router.post("/{vector_store_id}/search")
async def search_vector_store(vector_store_id: str, body: VectorStoreSearchRequest, request: Request,
                              tenant: str = Depends(require_tenant)):
    queries = [body.query] if isinstance(body.query, str) else list(body.query)
    threshold = body.ranking_options.score_threshold if body.ranking_options else 0.0
    async with request.app.state.db.read() as session:
        store = await service.get(session, tenant, vector_store_id)
        if service.is_expired(store):
            raise service.expired_error(vector_store_id)
        results = await request.app.state.searcher.search(
            session, vector_store_id, queries, filters=body.filters,
            max_num_results=body.max_num_results, score_threshold=threshold)
    # last_active_at moves by the minute: a burst of searches does not make a write each.
    if ids.now() - (store.last_active_at or 0) >= ACTIVITY_RESOLUTION_SECONDS:
        async with request.app.state.db.write() as session:
            service.touch(await service.get(session, tenant, vector_store_id))
    items = [SearchResultItem(file_id=r["file_id"], filename=r["filename"], score=r["score"],
                              attributes=r["attributes"], content=[TextContent(text=r["text"])])
             for r in results]
    return SearchResultsPage(search_query=queries, data=items).response()
