"""Hybrid search over a vector store's chunks.

Two rankings of the store's chunks, restricted to the files whose ``attributes`` pass the
filters, are fused by reciprocal rank fusion (RRF, k = 60):

- lexical: the database's full-text index — SQLite FTS5 ranked by its ``bm25()``, PostgreSQL's
  ``tsvector`` ranked by ``ts_rank`` — over every query term (OR). Both split words the same way
  (lower-cased, no stemming, no stop words: the ``simple`` configuration and ``unicode61``), so
  a word matches alike on both; inflections and synonyms are the vector ranking's part;
- vector: cosine similarity between the query's embedding and the chunks'. On PostgreSQL with
  pgvector, by an HNSW index there (:mod:`assistantd.vector_stores.pgvector`); otherwise in
  process with numpy over the store's vectors, which are cached per store and reloaded when the
  store's chunks change. A chunk under the embedder's ``min_similarity`` is not a vector match.

The reported ``score`` is the fused RRF score divided by the best one attainable (rank 1 in every
ranking that was made), so it lies in 0..1 and ``score_threshold`` compares against it. With
``ASSISTANTD_EMBEDDINGS=none``, or for chunks embedded by another model, only the lexical
ranking exists. SQLite and PostgreSQL answer with the same contract.
"""

from __future__ import annotations

import collections
import operator
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd.db.models import Chunk, File, VectorStoreFile
from assistantd.vector_stores.embeddings import Embedder, from_bytes
from assistantd.vector_stores.pgvector import PgVector
from assistantd.vector_stores.schemas import ComparisonFilter, CompoundFilter

RRF_K = 60
CANDIDATES = 100  # taken from each ranking before fusion (at least max_num_results)
MAX_QUERY_TERMS = 64
_WORD = re.compile(r"\w+", re.UNICODE)


def terms(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# --- filters -----------------------------------------------------------------------------------

_ORDER = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return True
    return isinstance(a, str) and isinstance(b, str)


def matches(flt: ComparisonFilter | CompoundFilter | None, attributes: dict[str, Any]) -> bool:
    if flt is None:
        return True
    if isinstance(flt, CompoundFilter):
        results = (matches(f, attributes) for f in flt.filters)
        return all(results) if flt.type == "and" else any(results)
    present = flt.key in attributes
    have = attributes.get(flt.key)
    if flt.type in ("in", "nin"):
        options = flt.value if isinstance(flt.value, list) else [flt.value]
        found = present and any(_same_kind(have, o) and have == o for o in options)
        return found if flt.type == "in" else not found
    if flt.type == "eq":
        return present and _same_kind(have, flt.value) and have == flt.value
    if flt.type == "ne":
        return not (present and _same_kind(have, flt.value) and have == flt.value)
    if not present or isinstance(flt.value, list) or not _same_kind(have, flt.value) or isinstance(have, bool):
        return False
    return _ORDER[flt.type](have, flt.value)


# --- the vectors of a store, cached ------------------------------------------------------------

@dataclass
class StoreVectors:
    version: tuple[int, int]  # (number of chunks, highest chunk seq) when loaded
    seqs: np.ndarray  # int64, one per row
    files: np.ndarray  # int32 index into file_ids, one per row
    file_ids: list[str]
    vectors: np.ndarray  # (rows, dimensions) float32, L2-normalised

    @property
    def nbytes(self) -> int:
        return self.vectors.nbytes + self.seqs.nbytes + self.files.nbytes


class VectorCache:
    """Per (store, model): the store's vectors as one matrix, least recently used evicted past
    ``max_bytes``. A chunk's seq only grows, so (count, max seq) changes whenever chunks are
    added or removed: the cached matrix is checked against it on every search."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[tuple[str, str], StoreVectors] = collections.OrderedDict()

    async def get(self, session: AsyncSession, vector_store_id: str, model_id: str) -> StoreVectors | None:
        count, top = (await session.execute(
            select(func.count(Chunk.seq), func.max(Chunk.seq)).where(Chunk.vector_store_id == vector_store_id)
        )).one()
        key, version = (vector_store_id, model_id), (count, top or 0)
        entry = self._entries.get(key)
        if entry is not None and entry.version == version:
            self._entries.move_to_end(key)
            return entry if len(entry.seqs) else None
        rows = (await session.execute(
            select(Chunk.seq, Chunk.file_id, Chunk.embedding).where(
                Chunk.vector_store_id == vector_store_id, Chunk.embedding_model == model_id,
                Chunk.embedding.is_not(None)).order_by(Chunk.seq)
        )).all()
        file_ids = sorted({r.file_id for r in rows})
        position = {f: i for i, f in enumerate(file_ids)}
        entry = StoreVectors(
            version=version,
            seqs=np.array([r.seq for r in rows], dtype=np.int64),
            files=np.array([position[r.file_id] for r in rows], dtype=np.int32),
            file_ids=file_ids,
            vectors=np.vstack([from_bytes(r.embedding) for r in rows]) if rows else np.zeros((0, 0), np.float32),
        )
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while sum(e.nbytes for e in self._entries.values()) > self.max_bytes and len(self._entries) > 1:
            self._entries.popitem(last=False)
        return entry if rows else None


# --- the rankings ------------------------------------------------------------------------------

_SQLITE_LEXICAL = text(
    "SELECT c.seq FROM chunks_fts JOIN chunks AS c ON c.seq = chunks_fts.rowid "
    "WHERE chunks_fts MATCH :match AND c.vector_store_id = :store ORDER BY bm25(chunks_fts) LIMIT :limit")
_SQLITE_LEXICAL_FILES = text(
    "SELECT c.seq FROM chunks_fts JOIN chunks AS c ON c.seq = chunks_fts.rowid "
    "WHERE chunks_fts MATCH :match AND c.vector_store_id = :store AND c.file_id IN :files "
    "ORDER BY bm25(chunks_fts) LIMIT :limit").bindparams(bindparam("files", expanding=True))
_POSTGRES_LEXICAL = text(
    "SELECT seq FROM chunks, to_tsquery('simple', :match) AS q "
    "WHERE vector_store_id = :store AND tsv @@ q ORDER BY ts_rank(tsv, q) DESC, seq LIMIT :limit")
_POSTGRES_LEXICAL_FILES = text(
    "SELECT seq FROM chunks, to_tsquery('simple', :match) AS q "
    "WHERE vector_store_id = :store AND file_id IN :files AND tsv @@ q "
    "ORDER BY ts_rank(tsv, q) DESC, seq LIMIT :limit").bindparams(bindparam("files", expanding=True))


async def _lexical(session: AsyncSession, store: str, queries: list[str], files: list[str] | None,
                   limit: int) -> list[int]:
    words = list(dict.fromkeys(t for q in queries for t in terms(q)))[:MAX_QUERY_TERMS]
    if not words:
        return []
    sqlite = session.bind.dialect.name == "sqlite"
    if sqlite:
        match = " OR ".join(f'"{w}"' for w in words)
        statement = _SQLITE_LEXICAL if files is None else _SQLITE_LEXICAL_FILES
    else:
        match = " | ".join(f"'{w}'" for w in words)
        statement = _POSTGRES_LEXICAL if files is None else _POSTGRES_LEXICAL_FILES
    params: dict[str, Any] = {"match": match, "store": store, "limit": limit}
    if files is not None:
        params["files"] = files
    return list(await session.scalars(statement, params))


def _vector(stored: StoreVectors, query_vectors: np.ndarray, files: list[str] | None, limit: int,
            floor: float) -> dict[int, float]:
    """The ``limit`` most similar chunks at or over ``floor``: seq → similarity, best first."""
    similarity = stored.vectors @ query_vectors.T
    similarity = similarity.max(axis=1) if similarity.ndim == 2 else similarity
    if files is not None:
        wanted = np.array([i for i, f in enumerate(stored.file_ids) if f in set(files)], dtype=np.int32)
        similarity = np.where(np.isin(stored.files, wanted), similarity, -np.inf)
    limit = min(limit, len(similarity))
    top = np.argpartition(-similarity, limit - 1)[:limit] if limit else np.array([], dtype=np.int64)
    top = top[np.argsort(-similarity[top], kind="stable")]
    return {int(stored.seqs[i]): float(similarity[i]) for i in top if similarity[i] >= floor}


def fuse(rankings: list[list[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion, scaled so that rank 1 in every ranking scores 1.0."""
    fused: dict[int, float] = collections.defaultdict(float)
    for ranking in rankings:
        for rank, seq in enumerate(ranking, start=1):
            fused[seq] += 1.0 / (k + rank)
    best = len(rankings) / (k + 1)
    return {seq: score / best for seq, score in fused.items()} if rankings else {}


class Searcher:
    def __init__(self, embedder: Embedder | None, cache: VectorCache | None = None,
                 pgvector: PgVector | None = None) -> None:
        self.embedder = embedder
        self.cache = cache or VectorCache()
        self.pgvector = pgvector  # PostgreSQL with pgvector: vectors are searched there

    async def embed_queries(self, queries: list[str]) -> np.ndarray | None:
        if self.embedder is None:
            return None
        return await self.embedder.embed(queries)

    async def search(self, session: AsyncSession, vector_store_id: str, queries: list[str], *,
                     filters: Any = None, max_num_results: int = 10, score_threshold: float = 0.0,
                     query_vectors: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Ranked results: ``{file_id, filename, score, attributes, text}`` per chunk, best first.
        ``query_vectors`` may be given (the queries' embeddings) to reuse them across stores."""
        completed = {f.id: f for f in await session.scalars(select(VectorStoreFile).where(
            VectorStoreFile.vector_store_id == vector_store_id, VectorStoreFile.status == "completed"))}
        allowed = [fid for fid, f in completed.items() if matches(filters, f.attributes or {})]
        if not allowed:
            return []
        restrict = None if len(allowed) == len(completed) else allowed
        limit = max(CANDIDATES, max_num_results)

        rankings = [await _lexical(session, vector_store_id, queries, restrict, limit)]
        similarity: dict[int, float] = {}
        embedder = self.embedder
        if embedder is not None and self.pgvector is not None:
            if await self.pgvector.has_vectors(session, vector_store_id, embedder.model_id):
                if query_vectors is None:
                    query_vectors = await self.embed_queries(queries)
                similarity = await self.pgvector.nearest(session, vector_store_id, embedder.model_id, query_vectors,
                                                         restrict, limit, embedder.min_similarity)
                rankings.append(list(similarity))
        elif embedder is not None:
            stored = await self.cache.get(session, vector_store_id, embedder.model_id)
            if stored is not None:
                if query_vectors is None:
                    query_vectors = await self.embed_queries(queries)
                similarity = _vector(stored, query_vectors, restrict, limit, embedder.min_similarity)
                rankings.append(list(similarity))
        scores = fuse(rankings)
        # Equal fused scores (say, rank 1 lexically against rank 1 by meaning) go to the closer meaning.
        best = sorted(scores, key=lambda s: (-scores[s], -similarity.get(s, -1.0), s))
        best = [s for s in best if scores[s] >= score_threshold][:max_num_results]
        if not best:
            return []
        rows = {r.seq: r for r in (await session.execute(
            select(Chunk.seq, Chunk.file_id, Chunk.text).where(Chunk.seq.in_(best)))).all()}
        names = dict((await session.execute(
            select(File.id, File.filename).where(File.id.in_({r.file_id for r in rows.values()})))).all())
        out = []
        for seq in best:
            row = rows.get(seq)
            if row is None or row.file_id not in completed:
                continue  # removed since the rankings were made
            out.append({"file_id": row.file_id, "filename": names.get(row.file_id, ""),
                        "score": round(scores[seq], 6), "attributes": completed[row.file_id].attributes or {},
                        "text": row.text})
        return out
