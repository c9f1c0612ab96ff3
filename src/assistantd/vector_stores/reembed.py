"""Chunks whose vectors an earlier form of the local model made are embedded again.

The local model's vectors changed once (``embeddings.LEGACY_LOCAL_MODEL_IDS``: float32 products
of the same weights, before :func:`~assistantd.vector_stores.embeddings.derive_model`). Vectors of
two models are never compared, so until a chunk is embedded again its store finds it by its words
only. When a process that embeds locally starts, it re-embeds those chunks in the background, a
batch at a time, oldest first, until none is left (about 60 chunks a second on two cores: 100k
chunks take about half an hour, while the server answers as usual). Each batch is written in one
transaction, only over rows still of the old model, and the stores it touched drop their cached
vectors (``changed``, which tells the other processes too).

Several processes on one PostgreSQL share the work: each locks its batch's rows (``SKIP LOCKED``)
for the time it embeds them (about a second), so no two embed the same chunk. On SQLite one
process owns the database: its batch is read, embedded, then written (a write transaction held
while the model runs would hold every other writer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from sqlalchemy import bindparam, select, update

from assistantd.db import Database
from assistantd.db.models import Chunk
from assistantd.vector_stores.embeddings import LEGACY_LOCAL_MODEL_IDS, Embedder, to_bytes
from assistantd.vector_stores.pgvector import PgVector

log = logging.getLogger("assistantd")

BATCH = 64
VECTORS_CHANGED = "vectors"  # the event bus signal: a store's vectors changed (argument: its id)

_CHUNKS = Chunk.__table__.c  # Core statements: an executemany, no ORM bulk machinery
_OLD = _CHUNKS.embedding_model.in_(LEGACY_LOCAL_MODEL_IDS)
_PENDING = select(_CHUNKS.seq, _CHUNKS.vector_store_id, _CHUNKS.text, _CHUNKS.embedding_model).where(
    _OLD).order_by(_CHUNKS.seq).limit(BATCH)
# Only a row still of the model it was read with (an executemany takes no expanding IN).
_WRITE = update(Chunk.__table__).where(_CHUNKS.seq == bindparam("s"), _CHUNKS.embedding_model == bindparam("old")).values(
    embedding=bindparam("e"), embedding_model=bindparam("m"))


async def reembed_batch(db: Database, embedder: Embedder, pgvector: PgVector | None,
                        changed: Callable[[Iterable[str]], None]) -> int:
    """Embed one batch again; how many chunks it held (0: none is left)."""
    if db.is_sqlite:
        async with db.read() as session:
            rows = (await session.execute(_PENDING)).all()
        if not rows:
            return 0
        vectors = await embedder.embed([r.text for r in rows])
        async with db.write() as session:
            await _write(session, rows, vectors, embedder, pgvector)
    else:
        async with db.write() as session:
            rows = (await session.execute(_PENDING.with_for_update(skip_locked=True))).all()
            if not rows:
                return 0
            vectors = await embedder.embed([r.text for r in rows])
            await _write(session, rows, vectors, embedder, pgvector)
    changed({r.vector_store_id for r in rows})  # after the commit
    return len(rows)


async def _write(session, rows, vectors, embedder: Embedder, pgvector: PgVector | None) -> None:
    await session.execute(_WRITE, [
        {"s": r.seq, "old": r.embedding_model, "e": to_bytes(v), "m": embedder.model_id}
        for r, v in zip(rows, vectors)])
    if pgvector is not None:
        await pgvector.write(session, embedder.model_id, [r.seq for r in rows], list(vectors))


async def reembed_all(db: Database, embedder: Embedder, pgvector: PgVector | None,
                      changed: Callable[[Iterable[str]], None]) -> int:
    """Embed again every chunk of an earlier local model; how many this process did. A failure
    is logged and ends the work (the next start goes on with it)."""
    done = 0
    try:
        while count := await reembed_batch(db, embedder, pgvector, changed):
            if not done:
                log.info("embedding again the chunks of an earlier local model (%s)",
                         ", ".join(LEGACY_LOCAL_MODEL_IDS))
            done += count
    except Exception:
        log.exception("embedding again the chunks of an earlier local model failed after %d", done)
        return done
    if done:
        log.info("embedded %d chunks again with %s", done, embedder.model_id)
    return done
