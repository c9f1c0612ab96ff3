"""The in-process vector cache (SQLite, and PostgreSQL without pgvector): after chunks are added
it appends only the new ones, after a removal it reloads, and either way it holds exactly what
a fresh load would."""

from __future__ import annotations

import asyncio

import numpy as np
from sqlalchemy import delete, insert

from assistantd.db import Database
from assistantd.db.migrate import upgrade_to_head
from assistantd.db.models import Chunk, VectorStore
from assistantd.settings import Settings
from assistantd.vector_stores.embeddings import normalise, to_bytes
from assistantd.vector_stores.search import VectorCache

MODEL = "test-model"


def test_cache_appends_new_chunks_and_reloads_after_removals(databases):
    data_dir, url = databases.new("vector-cache")
    settings = Settings(_env_file=None, data_dir=data_dir, database_url=url)
    upgrade_to_head(settings)
    rng = np.random.default_rng(7)

    async def add(db, file_id: str, n: int) -> None:
        vectors = normalise(rng.standard_normal((n, 8)))
        async with db.write() as session:
            await session.execute(insert(Chunk), [
                {"id": f"chunk_{file_id}_{i}", "tenant": "t", "vector_store_id": "vs_1", "file_id": file_id,
                 "index": i, "text": f"text {i}", "tokens": 2, "embedding": to_bytes(v), "embedding_model": MODEL}
                for i, v in enumerate(vectors)])

    async def snapshot(db, cache):
        async with db.read() as session:
            entry = await cache.get(session, "vs_1", MODEL)
        return {int(s): (entry.file_ids[f], entry.vectors[i].tobytes())
                for i, (s, f) in enumerate(zip(entry.seqs, entry.files))}

    async def scenario():
        db = Database(settings.sqlalchemy_url)
        try:
            async with db.write() as session:
                session.add(VectorStore(id="vs_1", tenant="t", created_at=0, name=None, description=None,
                                        metadata_={}, expires_after=None))
            await add(db, "file-b", 3)
            cache = VectorCache()
            first = await snapshot(db, cache)
            await add(db, "file-a", 2)  # sorts before file-b: file indexes must be remapped
            appended = await snapshot(db, cache)
            assert appended == await snapshot(db, VectorCache())  # what a fresh load holds
            assert len(appended) == 5 and set(first.items()) <= set(appended.items())
            async with db.write() as session:
                await session.execute(delete(Chunk).where(Chunk.file_id == "file-b"))
            await add(db, "file-c", 3)  # as many added as removed: the count alone would not tell
            after = await snapshot(db, cache)
            assert after == await snapshot(db, VectorCache())
            assert {f for f, _ in after.values()} == {"file-a", "file-c"}
        finally:
            await db.dispose()

    asyncio.run(scenario())
