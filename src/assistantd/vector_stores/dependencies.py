"""The vector store, store file and file batch a request's path names, loaded for its tenant or
the 404 of the first that does not exist (see :mod:`assistantd.api.dependencies`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from assistantd.api.dependencies import loaded, read_scope
from assistantd.db.models import VectorStore, VectorStoreFile, VectorStoreFileBatch
from assistantd.vector_stores import service


async def store_of_tenant(vector_store_id: str, request: Request) -> VectorStore:
    return await loaded(request, service.get, vector_store_id)


async def file_of_store(vector_store_id: str, file_id: str, request: Request) -> VectorStoreFile:
    return await loaded(request, service.get_file, vector_store_id, file_id)


async def batch_of_store(vector_store_id: str, batch_id: str, request: Request) -> VectorStoreFileBatch:
    """The batch's own 404 whether or not the store exists (as it always answered)."""
    return await loaded(request, service.get_batch, vector_store_id, batch_id)


async def store_to_search(vector_store_id: str, request: Request) -> VectorStore:
    """A search is a ``POST`` that changes nothing: its store is read outside any write
    transaction (on SQLite, the write lock), and refused once expired."""
    scope = await read_scope(request)
    store = await service.get(scope.session, scope.tenant, vector_store_id)
    if service.is_expired(store):
        raise service.expired_error(vector_store_id)
    return store


TenantStore = Annotated[VectorStore, Depends(store_of_tenant)]
TenantStoreFile = Annotated[VectorStoreFile, Depends(file_of_store)]
TenantBatch = Annotated[VectorStoreFileBatch, Depends(batch_of_store)]
SearchableStore = Annotated[VectorStore, Depends(store_to_search)]
