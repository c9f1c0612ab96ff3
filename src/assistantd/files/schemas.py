"""The ``file`` object (``OpenAIFile`` in the spec)."""

from __future__ import annotations

from typing import Literal

from assistantd.api.types import WireModel, absent_if_none

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
    # An integer in the spec, not nullable: absent when the file never expires.
    expires_at: int | None = absent_if_none()
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
