"""The file a request's path names, loaded for its tenant (see :mod:`assistantd.api.dependencies`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from assistantd.api.dependencies import RequestScope
from assistantd.db.models import File
from assistantd.files import service


async def file_of_tenant(file_id: str, scope: RequestScope) -> File:
    """``{file_id}``: the tenant's file, not past its expiry, or a 404."""
    return await service.get(scope.session, scope.tenant, file_id)


TenantFile = Annotated[File, Depends(file_of_tenant)]
