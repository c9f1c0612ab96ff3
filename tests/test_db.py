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


def test_json_columns_are_written_by_orjson_with_the_stdlib_as_fallback(tmp_path):
    """JSON columns go through ``json_text`` on both engines: orjson's compact UTF-8 text, and
    the stdlib's encoder for what orjson refuses (an integer past 64 bits); both read back."""
    from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select

    from assistantd.db.engine import json_text

    table = Table("j", MetaData(), Column("id", Integer, primary_key=True), Column("v", JSON))
    values = [{"text": "é" * 3, "n": [1, 2.5, None, True]}, {"big": 2**70}]

    async def scenario() -> tuple[list, list]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'j.db'}")
        try:
            async with db.write() as session:
                await session.run_sync(lambda s: table.create(s.connection()))
                for i, v in enumerate(values):
                    await session.execute(insert(table).values(id=i, v=v))
            async with db.read() as session:
                raw = (await session.execute(text("SELECT v FROM j ORDER BY id"))).scalars().all()
                back = (await session.execute(select(table.c.v).order_by(table.c.id))).scalars().all()
            return raw, back
        finally:
            await db.dispose()

    raw, back = asyncio.run(scenario())
    assert raw[0] == '{"text":"ééé","n":[1,2.5,null,true]}'  # orjson's, not the stdlib's spacing
    assert back == values
    assert json_text({"big": 2**70}) == '{"big": 1180591620717411303424}'  # the stdlib's
