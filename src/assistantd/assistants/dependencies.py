"""The assistant a request's path names, loaded for its tenant (see :mod:`assistantd.api.dependencies`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from assistantd.api.dependencies import RequestScope
from assistantd.assistants import service
from assistantd.db.models import Assistant


async def assistant_of_tenant(assistant_id: str, scope: RequestScope) -> Assistant:
    """``{assistant_id}``: the tenant's assistant, or the 404 of one that does not exist."""
    return await service.get(scope.session, scope.tenant, assistant_id)


TenantAssistant = Annotated[Assistant, Depends(assistant_of_tenant)]
