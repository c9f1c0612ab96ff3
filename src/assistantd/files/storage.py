"""File bytes on disk, under ``<data dir>/files/<file id>``; the database row is written after
the bytes land and the bytes are removed after the row is gone, so neither outlives the other for
longer than a failed request."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

from anyio import to_thread

CHUNK = 1024 * 1024


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        return self.root / file_id

    async def save(self, file_id: str, source: BinaryIO, limit: int) -> int | None:
        """Copy ``source`` in; return its size, or ``None`` (and keep nothing) if over ``limit``."""
        return await to_thread.run_sync(self._save, file_id, source, limit)

    def _save(self, file_id: str, source: BinaryIO, limit: int) -> int | None:
        target = self.path(file_id)
        partial = target.with_suffix(".part")
        size = 0
        with open(partial, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    break
                out.write(chunk)
        if size > limit:
            partial.unlink(missing_ok=True)
            return None
        os.replace(partial, target)
        return size

    async def write_bytes(self, file_id: str, data: bytes) -> int:
        await to_thread.run_sync(self.path(file_id).write_bytes, data)
        return len(data)

    async def remove(self, file_id: str) -> None:
        await to_thread.run_sync(lambda: self.path(file_id).unlink(missing_ok=True))

    def wipe(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
