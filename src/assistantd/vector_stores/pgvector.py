"""Vector search inside PostgreSQL with pgvector, when the server has the extension.

At start-up :func:`prepare` creates the extension (if it is available and we may) and the
column ``chunks.embedding_vec vector`` beside the portable ``embedding`` bytes, and fills it for
chunks embedded before. This lives here, not in a migration, because whether pgvector exists is
a property of the server, not of the schema: without it PostgreSQL searches the way SQLite does
(vectors cached in process, :mod:`assistantd.vector_stores.search`), with the same results
contract. The column has no fixed dimension (``upstream:<model>`` decides it), so the HNSW index
is an expression index per embedding model, ``(embedding_vec::vector(d))`` restricted to that
model's rows, as pgvector's documentation shows for mixed dimensions.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
from sqlalchemy import bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd.db import Database, locks
from assistantd.vector_stores.embeddings import from_bytes

log = logging.getLogger("assistantd")

BACKFILL_BATCH = 1000


def _literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PgVector:
    def __init__(self, version: str) -> None:
        self.version = version
        major, minor = (int(p) for p in version.split(".")[:2])
        self.iterative_scan = (major, minor) >= (0, 8)  # hnsw.iterative_scan: filtered queries keep recall
        self._indexed: set[tuple[str, int]] = set()

    @staticmethod
    def _index_name(model_id: str, dims: int) -> str:
        return f"ix_chunks_hnsw_{hashlib.sha1(model_id.encode()).hexdigest()[:10]}_{dims}"

    async def ensure_index(self, session: AsyncSession, model_id: str, dims: int) -> None:
        if (model_id, dims) in self._indexed:
            return
        try:
            async with session.begin_nested():  # another process may be creating it this instant
                await session.execute(text(
                    f"CREATE INDEX IF NOT EXISTS {self._index_name(model_id, dims)} ON chunks USING hnsw "
                    f"((embedding_vec::vector({dims})) vector_cosine_ops) "
                    f"WHERE embedding_model = {_quoted(model_id)}"))
        except DBAPIError as exc:
            log.warning("creating the HNSW index for %s failed (%s); searches scan instead", model_id, exc.orig)
        self._indexed.add((model_id, dims))

    async def has_vectors(self, session: AsyncSession, store: str, model_id: str) -> bool:
        return await session.scalar(text(
            "SELECT EXISTS (SELECT 1 FROM chunks WHERE vector_store_id = :store AND embedding_model = :model "
            "AND embedding_vec IS NOT NULL)"), {"store": store, "model": model_id})

    async def write(self, session: AsyncSession, model_id: str, seqs: list[int], vectors: list[np.ndarray]) -> None:
        """Fill ``embedding_vec`` for freshly inserted chunks (in the inserting transaction)."""
        if not seqs:
            return
        await self.ensure_index(session, model_id, len(vectors[0]))
        await session.execute(
            text("UPDATE chunks SET embedding_vec = CAST(:v AS vector) WHERE seq = :seq"),
            [{"v": _literal(v), "seq": s} for s, v in zip(seqs, vectors)])

    async def nearest(self, session: AsyncSession, store: str, model_id: str, query_vectors: np.ndarray,
                      files: list[str] | None, limit: int, floor: float) -> dict[int, float]:
        """The ``limit`` chunks nearest to any query vector, at or over ``floor``: seq → similarity."""
        dims = int(query_vectors.shape[1])
        column = f"(embedding_vec::vector({dims}))"
        # The model id is written into the SQL so that the planner can match the partial index.
        statement = text(
            f"SELECT seq, 1 - ({column} <=> CAST(:q AS vector({dims}))) AS similarity FROM chunks "
            f"WHERE vector_store_id = :store AND embedding_model = {_quoted(model_id)} "
            + ("AND file_id IN :files " if files is not None else "")
            + f"ORDER BY {column} <=> CAST(:q AS vector({dims})) LIMIT :limit")
        if files is not None:
            statement = statement.bindparams(bindparam("files", expanding=True))
        await session.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, min(limit, 1000))}"))
        if self.iterative_scan:
            await session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        found: dict[int, float] = {}
        for q in query_vectors:
            params = {"q": _literal(q), "store": store, "limit": limit}
            if files is not None:
                params["files"] = files
            for seq, similarity in (await session.execute(statement, params)).all():
                if similarity >= floor and similarity > found.get(seq, -2.0):
                    found[seq] = float(similarity)
        return dict(sorted(found.items(), key=lambda kv: -kv[1])[:limit])

    async def similarities(self, session: AsyncSession, model_id: str, query_vectors: np.ndarray,
                           seqs: list[int]) -> dict[int, float]:
        """The exact similarity of the chunks ``seqs`` (the best of the queries), those that have a
        vector of ``model_id``."""
        dims = int(query_vectors.shape[1])
        statement = text(
            f"SELECT seq, 1 - ((embedding_vec::vector({dims})) <=> CAST(:q AS vector({dims}))) FROM chunks "
            f"WHERE seq IN :seqs AND embedding_model = :model AND embedding_vec IS NOT NULL"
        ).bindparams(bindparam("seqs", expanding=True))
        found: dict[int, float] = {}
        for q in query_vectors:
            for seq, similarity in (await session.execute(statement, {"q": _literal(q), "seqs": seqs,
                                                                      "model": model_id})).all():
                found[seq] = max(float(similarity), found.get(seq, -2.0))
        return found


async def prepare(db: Database) -> PgVector | None:
    """pgvector for this database, or ``None`` (SQLite, or a PostgreSQL without it)."""
    if db.is_sqlite:
        return None
    async with db.write() as session:
        # Replicas start together: two concurrent CREATE EXTENSION IF NOT EXISTS can fail the
        # second (a unique violation), which would leave that process without pgvector.
        await locks.take(session, "assistantd.pgvector.prepare")
        available = await session.scalar(text(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"))
        if available is None:
            log.info("pgvector is not installed on this PostgreSQL: vectors are scored in process")
            return None
        try:
            async with session.begin_nested():
                await session.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        except DBAPIError as exc:
            log.warning("pgvector is available but could not be enabled (%s): vectors are scored "
                        "in process", exc.orig)
            return None
        version = await session.scalar(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
        await session.execute(text("ALTER TABLE chunks ADD COLUMN IF NOT EXISTS embedding_vec vector"))
    found = PgVector(version)
    await _backfill(db, found)
    log.info("pgvector %s: vector search runs in PostgreSQL", version)
    return found


async def _backfill(db: Database, pg: PgVector) -> None:
    """Chunks embedded while pgvector was absent get their ``embedding_vec``."""
    while True:
        async with db.write() as session:
            rows = (await session.execute(text(
                "SELECT seq, embedding_model, embedding FROM chunks WHERE embedding IS NOT NULL "
                "AND embedding_model IS NOT NULL AND embedding_vec IS NULL ORDER BY seq LIMIT :n"),
                {"n": BACKFILL_BATCH})).all()
            by_model: dict[str, list] = {}
            for row in rows:
                by_model.setdefault(row.embedding_model, []).append(row)
            for model_id, group in by_model.items():
                await pg.write(session, model_id, [r.seq for r in group], [from_bytes(r.embedding) for r in group])
        if len(rows) < BACKFILL_BATCH:
            return
