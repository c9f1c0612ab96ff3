"""The thread and the message a request's path names, loaded for its tenant (see
:mod:`assistantd.api.dependencies`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from assistantd.api.dependencies import RequestScope
from assistantd.db.models import Message, Thread
from assistantd.threads import service


async def thread_of_tenant(thread_id: str, scope: RequestScope) -> Thread:
    """``{thread_id}``: the tenant's thread, or the 404 of one that does not exist."""
    return await service.get(scope.session, scope.tenant, thread_id)


async def message_of_thread(thread_id: str, message_id: str, scope: RequestScope) -> Message:
    """``{thread_id}/messages/{message_id}``: that thread's message, of the tenant, or a 404."""
    return await service.get_message(scope.session, scope.tenant, thread_id, message_id)


TenantThread = Annotated[Thread, Depends(thread_of_tenant)]
TenantMessage = Annotated[Message, Depends(message_of_thread)]
