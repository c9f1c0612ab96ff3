"""Storing and loading threads and their messages."""

from __future__ import annotations

import asyncio

from sqlalchemy import delete as sql_delete
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd import ids, tool_resources
from assistantd.api.dependencies import OneOfTenant, one_or_404
from assistantd.api.errors import not_found
from assistantd.api.pagination import PageParams, paginate
from assistantd.db.models import Message, Run, RunStep, Thread, VectorStore, VectorStoreFile
from assistantd.runs.states import MessageStatus
from assistantd.threads.schemas import (
    CreateMessageRequest,
    CreateThreadRequest,
    ImageFilePart,
    ModifyMessageRequest,
    ModifyThreadRequest,
    content_parts,
)


get = OneOfTenant(Thread, "thread")


async def create(session: AsyncSession, tenant: str, body: CreateThreadRequest) -> Thread:
    thread = Thread(
        id=ids.new_id("thread_"),
        tenant=tenant,
        created_at=ids.now(),
        tool_resources=await tool_resources.normalize(session, tenant, body.tool_resources),
        metadata_=body.metadata or {},
    )
    session.add(thread)
    await session.flush()
    for i, message in enumerate(body.messages):
        await add_message(session, tenant, thread, message, param=f"messages[{i}]")
    return thread


async def modify(session: AsyncSession, thread: Thread, body: ModifyThreadRequest) -> Thread:
    """``thread``: the tenant's thread, as its loader found it (so for the other functions taking one)."""
    if "tool_resources" in body.model_fields_set:
        thread.tool_resources = await tool_resources.normalize(session, thread.tenant, body.tool_resources)
    if "metadata" in body.model_fields_set:
        thread.metadata_ = body.metadata or {}
    await session.flush()
    return thread


async def delete(session: AsyncSession, thread: Thread) -> None:
    for table in (RunStep, Run, Message):
        await session.execute(sql_delete(table).where(table.thread_id == thread.id, table.tenant == thread.tenant))
    await session.delete(thread)


# --- messages ----------------------------------------------------------------------------------

async def add_message(
    session: AsyncSession,
    tenant: str,
    thread: Thread,
    body: CreateMessageRequest,
    *,
    param: str | None = None,
    run_id: str | None = None,
    assistant_id: str | None = None,
) -> Message:
    prefix = f"{param}." if param else ""
    referenced: dict[str, str] = {}
    if not isinstance(body.content, str):
        for i, part in enumerate(body.content):
            if isinstance(part, ImageFilePart):
                referenced[f"{prefix}content[{i}].image_file.file_id"] = part.image_file.file_id
    attachments = body.attachments or []
    for i, attachment in enumerate(attachments):
        referenced[f"{prefix}attachments[{i}].file_id"] = attachment.file_id
    await tool_resources.require_files(session, tenant, referenced)
    message = Message(
        id=ids.new_id("msg_"),
        tenant=tenant,
        created_at=ids.now(),
        thread_id=thread.id,
        status=MessageStatus.COMPLETED.value,
        incomplete_details=None,
        completed_at=None,
        incomplete_at=None,
        role=body.role,
        content=content_parts(body.content),
        assistant_id=assistant_id,
        run_id=run_id,
        attachments=[a.model_dump() for a in attachments],
        metadata_=body.metadata or {},
    )
    session.add(message)
    await session.flush()
    # A turn of the event loop between messages: on SQLite the flush runs on the loop, and a
    # request's 32 messages of 260 kB each would otherwise hold it for all of them at once.
    await asyncio.sleep(0)
    searchable = [a.file_id for a in attachments if any(t.type == "file_search" for t in a.tools)]
    if searchable:
        await _add_to_thread_store(session, tenant, thread, searchable)
    return message


THREAD_STORE_EXPIRY = {"anchor": "last_active_at", "days": 7}  # as OpenAI sets on the stores it makes


async def _add_to_thread_store(session: AsyncSession, tenant: str, thread: Thread, file_ids: list[str]) -> None:
    """Files attached for file_search go into the thread's vector store, made when it has none
    (the store then appears in the thread's ``tool_resources``)."""
    from assistantd.vector_stores import chunking
    from assistantd.vector_stores import service as vector_stores

    resources = dict(thread.tool_resources or {})
    store_ids = list((resources.get("file_search") or {}).get("vector_store_ids", []))
    store = None
    if store_ids:
        store = await session.scalar(select(VectorStore).where(
            VectorStore.id == store_ids[0], VectorStore.tenant == tenant))
    if store is None:
        store = await vector_stores.create(session, tenant, expires_after=THREAD_STORE_EXPIRY)
        resources["file_search"] = {"vector_store_ids": [store.id]}
        thread.tool_resources = resources
    present = set(await session.scalars(select(VectorStoreFile.id).where(
        VectorStoreFile.vector_store_id == store.id, VectorStoreFile.id.in_(file_ids))))
    for file_id in dict.fromkeys(file_ids):
        if file_id not in present:
            await vector_stores.add_file(session, store, file_id, chunking.normalize(None), {}, None)
    vector_stores.touch(store)
    await session.flush()


# Statements on every request's path are built once, with bound parameters (see OneOfTenant).
_MESSAGE = select(Message).where(Message.id == bindparam("message_id"), Message.thread_id == bindparam("thread_id"),
                                 Message.tenant == bindparam("tenant"))


async def get_message(session: AsyncSession, tenant: str, thread_id: str, message_id: str) -> Message:
    """The message of that thread of that tenant, or the 404 of the thread or of the message."""
    return await one_or_404(session, _MESSAGE, {"message_id": message_id, "thread_id": thread_id, "tenant": tenant},
                            lambda: not_found("message", message_id), lambda: get(session, tenant, thread_id))


def modify_message(message: Message, body: ModifyMessageRequest) -> Message:
    """Only a message's metadata changes; the request's transaction writes it."""
    if "metadata" in body.model_fields_set:
        message.metadata_ = body.metadata or {}
    return message


async def list_messages(session: AsyncSession, thread: Thread, page: PageParams, run_id: str | None):
    query = select(Message).where(Message.thread_id == thread.id, Message.tenant == thread.tenant)
    if run_id:
        query = query.where(Message.run_id == run_id)
    return await paginate(session, query, Message, page)
