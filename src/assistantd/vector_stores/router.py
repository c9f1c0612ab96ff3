"""``/v1/vector_stores``: stores, their files, file batches, file content and search."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from assistantd import ids
from assistantd.api.body import JSONRoute
from assistantd.api.dependencies import ReadScope, RequestScope
from assistantd.api.errors import invalid
from assistantd.api.pagination import Page, listed
from assistantd.api.types import ListResponse
from assistantd.db.models import File
from assistantd.vector_stores import chunking, service
from assistantd.vector_stores.dependencies import SearchableStore, TenantBatch, TenantStore, TenantStoreFile
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

# --- stores ------------------------------------------------------------------------------------

@router.post("")
async def create_vector_store(body: CreateVectorStoreRequest, scope: RequestScope):
    row = await service.create_from_request(scope.session, scope.tenant, body)
    return (await service.store_object(scope.session, row)).response()


@router.get("")
async def list_vector_stores(page: Page, scope: RequestScope):
    rows, has_more = await service.list_page(scope.session, scope.tenant, page)
    return ListResponse.of(await service.store_objects(scope.session, rows), has_more).response()


@router.get("/{vector_store_id}")
async def retrieve_vector_store(store: TenantStore, scope: RequestScope, request: Request):
    return (await service.store_object(scope.session, store)).polled_response(request)


@router.post("/{vector_store_id}")
async def update_vector_store(body: UpdateVectorStoreRequest, store: TenantStore, scope: RequestScope):
    row = await service.update_store(scope.session, store, body)
    return (await service.store_object(scope.session, row)).response()


@router.delete("/{vector_store_id}")
async def delete_vector_store(store: TenantStore, scope: RequestScope):
    return (await service.delete_store(scope.session, store)).response()


# --- files -------------------------------------------------------------------------------------

@router.post("/{vector_store_id}/files")
async def create_vector_store_file(body: CreateVectorStoreFileRequest, store: TenantStore, scope: RequestScope):
    strategy = chunking.normalize(body.chunking_strategy)
    await service.require_files(scope.session, scope.tenant, {"file_id": body.file_id})
    row = await service.add_file(scope.session, store, body.file_id, strategy, body.attributes or {}, None)
    service.touch(store)
    return VectorStoreFileObject.from_row(row).response()


@router.get("/{vector_store_id}/files")
async def list_vector_store_files(page: Page, store: TenantStore, scope: RequestScope,
                                  filter: str | None = Query(None)):
    return listed(await service.list_files(scope.session, store, page, filter), VectorStoreFileObject.from_row)


@router.get("/{vector_store_id}/files/{file_id}")
async def retrieve_vector_store_file(file: TenantStoreFile, request: Request):
    return VectorStoreFileObject.from_row(file).polled_response(request)


@router.post("/{vector_store_id}/files/{file_id}")
async def update_vector_store_file(body: UpdateVectorStoreFileAttributesRequest, file: TenantStoreFile,
                                   scope: RequestScope):
    file.attributes = body.attributes or {}
    await scope.session.flush()
    return VectorStoreFileObject.from_row(file).response()


@router.delete("/{vector_store_id}/files/{file_id}")
async def delete_vector_store_file(file: TenantStoreFile, scope: RequestScope):
    return (await service.delete_file(scope.session, file)).response()


@router.get("/{vector_store_id}/files/{file_id}/content")
async def vector_store_file_content(file: TenantStoreFile, scope: RequestScope, request: Request):
    """The file's parsed text (extracted again from its bytes: extraction is deterministic)."""
    filename = await scope.session.scalar(select(File.filename).where(File.id == file.id, File.tenant == scope.tenant))
    data: list[TextContent] = []
    if file.status == "completed" and filename is not None:
        path = request.app.state.files.path(file.id)
        try:
            text = await to_thread.run_sync(lambda: extract(filename, path.read_bytes()))
            data.append(TextContent(text=text))
        except (ExtractError, FileNotFoundError):
            pass
    return FileContentPage(data=data).response()


# --- file batches ------------------------------------------------------------------------------

@router.post("/{vector_store_id}/file_batches")
async def create_file_batch(body: CreateVectorStoreFileBatchRequest, store: TenantStore, scope: RequestScope):
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
    await service.require_files(scope.session, scope.tenant, params)
    batch = await service.create_batch(scope.session, scope.tenant, store, items)
    return (await service.batch_object(scope.session, batch)).response()


@router.get("/{vector_store_id}/file_batches/{batch_id}")
async def retrieve_file_batch(batch: TenantBatch, scope: RequestScope, request: Request):
    return (await service.batch_object(scope.session, batch)).polled_response(request)


@router.post("/{vector_store_id}/file_batches/{batch_id}/cancel")
async def cancel_file_batch(batch: TenantBatch, scope: RequestScope):
    await service.cancel_batch(scope.session, batch)
    return (await service.batch_object(scope.session, batch)).response()


@router.get("/{vector_store_id}/file_batches/{batch_id}/files")
async def list_file_batch_files(page: Page, batch: TenantBatch, scope: RequestScope,
                                filter: str | None = Query(None)):
    return listed(await service.list_files(scope.session, batch, page, filter), VectorStoreFileObject.from_row)


# --- search ------------------------------------------------------------------------------------

ACTIVITY_RESOLUTION_SECONDS = 60

@router.post("/{vector_store_id}/search")
async def search_vector_store(body: VectorStoreSearchRequest, store: SearchableStore, scope: ReadScope,
                              request: Request):
    queries = [body.query] if isinstance(body.query, str) else list(body.query)
    threshold = body.ranking_options.score_threshold if body.ranking_options else 0.0
    results = await request.app.state.searcher.search(
        scope.session, store.id, queries, filters=body.filters,
        max_num_results=body.max_num_results, score_threshold=threshold)
    # last_active_at moves by the minute: a burst of searches does not make a write each.
    if ids.now() - (store.last_active_at or 0) >= ACTIVITY_RESOLUTION_SECONDS:
        scope.after(lambda: _touch(request.app.state.db, scope.tenant, store.id))
    items = [SearchResultItem(file_id=r["file_id"], filename=r["filename"], score=r["score"],
                              attributes=r["attributes"], content=[TextContent(text=r["text"])])
             for r in results]
    return SearchResultsPage(search_query=queries, data=items).response()


async def _touch(db, tenant: str, vector_store_id: str) -> None:
    """A search's write, in a transaction of its own once the search's read is over."""
    async with db.write() as session:
        service.touch(await service.get(session, tenant, vector_store_id))
