"""The database layer itself: SQLite statements run inline on the event loop (see
``assistantd.db.engine``), and must behave like any async driver's."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from assistantd.db import Database


def test_inline_sqlite_runs_core_and_text_statements(tmp_path):
    async def scenario() -> tuple[list, str, str, int]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
        try:
            async with db.write() as session:
                await session.execute(text("CREATE TABLE t (n INTEGER)"))
                await session.execute(text("INSERT INTO t VALUES (1), (2), (3)"))
            async with db.read() as session:
                # A row-returning Core statement: AsyncSession asks the cursor to close softly.
                rows = (await session.execute(text("SELECT n FROM t ORDER BY n"))).all()
                mode = (await session.execute(text("PRAGMA journal_mode"))).scalar()
                sync = (await session.execute(text("PRAGMA synchronous"))).scalar()
            # A failed write transaction leaves nothing behind.
            try:
                async with db.write() as session:
                    await session.execute(text("INSERT INTO t VALUES (4)"))
                    raise RuntimeError("rejected")
            except RuntimeError:
                pass
            async with db.read() as session:
                rows_after = (await session.execute(text("SELECT count(*) FROM t"))).scalar()
            return rows, mode, str(sync), rows_after
        finally:
            await db.dispose()

    rows, mode, sync, count = asyncio.run(scenario())
    assert [r[0] for r in rows] == [1, 2, 3]
    assert mode == "wal"
    assert sync == "1"  # NORMAL: WAL commits without an fsync each
    assert count == 3
