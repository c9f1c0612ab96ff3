"""Background ingestion: the ``vector_store_files`` rows ``in_progress`` are the queue.

A worker claims a row with one conditional UPDATE (unclaimed, or its lease lapsed), so several
server processes can share the work. It reads the file's bytes, extracts the text and chunks it
off the event loop, then writes the chunks and the terminal status in one transaction — only if
the row is still ``in_progress`` and still its own (a cancelled or deleted file writes nothing).
An unsupported or unreadable file fails with ``last_error`` and harms nothing else.

The chunks are embedded (``ASSISTANTD_EMBEDDINGS``) between chunking and the write; a failing
embedder fails the file with its error.

When to look: at once after a transaction that queued files commits (:func:`files_queued`; in
this process, and in the others through the event bus's ``ingest`` signal, so that they share the
work), and every :data:`INTERVAL_SECONDS` for leases that lapsed and signals that were lost
(polling five times a second had been most of an idle server's CPU; on SQLite, where nothing
else queues files or holds leases, every :data:`INTERVAL_SECONDS_SQLITE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import weakref
from typing import Any

from anyio import to_thread
from sqlalchemy import and_, event, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd import ids
from assistantd.db import Database
from assistantd.db.models import Chunk, File, VectorStoreFile
from assistantd.files.storage import FileStore
from assistantd.runs.events import EventBus
from assistantd.runs.failures import RunFailure, short_message
from assistantd.vector_stores import chunking
from assistantd.vector_stores.embeddings import Embedder, to_bytes
from assistantd.vector_stores.pgvector import PgVector
from assistantd.vector_stores.extract import ExtractError, extract

log = logging.getLogger("assistantd")

LEASE_SECONDS = 15.0  # renewed every third of it while a file is being ingested
INTERVAL_SECONDS = 1.0
# On SQLite this process owns every claim (a previous process's are taken back at start) and queues
# every file itself, waking the ingester as it commits: the look is only a safety net there.
INTERVAL_SECONDS_SQLITE = 10.0
INGEST = "ingest"  # the event bus signal: files were queued
_QUEUED = "assistantd.files_queued"  # session.info: a wake-up is due when the session commits
_ingesters: weakref.WeakSet[Ingester] = weakref.WeakSet()  # this process's, to wake


def files_queued(session: AsyncSession) -> None:
    """``session`` queued files: once it commits, this process's ingester looks at once, and
    tells the other processes' to (:meth:`Ingester.queued`)."""
    sync = session.sync_session
    if not sync.info.get(_QUEUED):
        sync.info[_QUEUED] = True
        event.listen(sync, "after_commit", _committed, once=True)


def _committed(session) -> None:
    session.info.pop(_QUEUED, None)
    for ingester in list(_ingesters):
        ingester.queued()


def _process(filename: str, path, strategy: dict[str, Any]) -> tuple[list[tuple[str, int]], None] | tuple[None, dict]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, {"code": "invalid_file", "message": "The file's content is no longer available."}
    try:
        text = extract(filename, data)
    except ExtractError as exc:
        return None, {"code": exc.code, "message": exc.message}
    pieces = chunking.chunk(text, strategy)
    if not pieces:
        return None, {"code": "invalid_file", "message": "No text could be extracted from the file."}
    return pieces, None


class Ingester:
    def __init__(self, db: Database, files: FileStore, embedder: Embedder | None = None,
                 pgvector: PgVector | None = None, bus: EventBus | None = None) -> None:
        self.db, self.files, self.embedder, self.pgvector = db, files, embedder, pgvector
        self._bus = bus
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{ids.new_id('', 8)}"
        self._recovered = False
        # Made in the running event loop (the app's start-up): the loop the wake-ups are sent to.
        self._loop = asyncio.get_running_loop()
        self.woken = asyncio.Event()  # set: look for files now (the lifespan's loop waits on it)
        if bus is not None:
            bus.on_signal(INGEST, lambda _: self.wake())
        _ingesters.add(self)

    @property
    def interval(self) -> float:
        """Seconds between looks for files nobody woke this process for (see the module's docstring)."""
        return INTERVAL_SECONDS_SQLITE if self.db.is_sqlite else INTERVAL_SECONDS

    def wake(self) -> None:
        """Look for files now (from any thread: a large write commits in a worker thread)."""
        self._loop.call_soon_threadsafe(self.woken.set)

    def queued(self) -> None:
        """Files were queued here: look now, and have the other processes look."""
        self.wake()
        if self._bus is not None:
            self._loop.call_soon_threadsafe(self._bus.broadcast, INGEST)

    async def _recover(self) -> None:
        """On SQLite one server owns the database: claims left by a previous process are dead,
        so its files are taken up again at once rather than when their lease lapses."""
        if self.db.is_sqlite:
            async with self.db.write() as session:
                await session.execute(update(VectorStoreFile).where(
                    VectorStoreFile.status == "in_progress", VectorStoreFile.worker.is_not(None))
                    .values(worker=None, lease_until=None))
        self._recovered = True

    async def _claim(self) -> VectorStoreFile | None:
        now = time.time()
        claimable = and_(VectorStoreFile.status == "in_progress",
                         or_(VectorStoreFile.worker.is_(None), VectorStoreFile.lease_until < now))
        async with self.db.read() as session:
            candidates = list(await session.scalars(
                select(VectorStoreFile.seq).where(claimable).order_by(VectorStoreFile.seq).limit(8)))
        for seq in candidates:
            async with self.db.write() as session:
                result = await session.execute(
                    update(VectorStoreFile).where(VectorStoreFile.seq == seq, claimable)
                    .values(worker=self.worker, lease_until=now + LEASE_SECONDS))
                if result.rowcount == 1:
                    return await session.scalar(select(VectorStoreFile).where(VectorStoreFile.seq == seq))
        return None

    async def drain(self) -> None:
        """Ingest claimable files until none is left."""
        if not self._recovered:
            await self._recover()
        while (row := await self._claim()) is not None:
            renewing = asyncio.create_task(self._renew(row.seq))
            try:
                await self._ingest(row)
            except Exception as exc:
                log.exception("ingesting %s into %s failed", row.id, row.vector_store_id)
                await self._finish(row, None, {"code": "server_error",
                                               "message": f"Ingestion failed ({type(exc).__name__}); see the server log."})
            finally:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await renewing

    async def _renew(self, seq: int) -> None:
        """Hold the claim while working; a lapsed lease lets another worker take the file."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            async with self.db.write() as session:
                await session.execute(update(VectorStoreFile).where(
                    VectorStoreFile.seq == seq, VectorStoreFile.worker == self.worker,
                    VectorStoreFile.status == "in_progress").values(lease_until=time.time() + LEASE_SECONDS))

    async def _ingest(self, row: VectorStoreFile) -> None:
        async with self.db.read() as session:
            filename = await session.scalar(select(File.filename).where(File.id == row.id, File.tenant == row.tenant))
        if filename is None:
            await self._finish(row, None, {"code": "invalid_file", "message": f"The file '{row.id}' no longer exists."})
            return
        pieces, error = await to_thread.run_sync(_process, filename, self.files.path(row.id), row.chunking_strategy)
        vectors = None
        if pieces is not None and self.embedder is not None:
            try:
                vectors = await self.embedder.embed([text for text, _ in pieces])
            except Exception as exc:
                log.warning("embedding %s failed: %s", row.id, exc)
                # The exception's text can quote the request (the file's own text): the log has it.
                pieces, error = None, {"code": "server_error", "message": short_message(
                    f"Embedding the file failed: {exc.message}" if isinstance(exc, RunFailure)
                    else f"Embedding the file failed ({type(exc).__name__}); see the server log.")}
        await self._finish(row, pieces, error, vectors)

    async def _finish(self, row: VectorStoreFile, pieces: list[tuple[str, int]] | None,
                      error: dict | None, vectors: Any = None) -> None:
        mine = and_(VectorStoreFile.seq == row.seq, VectorStoreFile.status == "in_progress",
                    VectorStoreFile.worker == self.worker)
        async with self.db.write() as session:
            if error is not None:
                await session.execute(update(VectorStoreFile).where(mine).values(
                    status="failed", last_error=error, worker=None, lease_until=None))
                return
            usage = sum(len(text.encode()) for text, _ in pieces or [])
            result = await session.execute(update(VectorStoreFile).where(mine).values(
                status="completed", usage_bytes=usage, worker=None, lease_until=None))
            if result.rowcount != 1:
                return  # cancelled, deleted or re-added meanwhile: keep nothing
            if pieces:
                rows = [{"id": ids.new_id("chunk_"), "tenant": row.tenant, "vector_store_id": row.vector_store_id,
                         "file_id": row.id, "index": i, "text": text, "tokens": n,
                         "embedding": to_bytes(vectors[i]) if vectors is not None else None,
                         "embedding_model": self.embedder.model_id if vectors is not None else None}
                        for i, (text, n) in enumerate(pieces)]
                if vectors is not None and self.pgvector is not None:
                    seqs = (await session.scalars(
                        insert(Chunk).returning(Chunk.seq, sort_by_parameter_order=True), rows)).all()
                    await self.pgvector.write(session, self.embedder.model_id, list(seqs), list(vectors))
                else:
                    await session.execute(insert(Chunk), rows)
        # After the commit: one line per file ingested (of several processes, only one writes it).
        log.info("file %s ingested into %s: %d chunks", row.id, row.vector_store_id, len(pieces or []))
