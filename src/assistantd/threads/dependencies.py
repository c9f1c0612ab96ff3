"""The thread, and the message of that thread, a request's path names, loaded for its tenant or
the 404 of the first that does not exist (see :mod:`assistantd.api.dependencies`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from assistantd.api.dependencies import loaded
from assistantd.db.models import Message, Thread
from assistantd.threads import service


async def thread_of_tenant(thread_id: str, request: Request) -> Thread:
    return await loaded(request, service.get, thread_id)


async def message_of_thread(thread_id: str, message_id: str, request: Request) -> Message:
    return await loaded(request, service.get_message, thread_id, message_id)


TenantThread = Annotated[Thread, Depends(thread_of_tenant)]
TenantMessage = Annotated[Message, Depends(message_of_thread)]
