"""Ingestion looks at once when a transaction that queued files commits (not before, not after a
rollback), and polls only for what other processes queued (assistantd/vector_stores/ingest.py)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from assistantd.db import Database
from assistantd.vector_stores import ingest


class Waker:
    def __init__(self) -> None:
        self.calls = 0

    def queued(self) -> None:
        self.calls += 1


def test_queued_files_wake_the_ingester_once_their_transaction_commits(tmp_path):
    waker = Waker()
    ingest._ingesters.add(waker)

    async def scenario() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'wake.db'}")
        try:
            async with db.write() as session:
                await session.execute(text("SELECT 1"))
                ingest.files_queued(session)
                ingest.files_queued(session)  # (two files, one wake-up)
                assert waker.calls == 0, "woken before the commit: the files are not visible yet"
            assert waker.calls == 1

            with pytest.raises(RuntimeError):
                async with db.write() as session:
                    await session.execute(text("SELECT 1"))
                    ingest.files_queued(session)
                    raise RuntimeError("rolled back")
            assert waker.calls == 1, "a rolled-back transaction woke the ingester"

            async with db.write() as session:
                await session.execute(text("SELECT 1"))
            assert waker.calls == 1, "a transaction that queued nothing woke the ingester"
        finally:
            await db.dispose()

    try:
        asyncio.run(scenario())
    finally:
        ingest._ingesters.discard(waker)
