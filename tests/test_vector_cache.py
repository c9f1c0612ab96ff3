"""The in-process vector cache (SQLite, and PostgreSQL without pgvector): after chunks are added
it appends only the new ones, after a removal it reloads, and either way it holds exactly what
a fresh load would."""

from __future__ import annotations

import asyncio
import secrets

import numpy as np
import pytest
from sqlalchemy import delete, insert

from assistantd.db import Database
from assistantd.db.migrate import upgrade_to_head
from assistantd.db.models import Chunk, VectorStore
from assistantd.settings import Settings
from assistantd.vector_stores.embeddings import normalise, to_bytes
from assistantd.vector_stores.search import VectorCache

MODEL = "test-model"


def _migrated(databases, name: str) -> Settings:
    data_dir, url = databases.new(name)
    settings = Settings(_env_file=None, data_dir=data_dir, database_url=url)
    upgrade_to_head(settings)
    return settings


async def _add_store(db: Database) -> None:
    async with db.write() as session:
        session.add(VectorStore(id="vs_1", tenant="t", created_at=0, name=None, description=None,
                                metadata_={}, expires_after=None))

async def _add_chunks(db: Database, file_id: str, *, texts: list[str] | None = None,
                      vectors: np.ndarray | None = None) -> None:
    """Chunks of one file in store ``vs_1``, in order: one per text (``"x"`` each when only
    vectors are given), each with its vector (tagged ``MODEL``) when vectors are given."""
    texts = texts if texts is not None else ["x"] * len(vectors)
    async with db.write() as session:
        await session.execute(insert(Chunk), [
            {"id": f"chunk_{file_id}_{i}_{secrets.token_hex(4)}", "tenant": "t", "vector_store_id": "vs_1",
             "file_id": file_id, "index": i, "text": t, "tokens": len(t.split()),
             **({"embedding": to_bytes(vectors[i]), "embedding_model": MODEL} if vectors is not None else {})}
            for i, t in enumerate(texts)])



def test_cache_appends_new_chunks_and_reloads_after_removals(databases):
    settings = _migrated(databases, "vector-cache")
    rng = np.random.default_rng(7)

    async def add(db, file_id: str, n: int) -> None:
        await _add_chunks(db, file_id, vectors=normalise(rng.standard_normal((n, 8))))

    async def remove(db, file_id: str) -> None:
        async with db.write() as session:
            await session.execute(delete(Chunk).where(Chunk.file_id == file_id))

    async def snapshot(db, cache, completed):
        async with db.read() as session:
            entry = await cache.get(session, "vs_1", MODEL, completed)
        return {int(s): (entry.file_ids[f], entry.vectors[i].tobytes())
                for i, (s, f) in enumerate(zip(entry.seqs, entry.files))}

    async def scenario():
        db = Database(settings.sqlalchemy_url)
        try:
            await _add_store(db)
            cache = VectorCache()
            # completed files → their vector_store_files seqs, as the search passes them
            await add(db, "file-b", 3)
            first = await snapshot(db, cache, {"file-b": 1})
            await add(db, "file-a", 2)  # sorts before file-b: file indexes must be remapped
            appended = await snapshot(db, cache, {"file-b": 1, "file-a": 2})
            assert appended == await snapshot(db, VectorCache(), {"file-b": 1, "file-a": 2})  # a fresh load
            assert len(appended) == 5 and set(first.items()) <= set(appended.items())
            # file-b leaves and file-a is added again (new chunks, a new row): reloaded.
            await remove(db, "file-b")
            await remove(db, "file-a")
            await add(db, "file-a", 2)
            await add(db, "file-c", 3)
            now = {"file-a": 4, "file-c": 5}
            after = await snapshot(db, cache, now)
            assert after == await snapshot(db, VectorCache(), now)
            assert {f for f, _ in after.values()} == {"file-a", "file-c"} and len(after) == 5
            old_a = {v for f, v in appended.values() if f == "file-a"}
            assert not old_a & {v for f, v in after.values()}  # file-a's old vectors are gone
        finally:
            await db.dispose()

    asyncio.run(scenario())


def _on_chunks(databases, name: str, texts: list[str], work):
    """``await work(session)`` on a fresh database whose store ``vs_1`` holds ``texts`` as the
    chunks of one file (chunk i has seq i + 1)."""
    settings = _migrated(databases, name)

    async def scenario():
        db = Database(settings.sqlalchemy_url)
        try:
            await _add_store(db)
            await _add_chunks(db, "f", texts=texts)
            async with db.read() as session:
                return await work(session)
        finally:
            await db.dispose()

    return asyncio.run(scenario())


async def _chosen(session, words: list[str]) -> tuple[list[str], bool]:
    """The words a lexical query matches, and whether together: SQLite's choice from FTS5's
    vocabulary, PostgreSQL's from its count of the store's words (with their weights)."""
    from assistantd.vector_stores import search

    if session.bind.dialect.name == "sqlite":
        return await search._within_budget(session, words)
    weights, together = await search._postgres_words(session, "vs_1", words)
    assert all(weight > 0 for weight in weights.values())
    return list(weights), together


def test_lexical_query_keeps_the_rarest_words_within_the_postings_budget(databases, monkeypatch):
    """The words of a query are matched rarest first until their chunks add up to the budget,
    so a common word cannot make one query rank the whole index."""
    from assistantd.vector_stores import search

    monkeypatch.setattr(search, "POSTINGS_BUDGET", 10)
    # 'common' is in all 30 chunks, 'middling' in 6, 'rare' in 2; 'absent' in none.
    texts = [" ".join(["common"] + (["middling"] if i % 5 == 0 else []) + (["rare"] if i in (3, 17) else []))
             for i in range(30)]

    async def work(session):
        kept = await _chosen(session, ["common", "absent", "middling", "rare"])
        ranked = list(await search._lexical(session, "vs_1", ["common middling rare absent"], None, 100))
        only_common = list(await search._lexical(session, "vs_1", ["common"], None, 100))
        return kept, ranked, only_common

    (kept, together), ranked, only_common = _on_chunks(databases, "budget", texts, work)
    assert kept == ["rare", "middling"] and not together  # 2 + 6 chunks fit in 10; 'common' (30) does not
    # Chunk i has seq i + 1: those with 'rare' (i = 3, 17) rank first, then those with 'middling'.
    assert set(ranked[:2]) == {4, 18} and set(ranked[2:]) == {1, 6, 11, 16, 21, 26}
    assert len(only_common) == 30  # the rarest word is always kept, whatever its count


def _clustered(rng: np.random.Generator, n: int, topics: int, dims: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``topics`` random directions (as embeddings cluster by topic), and
    the topic centres."""
    centres = rng.standard_normal((topics, dims)).astype(np.float32)
    rows = centres[rng.integers(0, topics, n)] + noise * rng.standard_normal((n, dims)).astype(np.float32)
    return normalise(rows), centres


def test_ivf_index_finds_nearly_all_true_neighbours_scanning_a_fraction_of_the_store(monkeypatch):
    from assistantd.vector_stores import ivf
    from assistantd.vector_stores.search import StoreVectors, _vector

    probes = []
    candidates = ivf.candidates
    monkeypatch.setattr(ivf, "candidates", lambda *a: probes.append(candidates(*a)) or probes[-1])

    rng = np.random.default_rng(11)
    n = 30_000
    vectors, centres = _clustered(rng, n, topics=300, dims=64, noise=0.8)
    exact = StoreVectors(files_seen={"f": 1}, seqs=np.arange(1, n + 1), files=np.zeros(n, np.int32),
                         file_ids=["f"], vectors=vectors)
    indexed = exact.indexed()
    assert indexed.index is not None and indexed.index.rows == n
    assert sorted(indexed.seqs.tolist()) == exact.seqs.tolist()  # the same rows, regrouped
    recalls, scanned = [], []
    for _ in range(40):
        query = normalise(centres[rng.integers(0, 300)][None] + 0.8 * rng.standard_normal((1, 64)).astype(np.float32))
        truth = _vector(exact, query, None, 20, -1.0)
        found = _vector(indexed, query, None, 20, -1.0)
        recalls.append(len(truth.keys() & found.keys()) / 20)
        for seq in truth.keys() & found.keys():
            assert found[seq] == pytest.approx(truth[seq], abs=1e-5)
        scanned.append(sum(b - a for a, b in probes[-1]))  # the slices this search scored
    assert len(probes) == 40  # every unrestricted search went through the index
    assert np.mean(recalls) >= 0.9
    assert max(scanned) <= 0.3 * n  # only the probed groups were scored
    # A search restricted to some files scans them all, exactly.
    assert _vector(indexed, query, ["f"], 20, -1.0) == _vector(exact, query, ["f"], 20, -1.0)


def test_cache_indexes_a_large_store_in_the_background_and_scans_rows_added_since(databases):
    from assistantd.vector_stores import ivf
    from assistantd.vector_stores.search import _vector

    settings = _migrated(databases, "vector-ivf")
    rng = np.random.default_rng(5)
    big, _ = _clustered(rng, ivf.MIN_ROWS, topics=150, dims=16, noise=0.3)

    async def get(db, cache, completed):
        async with db.read() as session:
            return await cache.get(session, "vs_1", MODEL, completed)

    async def scenario():
        db = Database(settings.sqlalchemy_url)
        try:
            await _add_store(db)
            cache = VectorCache()
            await _add_chunks(db, "file-a", vectors=big)
            first = await get(db, cache, {"file-a": 1})
            assert first.index is None  # searches scan exactly until the index is built
            await cache.settled()
            built = await get(db, cache, {"file-a": 1})
            assert built.index is not None and built.index.rows == ivf.MIN_ROWS
            assert sorted(built.seqs.tolist()) == sorted(first.seqs.tolist())
            # A new file's rows are appended after the indexed ones and scanned exactly.
            odd = normalise(rng.standard_normal((3, 16)).astype(np.float32))
            await _add_chunks(db, "file-b", vectors=odd)
            grown = await get(db, cache, {"file-a": 1, "file-b": 2})
            assert grown.index is built.index and len(grown.seqs) == ivf.MIN_ROWS + 3
            new_seqs = set(grown.seqs[ivf.MIN_ROWS:].tolist())
            for vector in odd:
                best = next(iter(_vector(grown, vector[None], None, 5, -1.0)))
                assert best in new_seqs
            assert not grown.needs_index  # 3 unindexed rows: not worth a build
            # A removal reloads the store: the index goes and is built again.
            async with db.write() as session:
                await session.execute(delete(Chunk).where(Chunk.file_id == "file-b"))
            reloaded = await get(db, cache, {"file-a": 1})
            assert reloaded.index is None
            await cache.settled()
            assert (await get(db, cache, {"file-a": 1})).index is not None
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_lexical_query_of_only_common_words_matches_the_two_rarest_together(databases, monkeypatch):
    """When even the rarest word of a query is over the postings budget, the chunks holding
    both of the two rarest words are ranked, unless fewer than asked for hold both."""
    from assistantd.vector_stores import search

    monkeypatch.setattr(search, "POSTINGS_BUDGET", 5)
    # 'alpha' is in chunks 0-7, 'beta' in 5-14 (both: 5, 6, 7), 'gamma' in all 20.
    texts = [" ".join(["gamma"] + (["alpha"] if i < 8 else []) + (["beta"] if 5 <= i < 15 else []))
             for i in range(20)]

    async def work(session):
        chosen = await _chosen(session, ["gamma", "beta", "alpha"])
        both = list(await search._lexical(session, "vs_1", ["gamma beta alpha"], None, 3))
        fallback = list(await search._lexical(session, "vs_1", ["gamma beta alpha"], None, 5))
        return chosen, both, fallback

    chosen, both, fallback = _on_chunks(databases, "budget-and", texts, work)
    assert chosen == (["alpha", "beta"], True)  # 8 and 10 chunks: each alone is over 5
    assert set(both) == {6, 7, 8}  # seq = i + 1: the three chunks with alpha and beta
    # Five asked for, three hold both: the chunks with the rarest word, alpha, are ranked, the
    # shorter ones (alpha without beta) first.
    assert set(fallback) == {1, 2, 3, 4, 5}


def test_a_rare_word_outranks_a_common_word_said_often(databases):
    """The lexical ranking weighs a word by how rare it is in the store (BM25's IDF; on
    PostgreSQL ``ts_rank`` alone would rank the chunk saying 'ledger' four times first)."""
    from assistantd.vector_stores import search

    texts = (["ledger ledger ledger ledger entries kept"] + ["ledger entries kept here"] * 9
             + ["zeppelin entries kept here"])

    async def work(session):
        return list(await search._lexical(session, "vs_1", ["ledger zeppelin"], None, 11))

    ranked = _on_chunks(databases, "idf", texts, work)
    assert ranked[0] == 11  # seq = i + 1: the one chunk with 'zeppelin'
    assert ranked[1] == 1 and len(ranked) == 11  # then the one saying 'ledger' most


def test_a_cold_load_on_sqlite_runs_once_in_a_thread_for_concurrent_searches(databases, monkeypatch):
    import threading

    from assistantd.vector_stores import search

    if databases.backend != "sqlite":
        pytest.skip("PostgreSQL loads through the (non-blocking) session")
    settings = _migrated(databases, "cold-load")
    calls = []
    read = search._read_and_assemble

    def recording(*args):
        calls.append(threading.get_ident())
        return read(*args)

    monkeypatch.setattr(search, "_read_and_assemble", recording)

    async def scenario():
        db = Database(settings.sqlalchemy_url)
        try:
            await _add_store(db)
            await _add_chunks(db, "file-a", vectors=normalise(np.random.default_rng(3).standard_normal((50, 8))))
            cache = VectorCache()

            async def get():
                async with db.read() as session:
                    return await cache.get(session, "vs_1", MODEL, {"file-a": 1})
            first, second = await asyncio.gather(get(), get())
            return first, second, threading.get_ident()
        finally:
            await db.dispose()

    first, second, loop_thread = asyncio.run(scenario())
    assert first is second and len(first.seqs) == 50
    assert len(calls) == 1 and calls[0] != loop_thread


def test_a_probe_that_finds_only_empty_groups_scans_exactly():
    from assistantd.vector_stores import ivf
    from assistantd.vector_stores.search import StoreVectors, _vector

    rng = np.random.default_rng(0)
    n = 1000
    vectors = normalise(rng.standard_normal((n, 16)).astype(np.float32))
    exact = StoreVectors(files_seen={"f": 1}, seqs=np.arange(1, n + 1), files=np.zeros(n, np.int32),
                         file_ids=["f"], vectors=vectors)
    # Every group empty (offsets all 0): whatever is probed holds no rows.
    empty = ivf.IVFIndex(rows=n, centroids=normalise(rng.standard_normal((30, 16)).astype(np.float32)),
                         offsets=np.zeros(31, np.int64))
    hollow = StoreVectors(files_seen={"f": 1}, seqs=exact.seqs, files=exact.files, file_ids=["f"],
                          vectors=vectors, index=empty)
    query = normalise(rng.standard_normal((1, 16)).astype(np.float32))
    assert _vector(hollow, query, None, 5, -1.0) == _vector(exact, query, None, 5, -1.0)
