"""The vector store, store file and file batch a request's path names, loaded for its tenant
(see :mod:`assistantd.api.dependencies`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from assistantd.api.dependencies import ReadScope, RequestScope
from assistantd.db.models import VectorStore, VectorStoreFile, VectorStoreFileBatch
from assistantd.vector_stores import service


async def store_of_tenant(vector_store_id: str, scope: RequestScope) -> VectorStore:
    """``{vector_store_id}``: the tenant's store, or the 404 of one that does not exist."""
    return await service.get(scope.session, scope.tenant, vector_store_id)


async def file_of_store(vector_store_id: str, file_id: str, scope: RequestScope) -> VectorStoreFile:
    """``{vector_store_id}/files/{file_id}``: that store's file, of the tenant, or a 404."""
    return await service.get_file(scope.session, scope.tenant, vector_store_id, file_id)


async def batch_of_store(vector_store_id: str, batch_id: str, scope: RequestScope) -> VectorStoreFileBatch:
    """``{vector_store_id}/file_batches/{batch_id}``: that store's batch, of the tenant, or a 404
    (the batch's own, whether or not the store exists)."""
    return await service.get_batch(scope.session, scope.tenant, vector_store_id, batch_id)


async def store_to_search(vector_store_id: str, scope: ReadScope) -> VectorStore:
    """``POST {vector_store_id}/search``: the tenant's store (or a 404), read outside any write
    transaction, and refused once expired."""
    store = await service.get(scope.session, scope.tenant, vector_store_id)
    if service.is_expired(store):
        raise service.expired_error(vector_store_id)
    return store


TenantStore = Annotated[VectorStore, Depends(store_of_tenant)]
TenantStoreFile = Annotated[VectorStoreFile, Depends(file_of_store)]
TenantBatch = Annotated[VectorStoreFileBatch, Depends(batch_of_store)]
SearchableStore = Annotated[VectorStore, Depends(store_to_search)]
