"""Uploading, finding, expiring and deleting files."""

from __future__ import annotations

import mimetypes

from sqlalchemy import delete as sql_delete
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd import ids
from assistantd.api.dependencies import one_or_404
from assistantd.api.errors import APIError
from assistantd.api.pagination import PageParams, paginate
from assistantd.db.models import File


def content_type_for(filename: str, declared: str | None) -> str:
    guessed, _ = mimetypes.guess_type(filename)
    if guessed:
        return guessed
    if declared and declared != "application/octet-stream":
        return declared
    return "application/octet-stream"


def live(query, now: int | None = None):
    """Only files not past their ``expires_at`` (the sweeper deletes those soon after)."""
    now = ids.now() if now is None else now
    return query.where(or_(File.expires_at.is_(None), File.expires_at > now))


def file_not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", param="id")


async def get(session: AsyncSession, tenant: str, file_id: str) -> File:
    return await one_or_404(session, live(select(File).where(File.id == file_id, File.tenant == tenant)), {},
                            lambda: file_not_found(file_id))


def new_row(tenant: str, filename: str, purpose: str, size: int, content_type: str,
            expires_after: int | None) -> File:
    created = ids.now()
    return File(
        id=ids.new_id("file-", 22),
        tenant=tenant,
        created_at=created,
        bytes=size,
        filename=filename,
        purpose=purpose,
        status="processed",
        expires_at=created + expires_after if expires_after else None,
        content_type=content_type,
    )


async def list_page(session: AsyncSession, tenant: str, page: PageParams, purpose: str | None):
    query = live(select(File).where(File.tenant == tenant), ids.now())
    if purpose:
        query = query.where(File.purpose == purpose)
    return await paginate(session, query, File, page)


async def take_expired(session: AsyncSession, now: int) -> list[str]:
    """Delete the rows of files past their expiry; return their ids (the caller drops the bytes)."""
    result = await session.execute(
        sql_delete(File).where(File.expires_at.is_not(None), File.expires_at <= now).returning(File.id)
    )
    return list(result.scalars())
