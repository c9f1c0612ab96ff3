"""The assistant a request's path names, loaded for its tenant or the 404 of one that does not
exist (see :mod:`assistantd.api.dependencies`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from assistantd.api.dependencies import loaded
from assistantd.assistants import service
from assistantd.db.models import Assistant


async def assistant_of_tenant(assistant_id: str, request: Request) -> Assistant:
    return await loaded(request, service.get, assistant_id)


TenantAssistant = Annotated[Assistant, Depends(assistant_of_tenant)]
