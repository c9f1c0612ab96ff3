"""The ``file`` object (``OpenAIFile`` in the spec)."""

from __future__ import annotations

from typing import Literal

from assistantd.api.types import WireModel
from assistantd.db.models import File

# What POST /files accepts (CreateFileRequest.purpose); the server itself also writes
# ``assistants_output`` files (code interpreter outputs).
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MIN_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 2_592_000


class FileObject(WireModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"

    # ``expires_at`` is an integer in the spec, not nullable: absent when the file never expires.
    omit_if_none = ("expires_at",)

    @classmethod
    def from_row(cls, row: File) -> "FileObject":
        return cls(
            id=row.id,
            bytes=row.bytes,
            created_at=row.created_at,
            expires_at=row.expires_at,
            filename=row.filename,
            purpose=row.purpose,
            status=row.status,  # type: ignore[arg-type]
        )
