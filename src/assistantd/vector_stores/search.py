"""Hybrid search over a vector store's chunks.

Two rankings of the store's chunks, restricted to the files whose ``attributes`` pass the
filters, are blended by their scores:

- lexical: the database's full-text index — SQLite FTS5 ranked by its ``bm25()``, PostgreSQL's
  ``tsvector`` ranked by ``ts_rank`` with BM25's word weights — over the query's words (OR) less
  English function words (unless the query has nothing else). Both split words the same way
  (lower-cased, no stemming: the ``simple`` configuration and ``unicode61``), so
  a word matches alike on both; inflections and synonyms are the vector ranking's part. The
  rarest words are kept within :data:`POSTINGS_BUDGET` (a query of common words only matches
  its two rarest together); on PostgreSQL each word's ``ts_rank`` is weighted by its inverse
  document frequency, which ``ts_rank`` alone lacks;
- vector: cosine similarity between the query's embedding and the chunks'. On PostgreSQL with
  pgvector, by an HNSW index there (:mod:`assistantd.vector_stores.pgvector`); otherwise in
  process with numpy over the store's vectors, cached per store (:class:`VectorCache`), through
  an IVF index for large stores (:mod:`assistantd.vector_stores.ivf`). A chunk under the
  embedder's ``min_similarity`` is not a vector match.

A chunk's ``score`` is ``(cosine + LEXICAL_WEIGHT × lexical) / (1 + LEXICAL_WEIGHT)``: its cosine
similarity to the query (a lexical match that is not among the vector candidates gets its exact
cosine too), plus its lexical score as a fraction of the query's best one. Blending the scores,
not the ranks, keeps how *much* closer one chunk is than the next; reciprocal rank fusion did not,
and ranked below plain vector search on bench/retrieval.py's questions (the weight was chosen on
its first question set and checked on the held-out second). It lies in 0..1, which
``score_threshold`` compares against. With one ranking alone (``ASSISTANTD_EMBEDDINGS=none``, chunks
embedded by another model, or ``ASSISTANTD_SEARCH_RANKINGS``) the score is that ranking's: the
cosine, or the lexical fraction. SQLite and PostgreSQL answer with the same contract.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from anyio import to_thread
from sqlalchemy import TextClause, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd.db.models import Chunk, File, VectorStoreFile
from assistantd.vector_stores import ivf
from assistantd.vector_stores.embeddings import Embedder, from_bytes
from assistantd.vector_stores.pgvector import PgVector
from assistantd.vector_stores.schemas import ComparisonFilter, CompoundFilter

# Function words: in nearly every chunk, so they add next to nothing to a BM25 score, yet scoring
# them means ranking most of the index (at 100k chunks, 300 ms instead of 10 ms). Left out of the
# lexical query unless the query has nothing else.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she should
so some such than that the their theirs them themselves then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you
your yours yourself yourselves
""".split())
log = logging.getLogger("assistantd.search")

LEXICAL_WEIGHT = 0.15  # of the lexical fraction, beside the cosine (bench/retrieval.py)
CANDIDATES = 100  # taken from each ranking before they are blended (at least max_num_results)
# SQLite: the rarest query words are matched until their documents add up to this many (or, when
# even the rarest is over it, the two rarest together; see _within_budget). Ranking every chunk
# that holds a common word costs ~5 µs a chunk (half a second at 100k), and such a word weighs
# little in BM25; the vector ranking still sees the whole query.
POSTINGS_BUDGET = 5000
IDF_SAMPLE = 2000  # PostgreSQL: the chunks of a store whose words are counted for its IDF
MAX_QUERY_TERMS = 64
_WORD = re.compile(r"[^\W_]+", re.UNICODE)  # letters and digits, as FTS5's unicode61 and tsvector split


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
    files_seen: dict[str, int]  # completed file id → its vector_store_files seq, when loaded
    seqs: np.ndarray  # chunk seq, one per row
    files: np.ndarray  # int32 index into file_ids, one per row
    file_ids: list[str]
    vectors: np.ndarray  # (rows, dimensions) float32, L2-normalised
    index: ivf.IVFIndex | None = None  # over the first index.rows rows; later ones are scanned
    _by_seq: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def rows_of(self, seqs: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The rows holding the chunks ``seqs`` and those chunks' seqs (the ones that have a row)."""
        if self._by_seq is None:  # (made once per cached matrix; a race makes it twice, alike)
            order = np.argsort(self.seqs, kind="stable")
            self._by_seq = (order, self.seqs[order])
        order, ordered = self._by_seq
        wanted = np.asarray(seqs, dtype=np.int64)
        at = np.minimum(np.searchsorted(ordered, wanted), max(len(ordered) - 1, 0))
        hit = ordered[at] == wanted if len(ordered) else np.zeros(len(wanted), dtype=bool)
        return order[at[hit]], wanted[hit]

    @property
    def nbytes(self) -> int:
        return self.vectors.nbytes + self.seqs.nbytes + self.files.nbytes

    @property
    def needs_index(self) -> bool:
        """Large enough for an index, and none yet, or one that leaves many rows to scan."""
        indexed = self.index.rows if self.index else 0
        unindexed = len(self.seqs) - indexed
        return len(self.seqs) >= ivf.MIN_ROWS and unindexed >= max(ivf.MIN_ROWS, indexed // 4)

    def indexed(self) -> StoreVectors:
        """A copy with every row indexed, its rows reordered group by group (CPU-heavy: run it
        in a thread)."""
        order, index = ivf.build(self.vectors)
        return StoreVectors(files_seen=self.files_seen, seqs=self.seqs[order], files=self.files[order],
                            file_ids=self.file_ids, vectors=self.vectors[order], index=index)


class VectorCache:
    """Per (store, model): the vectors of the store's completed files as one matrix, least
    recently used evicted past ``max_bytes``. A store's chunks change only when a file completes
    (its chunks are written with its status) or leaves (re-adding a file makes a new
    ``vector_store_files`` row), so the completed files and their rows' seqs, which every search
    reads anyway, tell whether the matrix is current: files that completed since are appended,
    any other change reloads the store.

    A store of :data:`ivf.MIN_ROWS` vectors or more is indexed (:mod:`assistantd.vector_stores.ivf`)
    in a thread after it is loaded, without holding up searches: they scan exactly until the
    indexed copy replaces the entry (if the entry has not changed meanwhile; otherwise the next
    search starts another build). Appended rows are scanned exactly until enough of them gather
    for a new build.

    Vectors that change under completed files (:mod:`assistantd.vector_stores.reembed`) are told
    with :meth:`forget`; a load under way then is used for its search but not kept."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[tuple[str, str], StoreVectors] = collections.OrderedDict()
        self._forgotten: dict[str, int] = {}  # store → how many times its vectors were forgotten
        self._building: dict[tuple[str, str], asyncio.Task] = {}
        self._loading: dict[tuple[str, str], tuple[dict[str, int], StoreVectors | None, asyncio.Future]] = {}

    async def get(self, session: AsyncSession, vector_store_id: str, model_id: str,
                  completed: dict[str, int]) -> StoreVectors | None:
        """``completed``: the store's completed file ids → their ``vector_store_files`` seq."""
        key = (vector_store_id, model_id)
        entry = self._entries.get(key)
        if entry is None or entry.files_seen != completed:
            kept = entry is not None and all(completed.get(f) == s for f, s in entry.files_seen.items())
            forgotten = self._forgotten.get(vector_store_id)
            entry = await self._load(session, key, completed, entry if kept else None)
            if self._forgotten.get(vector_store_id) != forgotten:
                return entry if len(entry.seqs) else None
            self._entries[key] = entry
            while sum(e.nbytes for e in self._entries.values()) > self.max_bytes and len(self._entries) > 1:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        if entry.needs_index and key not in self._building:
            self._building[key] = asyncio.create_task(self._index(key, entry), name=f"ivf-{vector_store_id}")
        return entry if len(entry.seqs) else None

    def forget(self, vector_store_id: str) -> None:
        """The store's vectors changed: its next search reads them again."""
        self._forgotten[vector_store_id] = self._forgotten.get(vector_store_id, 0) + 1
        for key in [k for k in self._entries if k[0] == vector_store_id]:
            del self._entries[key]
        for key in [k for k in self._loading if k[0] == vector_store_id]:
            del self._loading[key]  # (its waiters still get it; a new search starts another)

    async def _index(self, key: tuple[str, str], entry: StoreVectors) -> None:
        try:
            indexed = await to_thread.run_sync(entry.indexed)
            if self._entries.get(key) is entry:
                self._entries[key] = indexed
        except Exception:
            log.exception("indexing the vectors of %s failed; its searches scan them all", key[0])
        finally:
            self._building.pop(key, None)

    async def settled(self) -> None:
        """Wait for the index builds under way (tests and benchmarks)."""
        while self._building:
            await asyncio.gather(*self._building.values(), return_exceptions=True)

    async def _load(self, session: AsyncSession, key: tuple[str, str], completed: dict[str, int],
                    base: StoreVectors | None) -> StoreVectors:
        """Read the vectors of ``completed`` files, or only of those not in ``base`` yet.

        On SQLite the rows are read and assembled in a thread on a connection of its own (the
        session's statements run inline on the event loop: 100k vectors would hold it for a
        second or more); searches of the store that arrive meanwhile wait for the same load.
        The files are named, so that a file completing meanwhile (its chunks are written with
        its status) is left to the next search's append."""
        store, model_id = key
        new_files = [f for f in completed if base is None or f not in base.files_seen]
        query = select(_CHUNKS.seq, _CHUNKS.file_id, _CHUNKS.embedding).where(
            _CHUNKS.vector_store_id == store, _CHUNKS.embedding_model == model_id,
            _CHUNKS.embedding.is_not(None), _CHUNKS.file_id.in_(new_files))
        engine = session.bind
        if engine.dialect.name != "sqlite":
            rows = (await session.execute(query)).all()
            return _assemble(rows, completed, base)
        pending = self._loading.get(key)
        if pending is None or pending[0] != completed or pending[1] is not base:
            task = asyncio.ensure_future(to_thread.run_sync(_read_and_assemble, engine.sync_engine, query,
                                                            dict(completed), base))
            pending = self._loading[key] = (dict(completed), base, task)
            task.add_done_callback(lambda _t, k=key, p=pending: self._loading.pop(k, None)
                                   if self._loading.get(k) is p else None)
        return await asyncio.shield(pending[2])


def _read_and_assemble(engine, query, completed: dict[str, int], base: StoreVectors | None) -> StoreVectors:
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return _assemble(rows, completed, base)


def _assemble(rows, completed: dict[str, int], base: StoreVectors | None) -> StoreVectors:
    """The store's matrix: ``base`` (if any) followed by ``rows`` (seq, file_id, embedding), in
    the index's order (no sort of the blobs)."""
    file_ids = sorted({r.file_id for r in rows} | set(base.file_ids if base else ()))
    position = {f: i for i, f in enumerate(file_ids)}
    seqs = np.array([r.seq for r in rows], dtype=np.int64)
    files = np.array([position[r.file_id] for r in rows], dtype=np.int32)
    # One buffer for all rows (a model's vectors all have its dimension).
    vectors = from_bytes(b"".join(r.embedding for r in rows)).reshape(len(rows), -1) if rows else None
    if base is not None and len(base.seqs):
        remap = np.array([position[f] for f in base.file_ids], dtype=np.int32)
        seqs = np.concatenate([base.seqs, seqs])
        files = np.concatenate([remap[base.files], files])
        vectors = base.vectors if vectors is None else np.vstack([base.vectors, vectors])
    if vectors is None:
        vectors = np.zeros((0, 0), np.float32)
    # Appended rows come after the indexed ones, so an index still covers what it covered.
    return StoreVectors(files_seen=dict(completed), seqs=seqs, files=files, file_ids=file_ids, vectors=vectors,
                        index=base.index if base is not None else None)


# --- the rankings ------------------------------------------------------------------------------

# SQLite: FTS5 matches within the store (its id is a column of the index); restricting to some
# files joins the matches to `chunks`.
# Each answers (seq, score), best first, the score higher the better (FTS5's bm25() is negated).
_SQLITE_LEXICAL = text(
    "SELECT rowid, -bm25(chunks_fts, 1.0, 0.0) FROM chunks_fts WHERE chunks_fts MATCH :match "
    "ORDER BY bm25(chunks_fts, 1.0, 0.0) LIMIT :limit")
_SQLITE_LEXICAL_FILES = text(
    "SELECT c.seq, -bm25(chunks_fts, 1.0, 0.0) FROM chunks_fts JOIN chunks AS c ON c.seq = chunks_fts.rowid "
    "WHERE chunks_fts MATCH :match AND c.file_id IN :files "
    "ORDER BY bm25(chunks_fts, 1.0, 0.0) LIMIT :limit").bindparams(bindparam("files", expanding=True))


@functools.lru_cache(maxsize=2 * MAX_QUERY_TERMS)
def _postgres_lexical(words: int, restricted: bool) -> TextClause:
    """PostgreSQL: BM25's weighting over ``ts_rank``. ``ts_rank`` scores how often and where a
    chunk holds the query's words, but weighs a common word as much as a rare one; here each word
    (``:w0`` …) is ranked on its own (normalised by 1 + log of the chunk's length, as BM25 weighs
    long chunks down; no normalisation, and normalisation 32, ranked worse on bench/retrieval.py's
    tuning questions) and weighted by its inverse document frequency (``:i0`` …,
    :func:`_postgres_words`)."""
    within = "vector_store_id = :store" + (" AND file_id IN :files" if restricted else "")
    queries = ", ".join(f"to_tsquery('simple', :w{i}) AS q{i}" for i in range(words))
    rank = " + ".join(f"ts_rank(c.tsv, w.q{i}, 1) * :i{i}" for i in range(words))
    statement = text(
        f"SELECT c.seq, {rank} AS rank FROM chunks AS c, (SELECT {queries}) AS w "
        f"WHERE {within} AND c.tsv @@ to_tsquery('simple', :match) ORDER BY rank DESC, c.seq LIMIT :limit")
    return statement.bindparams(bindparam("files", expanding=True)) if restricted else statement


@functools.lru_cache(maxsize=MAX_QUERY_TERMS)
def _postgres_counts(words: int) -> TextClause:
    """The store's chunks, how many of them a sample held, and how many of those held each word."""
    counts = ", ".join(f"count(*) FILTER (WHERE tsv @@ to_tsquery('simple', :w{i}))" for i in range(words))
    return text(
        "WITH s AS MATERIALIZED (SELECT tsv FROM chunks WHERE vector_store_id = :store LIMIT :sample) "
        f"SELECT (SELECT count(*) FROM chunks WHERE vector_store_id = :store), count(*), {counts} FROM s")


async def _postgres_words(session: AsyncSession, store: str, words: list[str]) -> tuple[dict[str, float], bool]:
    """The words to match, each with its inverse document frequency in the store (BM25's
    ``ln(1 + (N − n + 0.5) / (n + 0.5))``), and whether to match them together (AND).

    Like :func:`_within_budget` on SQLite: the words the store holds, rarest first, as many as
    fit :data:`POSTINGS_BUDGET`, or the two rarest together when even the rarest is over it. A
    word's count ``n`` is taken from :data:`IDF_SAMPLE` of the store's chunks (all of them in a
    smaller store) and scaled to the store; a word that no sampled chunk holds counts as half a
    chunk (it is rare, or absent: then it matches nothing)."""
    params = {"store": store, "sample": IDF_SAMPLE} | {f"w{i}": f"'{w}'" for i, w in enumerate(words)}
    total, sampled, *found = (await session.execute(_postgres_counts(len(words)), params)).one()
    if not total:
        return {}, False
    held = {w: n * total / sampled for w, n in zip(words, found) if n or sampled < total}
    count = {w: max(n, 0.5) for w, n in held.items()}
    kept, together = _rarest(count)
    return {w: math.log(1 + (total - count[w] + 0.5) / (count[w] + 0.5)) for w in kept}, together


def _rarest(counts: dict[str, float]) -> tuple[list[str], bool]:
    """Of the words with a count (chunks holding them), the rarest first, as many as fit
    :data:`POSTINGS_BUDGET`, and False; or, when even the rarest is over it, the two rarest, and
    True (match them together)."""
    present = sorted(counts, key=counts.__getitem__)
    if len(present) >= 2 and counts[present[0]] > POSTINGS_BUDGET:
        return present[:2], True
    kept, postings = [], 0.0
    for word in present:
        if kept and postings + counts[word] > POSTINGS_BUDGET:
            break
        kept.append(word)
        postings += counts[word]
    return kept, False


# Table columns: statements over them return plain rows, with no ORM loading step.
_FILES = VectorStoreFile.__table__.c
_CHUNKS = Chunk.__table__.c
_FILE_NAMES = File.__table__.c


async def _lexical(session: AsyncSession, store: str, queries: list[str], files: list[str] | None,
                   limit: int) -> dict[int, float]:
    """The ``limit`` best lexical matches: seq → score (higher is better), best first."""
    words = list(dict.fromkeys(t for q in queries for t in terms(q)))
    words = [w for w in words if w not in STOP_WORDS] or words
    words = words[:MAX_QUERY_TERMS]
    if not words:
        return {}
    params: dict[str, Any] = {"store": store, "limit": limit}
    if files is not None:
        params["files"] = files
    if session.bind.dialect.name == "sqlite":
        words, together = await _within_budget(session, words)
        scope = f'store:"{store.replace("_", "").lower()}" AND '

        def match(chosen: list[str], all_of: bool) -> str:
            return scope + "text:(" + (" AND " if all_of else " OR ").join(f'"{w}"' for w in chosen) + ")"

        def statement(chosen: list[str]) -> TextClause:
            return _SQLITE_LEXICAL if files is None else _SQLITE_LEXICAL_FILES
    else:
        weights, together = await _postgres_words(session, store, words)
        words = list(weights)
        params.update({f"w{i}": f"'{w}'" for i, w in enumerate(words)})
        params.update({f"i{i}": weights[w] for i, w in enumerate(words)})

        def match(chosen: list[str], all_of: bool) -> str:
            return (" & " if all_of else " | ").join(f"'{w}'" for w in chosen)

        def statement(chosen: list[str]) -> TextClause:
            return _postgres_lexical(len(chosen), files is not None)
    if not words:
        return {}

    async def ranked(chosen: list[str], all_of: bool) -> dict[int, float]:
        params["match"] = match(chosen, all_of)
        return dict((await session.execute(statement(chosen), params)).all())
    if together:
        found = await ranked(words, True)
        if len(found) >= limit:
            return found
        words = words[:1]  # too few chunks hold both: rank those holding the rarer one
    return await ranked(words, False)


_DOCUMENT_COUNTS = text("SELECT term, doc FROM chunks_fts_vocab WHERE term IN :words").bindparams(
    bindparam("words", expanding=True))


async def _within_budget(session: AsyncSession, words: list[str]) -> tuple[list[str], bool]:
    """The words to match, and whether to match them together (AND) rather than any (OR).

    The words that occur at all, rarest first, as many as fit :data:`POSTINGS_BUDGET`. When
    even the rarest is over it (every word of the query is common), the two rarest together:
    their common chunks are far fewer, and they are the ones BM25 would rank first anyway (the
    caller falls back to the rarest word alone when they are too few). Counts are over the whole
    index, every store's chunks."""
    counts = dict((await session.execute(_DOCUMENT_COUNTS, {"words": words})).all())
    return _rarest({w: counts[w] for w in words if counts.get(w)})


def _vector(stored: StoreVectors, query_vectors: np.ndarray, files: list[str] | None, limit: int,
            floor: float) -> dict[int, float]:
    """The ``limit`` most similar chunks at or over ``floor``: seq → similarity, best first.
    The best of the queries counts for each chunk. An indexed store is searched through its
    index (and its unindexed rows exactly), unless ``files`` restricts the search."""
    rows: np.ndarray | None = None  # the rows scored, when not all of them
    slices = ivf.candidates(stored.index, query_vectors) if stored.index is not None and files is None else []
    if slices and stored.index.rows < len(stored.seqs):  # rows appended since the index was built
        slices.append((stored.index.rows, len(stored.seqs)))
    if slices:
        rows = np.concatenate([np.arange(a, b) for a, b in slices])
        similarity = np.concatenate([(stored.vectors[a:b] @ query_vectors.T).max(axis=1) for a, b in slices])
    else:  # no index, a restriction to some files, or (hardly ever) only empty groups probed
        similarity = (stored.vectors @ query_vectors.T).max(axis=1)
    if files is not None:
        allowed = set(files)
        wanted = np.array([i for i, f in enumerate(stored.file_ids) if f in allowed], dtype=np.int32)
        similarity = np.where(np.isin(stored.files, wanted), similarity, -np.inf)
    limit = min(limit, len(similarity))
    top = np.argpartition(-similarity, limit - 1)[:limit] if limit else np.array([], dtype=np.int64)
    top = top[np.argsort(-similarity[top], kind="stable")]
    at = top if rows is None else rows[top]
    return {int(stored.seqs[r]): float(similarity[i]) for r, i in zip(at, top) if similarity[i] >= floor}


def _cosines(stored: StoreVectors, query_vectors: np.ndarray, seqs: list[int]) -> dict[int, float]:
    """The exact similarity of the chunks ``seqs`` of the store (the best of the queries); a chunk
    without a vector here is left out."""
    rows, found = stored.rows_of(seqs)
    if not len(rows):
        return {}
    similarity = (stored.vectors[rows] @ query_vectors.T).max(axis=1)
    return {int(seq): float(sim) for seq, sim in zip(found, similarity)}


def blend(lexical: dict[int, float], similarity: dict[int, float] | None,
          weight: float = LEXICAL_WEIGHT) -> dict[int, float]:
    """Each candidate's score in 0..1 (module docstring): ``similarity`` holds the cosine of every
    candidate that has one (vector matches and lexical ones alike), None when there is no vector
    ranking; ``lexical`` the lexical scores, empty when there is no lexical ranking."""
    best = max(lexical.values(), default=0.0)
    fraction = {seq: score / best for seq, score in lexical.items()} if best > 0 else dict.fromkeys(lexical, 0.0)
    if similarity is None:
        return fraction
    if not lexical:
        return {seq: max(0.0, sim) for seq, sim in similarity.items()}
    candidates = set(similarity) | set(fraction)
    return {seq: min(1.0, max(0.0, (similarity.get(seq, 0.0) + weight * fraction.get(seq, 0.0)) / (1 + weight)))
            for seq in candidates}


RANKINGS = ("hybrid", "lexical", "vector")  # ASSISTANTD_SEARCH_RANKINGS: both blended, or one alone


class Searcher:
    def __init__(self, embedder: Embedder | None, cache: VectorCache | None = None,
                 pgvector: PgVector | None = None, rankings: str = "hybrid") -> None:
        if rankings not in RANKINGS:
            raise ValueError(f"ASSISTANTD_SEARCH_RANKINGS must be one of {', '.join(RANKINGS)}, not {rankings!r}")
        self.lexical = rankings != "vector"
        embedder = embedder if rankings != "lexical" else None
        self.embedder = embedder
        self.cache = cache or VectorCache()
        self.pgvector = pgvector  # PostgreSQL with pgvector: vectors are searched there
        # Query embedding and vector scoring: numpy and onnxruntime release the GIL, so these
        # threads run beside the event loop's inline SQLite statement.
        self._threads = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="vector-search")

    def _start_scoring(self, stored: StoreVectors, queries: list[str], query_vectors: np.ndarray | None,
                       files: list[str] | None, limit: int) -> asyncio.Future:
        """The vector ranking and the query vectors, begun at once in a thread when the query
        vectors are known or the embedder runs in process (the caller's next statement then
        overlaps it); otherwise a task that first asks the upstream for the embeddings."""
        embedder = self.embedder
        floor = embedder.min_similarity
        loop = asyncio.get_running_loop()

        def scored(vectors: np.ndarray) -> tuple[dict[int, float], np.ndarray]:
            return _vector(stored, vectors, files, limit, floor), vectors
        if query_vectors is not None:
            return loop.run_in_executor(self._threads, scored, query_vectors)
        if hasattr(embedder, "embed_sync"):  # local: both steps in one thread
            return loop.run_in_executor(self._threads, lambda: scored(embedder.embed_sync(queries)))

        async def upstream() -> tuple[dict[int, float], np.ndarray]:
            return await loop.run_in_executor(self._threads, scored, await embedder.embed(queries))
        return asyncio.ensure_future(upstream())

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def embed_queries(self, queries: list[str]) -> np.ndarray | None:
        if self.embedder is None:
            return None
        return await self.embedder.embed(queries)

    async def search(self, session: AsyncSession, vector_store_id: str, queries: list[str], *,
                     filters: Any = None, max_num_results: int = 10, score_threshold: float = 0.0,
                     query_vectors: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Ranked results: ``{file_id, filename, score, attributes, text}`` per chunk, best first.
        ``query_vectors`` may be given (the queries' embeddings) to reuse them across stores."""
        # The completed files (id → their vector_store_files seq), with attributes only to filter.
        columns = [_FILES.id, _FILES.seq] + ([_FILES.attributes] if filters is not None else [])
        found = (await session.execute(select(*columns).where(
            _FILES.vector_store_id == vector_store_id, _FILES.status == "completed"))).all()
        completed = {r[0]: r[1] for r in found}
        restrict = None
        if filters is not None:
            allowed = [r[0] for r in found if matches(filters, r[2] or {})]
            restrict = None if len(allowed) == len(found) else allowed
        if not completed or restrict == []:
            return []
        limit = max(CANDIDATES, max_num_results)

        # On SQLite the lexical statement runs inline on the event loop; meanwhile a thread
        # embeds the query and scores the cached vectors (numpy and onnxruntime release the GIL).
        embedder, similarity = self.embedder, None
        stored: StoreVectors | None = None
        vector_job: asyncio.Future | None = None
        if embedder is not None and self.pgvector is None:
            stored = await self.cache.get(session, vector_store_id, embedder.model_id, completed)
            if stored is not None:
                vector_job = self._start_scoring(stored, queries, query_vectors, restrict, limit)
        try:
            lexical = await _lexical(session, vector_store_id, queries, restrict, limit) if self.lexical else {}
            if vector_job is not None:
                similarity, query_vectors = await vector_job
        finally:
            if vector_job is not None and not vector_job.done():
                vector_job.cancel()
        if embedder is not None and self.pgvector is not None:
            if await self.pgvector.has_vectors(session, vector_store_id, embedder.model_id):
                if query_vectors is None:
                    query_vectors = await self.embed_queries(queries)
                similarity = await self.pgvector.nearest(session, vector_store_id, embedder.model_id,
                                                         query_vectors, restrict, limit, embedder.min_similarity)
        if similarity is not None:
            # The lexical matches that are not vector candidates: their exact cosine.
            missing = [seq for seq in lexical if seq not in similarity]
            if missing and stored is not None:
                similarity.update(_cosines(stored, query_vectors, missing))
            elif missing:
                similarity.update(await self.pgvector.similarities(session, embedder.model_id, query_vectors,
                                                                   missing))
        # Rounded as reported, so that a score a client saw passes it as a threshold.
        scores = {seq: round(score, 6) for seq, score in blend(lexical, similarity).items()}
        similarity = similarity or {}
        # Equal scores go to the closer meaning.
        best = sorted(scores, key=lambda s: (-scores[s], -similarity.get(s, -1.0), s))
        best = [s for s in best if scores[s] >= score_threshold and scores[s] > 0][:max_num_results]
        if not best:
            return []
        rows = {r.seq: r for r in (await session.execute(
            select(_CHUNKS.seq, _CHUNKS.file_id, _CHUNKS.text).where(_CHUNKS.seq.in_(best)))).all()}
        files = {r.file_id: r for r in (await session.execute(
            select(_FILES.id.label("file_id"), _FILES.attributes, _FILE_NAMES.filename)
            .select_from(VectorStoreFile.__table__.outerjoin(File.__table__, _FILE_NAMES.id == _FILES.id))
            .where(_FILES.vector_store_id == vector_store_id, _FILES.status == "completed",
                   _FILES.id.in_({r.file_id for r in rows.values()})))).all()}
        out = []
        for seq in best:
            row = rows.get(seq)
            file = files.get(row.file_id) if row is not None else None
            if file is None:
                continue  # removed since the rankings were made
            out.append({"file_id": row.file_id, "filename": file.filename or "",
                        "score": scores[seq], "attributes": file.attributes or {},
                        "text": row.text})
        return out
