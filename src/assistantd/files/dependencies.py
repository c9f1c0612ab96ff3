"""The file a request's path names, loaded for its tenant (not past its expiry) or a 404 (see
:mod:`assistantd.api.dependencies`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from assistantd.api.dependencies import loaded
from assistantd.db.models import File
from assistantd.files import service


async def file_of_tenant(file_id: str, request: Request) -> File:
    return await loaded(request, service.get, file_id)


TenantFile = Annotated[File, Depends(file_of_tenant)]
