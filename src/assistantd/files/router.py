"""``/v1/files``: multipart upload, list, retrieve, delete and raw content."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile

from assistantd import ids
from assistantd.api.auth import require_tenant
from assistantd.api.body import JSONRoute
from assistantd.api.errors import APIError, invalid
from assistantd.api.dependencies import RequestScope
from assistantd.api.pagination import FilePage, listed
from assistantd.api.types import Deleted
from assistantd.db import locks
from assistantd.files import service
from assistantd.files.dependencies import TenantFile
from assistantd.vector_stores import service as vector_stores_service
from assistantd.files.schemas import (
    MAX_EXPIRY_SECONDS,
    MIN_EXPIRY_SECONDS,
    UPLOAD_PURPOSES,
    FileObject,
)

log = logging.getLogger("assistantd")

router = APIRouter(prefix="/files", tags=["files"], route_class=JSONRoute)

# Room for the multipart framing and the small form fields around the file itself.
_FORM_OVERHEAD = 64 * 1024


def _too_large(limit: int) -> APIError:
    # ``connection: close``: the server stops reading the body here instead of draining it.
    return APIError(413, f"File exceeds the maximum upload size of {limit} bytes.",
                    param="file", code="file_too_large", headers={"connection": "close"})


class _BodyTooLarge(Exception):
    pass


def _bounded(request: Request, limit: int) -> Request:
    """``request`` whose body stops being read once more than ``limit`` bytes came (a chunked
    upload declares no length): the multipart parser then fails with :class:`_BodyTooLarge`."""
    receive, size = request.receive, 0

    async def counted():
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise _BodyTooLarge
        return message

    return Request(request.scope, counted)


def _expires_after(form) -> int | None:
    anchor = form.get("expires_after[anchor]")
    seconds = form.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise invalid("Invalid value for 'expires_after.anchor': expected 'created_at'.",
                      param="expires_after.anchor")
    try:
        value = int(str(seconds))
    except ValueError:
        raise invalid("Invalid value for 'expires_after.seconds': expected an integer.",
                      param="expires_after.seconds") from None
    if not MIN_EXPIRY_SECONDS <= value <= MAX_EXPIRY_SECONDS:
        raise invalid(
            f"Invalid 'expires_after.seconds': expected a value between {MIN_EXPIRY_SECONDS} and "
            f"{MAX_EXPIRY_SECONDS}, but got {value} instead.", param="expires_after.seconds")
    return value


@router.post("")
async def upload_file(request: Request, tenant: str = Depends(require_tenant)):
    state = request.app.state
    limit = state.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + _FORM_OVERHEAD:
        raise _too_large(limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid("This endpoint expects a multipart/form-data body with 'file' and 'purpose'.")
    try:
        form = await _bounded(request, limit + _FORM_OVERHEAD).form(max_files=1, max_fields=16)
    except _BodyTooLarge:
        raise _too_large(limit) from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise invalid("Missing required parameter: 'file'.", param="file")
        purpose = form.get("purpose")
        if not purpose:
            raise invalid("Missing required parameter: 'purpose'.", param="purpose")
        if purpose not in UPLOAD_PURPOSES:
            raise invalid(f"'{purpose}' is not one of {list(UPLOAD_PURPOSES)} - 'purpose'",
                          param="purpose")
        expires_after = _expires_after(form)
        filename = upload.filename or "upload"
        content_type = service.content_type_for(filename, upload.content_type)
        row = service.new_row(tenant, filename, str(purpose), 0, content_type, expires_after)
        size = await state.files.save(row.id, upload.file, limit)
    finally:
        await form.close()
    if size is None:
        raise _too_large(limit)
    row.bytes = size
    try:
        async with state.db.write() as session:
            session.add(row)
    except BaseException:
        await state.files.remove(row.id)
        raise
    return FileObject.from_row(row).response()


@router.get("")
async def list_files(page: FilePage, scope: RequestScope, purpose: str | None = Query(None)):
    return listed(await service.list_page(scope.session, scope.tenant, page, purpose), FileObject.from_row)


@router.get("/{file_id}")
async def retrieve_file(file: TenantFile):
    return FileObject.from_row(file).response()


@router.delete("/{file_id}")
async def delete_file(file: TenantFile, scope: RequestScope, request: Request):
    file_id, stored = file.id, request.app.state.files
    await scope.session.delete(file)
    await vector_stores_service.forget_files(scope.session, [file_id])
    scope.after(lambda: stored.remove(file_id))  # the bytes go once the row is gone for good
    return Deleted(id=file_id, object="file").response()


@router.get("/{file_id}/content")
async def file_content(file: TenantFile, request: Request):
    path = request.app.state.files.path(file.id)
    if not path.is_file():
        # The expiry sweep (or a delete) removed the bytes after the row was read.
        raise service.file_not_found(file.id)
    return FileResponse(path, media_type=file.content_type,
                        filename=file.filename, content_disposition_type="attachment")


async def sweep_expired(state) -> int:
    """Delete files past ``expires_at``; bytes go after the rows (see :mod:`files.storage`).

    Every server process sweeps; one at a time (an advisory lock on PostgreSQL: a process that
    finds another sweeping leaves it that round), and a row is deleted by one statement, so each
    expired file is removed by exactly one process, which then deletes its bytes."""
    async with state.db.write() as session:
        if not await locks.try_take(session, "assistantd.files.sweep"):
            return 0
        expired = await service.take_expired(session, ids.now())
        await vector_stores_service.forget_files(session, expired)
    for file_id in expired:
        await state.files.remove(file_id)
        log.info("expired file %s deleted", file_id)
    return len(expired)
