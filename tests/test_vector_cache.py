"""The in-process vector cache (SQLite, and PostgreSQL without pgvector): after chunks are added
it appends only the new ones, after a removal it reloads, and either way it holds exactly what
a fresh load would."""

from __future__ import annotations

import asyncio

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


def test_cache_appends_new_chunks_and_reloads_after_removals(databases):
    settings = _migrated(databases, "vector-cache")
    rng = np.random.default_rng(7)

    async def add(db, file_id: str, n: int) -> None:
        vectors = normalise(rng.standard_normal((n, 8)))
        async with db.write() as session:
            await session.execute(insert(Chunk), [
                {"id": f"chunk_{file_id}_{i}_{rng.integers(1 << 30)}", "tenant": "t", "vector_store_id": "vs_1",
                 "file_id": file_id, "index": i, "text": f"text {i}", "tokens": 2, "embedding": to_bytes(v),
                 "embedding_model": MODEL}
                for i, v in enumerate(vectors)])

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


def test_lexical_query_keeps_the_rarest_words_within_the_postings_budget(databases, monkeypatch):
    """SQLite: the words of a query are matched rarest first until their chunks add up to the
    budget, so a common word cannot make one query rank the whole index."""
    from assistantd.vector_stores import search

    if databases.backend != "sqlite":
        pytest.skip("the postings budget reads SQLite's FTS5 vocabulary")
    settings = _migrated(databases, "budget")
    monkeypatch.setattr(search, "POSTINGS_BUDGET", 10)
    # 'common' is in all 30 chunks, 'middling' in 6, 'rare' in 2; 'absent' in none.
    texts = [" ".join(["common"] + (["middling"] if i % 5 == 0 else []) + (["rare"] if i in (3, 17) else []))
             for i in range(30)]

    async def scenario():
        db = Database(settings.sqlalchemy_url)
        try:
            await _add_store(db)
            async with db.write() as session:
                await session.execute(insert(Chunk), [
                    {"id": f"chunk_{i}", "tenant": "t", "vector_store_id": "vs_1", "file_id": "f", "index": i,
                     "text": t, "tokens": 3} for i, t in enumerate(texts)])
            async with db.read() as session:
                kept = await search._within_budget(session, ["common", "absent", "middling", "rare"])
                ranked = await search._lexical(session, "vs_1", ["common middling rare absent"], None, 100)
                only_common = await search._lexical(session, "vs_1", ["common"], None, 100)
            return kept, ranked, only_common
        finally:
            await db.dispose()

    kept, ranked, only_common = asyncio.run(scenario())
    assert kept == ["rare", "middling"]  # 2 + 6 chunks fit in 10; 'common' (30) does not
    # Chunk i has seq i + 1: those with 'rare' (i = 3, 17) rank first, then those with 'middling'.
    assert set(ranked[:2]) == {4, 18} and set(ranked[2:]) == {1, 6, 11, 16, 21, 26}
    assert len(only_common) == 30  # the rarest word is always kept, whatever its count
