"""The SQLAlchemy behaviour that assistantd.db's performance shortcuts rely on, pinned.

Each test names the shortcut it protects, and each assertion says what SQLAlchemy stopped doing,
so that an upgrade which breaks a shortcut fails here, plainly, before it fails a run. The
inline SQLite engine (assistantd/db/engine.py) is tested on a file in ``tmp_path``; the row
helpers (assistantd/db/rows.py) and the JSON encoder matter on PostgreSQL too, and run on a
fresh migrated database of every backend (``databases``, tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, bindparam, create_engine, event, inspect, literal, select, text, update
from sqlalchemy.exc import AwaitRequired, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from assistantd.db import (Database, inline_sync_engine, insert_objects, mark_loaded, update_object, update_object_where,
                           update_returning)
import assistantd.db.engine as engine_module
import assistantd.db.rows as rows_module
from assistantd.db.engine import _InlineConnection, _InlineCursor
from assistantd.db.models import Assistant, Thread
from assistantd.db.rows import columns_of, load_detached, new_row

T = TypeVar("T")


def _on(url: str, scenario: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``scenario`` on a Database of ``url`` in an event loop of its own."""

    async def run() -> T:
        db = Database(url)
        try:
            return await scenario(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


def _sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'shortcuts.db'}"


@contextlib.contextmanager
def _statements(db: Database, raw: list[str] | None = None) -> Iterator[list[str]]:
    """The SQL statements ``db`` sends while the block runs (a transaction's BEGIN and COMMIT
    are not statements here: neither driver sends them through a cursor), those SQLAlchemy
    executes and those rows.py sends straight to sqlite3 alike; the latter are also put in
    ``raw``."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        seen.append(" ".join(statement.split()))

    straight = rows_module._SQLiteStatement.execute

    def record_straight(self, connection, values):
        seen.append(" ".join(self.sql.split()))
        if raw is not None:
            raw.append(seen[-1])
        return straight(self, connection, values)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    rows_module._SQLiteStatement.execute = record_straight
    try:
        yield seen
    finally:
        rows_module._SQLiteStatement.execute = straight
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


def _thread(n: int, make: Callable[..., Thread] = Thread, **given: Any) -> Thread:
    return make(**{"id": f"thread_{n}", "tenant": "t", "created_at": n, "tool_resources": {},
                   "metadata_": {}, **given})


async def _added_and_flushed(db: Database, obj: Any) -> list[str]:
    """The statements a write transaction sends when ``obj`` is added to its session and flushed."""
    with _statements(db) as sent:
        async with db.write() as session:
            session.add(obj)
            await session.flush()
    return sent


def _kinds(statements: list[str]) -> list[str]:
    return [s.split()[0] for s in statements]


# --- rows.py: insert_objects, update_object, mark_loaded, update_returning (every backend) --------

@pytest.mark.parametrize("make", [Thread, functools.partial(new_row, Thread)], ids=["constructor", "new_row"])
def test_insert_objects_leaves_detached_objects_with_their_seq_that_a_later_add_updates(migrated_url, make):
    # (rows.new_row: the objects the run path builds, with no attribute events, behave as built ones)
    async def scenario(db: Database) -> None:
        first, second = _thread(1, make), _thread(2, make)
        with _statements(db) as sent:
            async with db.write() as session:
                await insert_objects(session, first, second)
        assert _kinds(sent) == ["INSERT", "INSERT"], f"insert_objects sent {sent}"
        for obj in (first, second):
            state = inspect(obj)
            assert state.detached, "make_transient_to_detached no longer leaves the object detached"
            assert not state.expired_attributes and not state.unloaded, \
                f"attributes given before the insert are no longer loaded: {state.unloaded}"
            assert obj.tool_resources == {}  # readable with no session behind it
        async with db.read() as session:
            seqs = dict((await session.execute(select(Thread.id, Thread.seq))).all())
        assert (first.seq, second.seq) == (seqs["thread_1"], seqs["thread_2"]), \
            "inserted_primary_key no longer gives the row's seq"

        first.metadata_ = {"k": "v"}
        sent = await _added_and_flushed(db, first)
        assert len(sent) == 1 and re.match(r"UPDATE threads SET metadata=\S+ WHERE threads\.seq = ", sent[0]), \
            f"adding an object insert_objects wrote no longer UPDATEs only what changed since: {sent}"
        async with db.read() as session:
            rows = (await session.execute(select(Thread.id, Thread.metadata_).order_by(Thread.seq))).all()
        assert rows == [("thread_1", {"k": "v"}), ("thread_2", {})]

    _on(migrated_url, scenario)


def test_insert_objects_refuses_an_unset_attribute_which_the_detached_object_would_expire():
    # Why the refusal: a transient object's unset attribute is not in its dict, and
    # make_transient_to_detached expires it, so reading it later fails with no session to load it.
    partial = Thread(id="thread_1", tenant="t", created_at=1, metadata_={})
    set_committed_value(partial, "seq", 1)
    make_transient_to_detached(partial)
    assert inspect(partial).expired_attributes == {"tool_resources"}, \
        "make_transient_to_detached no longer expires exactly the unset attributes"

    unset = Thread(id="thread_2", tenant="t", created_at=1, metadata_={})
    assert unset.tool_resources is None  # reading an unset attribute does not set it...
    with pytest.raises(ValueError, match=r"Thread\.tool_resources is not set"):
        asyncio.run(insert_objects(None, unset))  # ...so it is refused before any statement  # type: ignore[arg-type]


def test_new_row_holds_what_the_constructor_holds_and_refuses_what_it_refuses():
    given = {"id": "thread_1", "tenant": "t", "created_at": 1, "tool_resources": {}, "metadata_": {"k": "v"}}
    built, made = Thread(**given), new_row(Thread, **given)
    assert type(made) is Thread and inspect(made).transient
    assert {a: getattr(made, a) for a in given} == {a: getattr(built, a) for a in given}
    assert made.seq is None and built.seq is None
    made.metadata_ = {"changed": True}  # an instrumented object: changes are seen as on a built one
    assert inspect(made).modified and made.metadata_ == {"changed": True}
    for make in (Thread, functools.partial(new_row, Thread)):
        with pytest.raises(TypeError, match="'nope' is an invalid keyword argument for Thread"):
            make(**given, nope=1)
    with pytest.raises(TypeError, match="'metadata' is an invalid keyword argument for Thread"):
        new_row(Thread, metadata={})  # (the column's name, not the attribute's: the constructor takes
        # it, as the declarative base's ``metadata``, and sets it on the object, writing nothing)
    with pytest.raises(TypeError, match="'seq' is an invalid keyword argument for Thread"):
        new_row(Thread, seq=3)  # (the database gives it)


def test_update_object_and_mark_loaded_leave_no_change_for_a_flush_to_write(migrated_url):
    async def scenario(db: Database) -> None:
        detached, other = _thread(1), _thread(2)
        async with db.write() as session:
            await insert_objects(session, detached, other)

        with _statements(db) as sent:
            async with db.write() as session:
                # A detached object, as the executor's run, message and steps are between transactions.
                detached.metadata_ = {"n": 1}
                await update_object(session, detached, "metadata_")
                assert not inspect(detached).attrs.metadata_.history.has_changes(), \
                    "set_committed_value no longer clears the attribute's pending change"
                session.add(detached)
                assert not session.is_modified(detached)
                await session.flush()
        assert _kinds(sent) == ["UPDATE"], f"a flush wrote again what update_object had written: {sent}"

        with _statements(db) as sent:
            async with db.write() as session:
                held = await session.get(Thread, other.seq)
                # A Core write the ORM does not see, then marked as what the row holds.
                await session.execute(update(Thread).where(Thread.seq == held.seq).values(created_at=20))
                mark_loaded(held, created_at=20)
                assert held.created_at == 20 and not session.is_modified(held), \
                    "mark_loaded no longer leaves the object unmodified"
                await session.flush()
                # Why update_object wants its object detached: a held object's pending change is
                # flushed (autoflush) before any statement, update_object's own included.
                held.metadata_ = {"n": 2}
                await update_object(session, held, "metadata_")
        assert _kinds(sent) == ["SELECT", "UPDATE", "UPDATE", "UPDATE"], \
            f"mark_loaded left a change to flush, or autoflush changed: {sent}"
        async with db.read() as session:
            rows = (await session.execute(select(Thread.metadata_, Thread.created_at).order_by(Thread.seq))).all()
        assert rows == [({"n": 1}, 1), ({"n": 2}, 20)]

    _on(migrated_url, scenario)


def test_update_object_where_is_a_compare_and_set_that_reports_what_it_did(migrated_url):
    """The run state machine's ``move`` relies on this: the UPDATE matches only while the row
    still holds an expected value, the driver's rowcount says whether it did (asyncpg's and
    sqlite3's), and only then does the object take the values."""
    async def scenario(db: Database) -> None:
        thread = _thread(1)
        async with db.write() as session:
            await insert_objects(session, thread)
        async with db.write() as session:
            moved = await update_object_where(session, thread, {"created_at": 5}, {"created_at": (1, 3)})
        assert moved and thread.created_at == 5 and not inspect(thread).attrs.created_at.history.has_changes()
        async with db.write() as session:
            moved = await update_object_where(session, thread, {"created_at": 9}, {"created_at": (1,)})
        assert not moved, "a compare-and-set that matched no row reported an update (rowcount)"
        assert thread.created_at == 5, "a refused compare-and-set changed the object"
        async with db.read() as session:
            assert await session.scalar(select(Thread.created_at).where(Thread.seq == thread.seq)) == 5

    _on(migrated_url, scenario)


def test_row_writes_go_straight_to_sqlite3_unless_the_session_has_pending_changes(migrated_url):
    """On SQLite the row helpers hand their statement to the session's sqlite3 connection (no
    SQLAlchemy statement path); with an ORM change pending they go through the session, whose
    autoflush writes that change first (a row the new one refers to is there before it). On
    PostgreSQL they always go through SQLAlchemy."""
    sqlite = migrated_url.startswith("sqlite")

    async def scenario(db: Database) -> None:
        first = _thread(1)
        raw: list[str] = []
        with _statements(db, raw) as sent:
            async with db.write() as session:
                await insert_objects(session, first)
                first.metadata_ = {"n": 1}
                await update_object(session, first, "metadata_")
                assert await update_object_where(session, first, {"created_at": 3}, {"created_at": (1,)})
        assert _kinds(sent) == ["INSERT", "UPDATE", "UPDATE"]
        assert _kinds(raw) == (["INSERT", "UPDATE", "UPDATE"] if sqlite else [])
        assert first.seq is not None and first.created_at == 3

        raw.clear()
        with _statements(db, raw) as sent:
            async with db.write() as session:
                pending = _thread(2)
                session.add(pending)  # an ORM change the session would flush before any statement
                later = _thread(3)
                await insert_objects(session, later)
        assert _kinds(sent) == ["INSERT", "INSERT"] and raw == [], \
            f"a write went past the session's pending change: {sent}"
        async with db.read() as session:
            rows = (await session.execute(select(Thread.id, Thread.metadata_, Thread.created_at)
                                          .order_by(Thread.seq))).all()
        assert rows == [("thread_1", {"n": 1}, 3), ("thread_2", {}, 2), ("thread_3", {}, 3)]
        assert later.seq > pending.seq

    _on(migrated_url, scenario)


def test_has_pending_answers_what_new_dirty_and_deleted_answer(migrated_url):
    """``has_pending`` reads the session's private collections (``_new``, ``_deleted``, the
    identity map's ``_modified``) where ``new or dirty or deleted`` builds three sets: the same
    answer in every state an object can leave a session in."""

    async def scenario(db: Database) -> list[tuple[str, bool, bool]]:
        seen = []

        def check(what: str, session: AsyncSession) -> None:
            sync = session.sync_session
            seen.append((what, engine_module.has_pending(sync), bool(sync.new or sync.dirty or sync.deleted)))

        async with db.write() as session:
            check("empty", session)
            thread = _thread(1)
            session.add(thread)
            check("added", session)
            await session.flush()
            check("flushed", session)
            thread.metadata_ = {"n": 1}
            check("modified", session)
            await session.flush()
            check("modified, flushed", session)
            await session.delete(thread)
            check("deleted", session)
            await session.flush()
            check("deleted, flushed", session)
        return seen

    seen = _on(migrated_url, scenario)
    assert [(what, fast) for what, fast, _ in seen] == [
        ("empty", False), ("added", True), ("flushed", False), ("modified", True), ("modified, flushed", False),
        ("deleted", True), ("deleted, flushed", False)]
    assert all(fast == public for _, fast, public in seen), seen


def test_load_detached_reads_what_the_orm_reads_into_objects_the_session_does_not_hold(migrated_url):
    """rows.load_detached (the run path's reads): every column converted as the ORM converts it
    (JSON, floats, None), the extra columns after the object's, and objects that are detached —
    changing one writes nothing. On SQLite the read goes straight to sqlite3."""
    sqlite = migrated_url.startswith("sqlite")

    async def scenario(db: Database) -> None:
        given = {"name": None, "description": "d", "model": "m", "instructions": None,
                 "tools": [{"type": "function", "function": {"name": "f"}}], "tool_resources": {"a": [1, 2.5]},
                 "metadata_": {"k": "v"}, "temperature": 0.25, "top_p": None, "response_format": "auto",
                 "reasoning_effort": None}
        async with db.write() as session:
            await insert_objects(session, Assistant(id="asst_1", tenant="t", created_at=7, **given),
                                 Assistant(id="asst_2", tenant="t", created_at=8, **{**given, "response_format": None}))
        statement = (select(*columns_of(Assistant), literal(41) + 1)
                     .where(Assistant.tenant == bindparam("tenant")).order_by(Assistant.seq))
        async with db.read() as session:
            orm = (await session.scalars(select(Assistant).order_by(Assistant.seq))).all()
            expected = [{a: getattr(o, a) for a in inspect(Assistant).column_attrs.keys()} for o in orm]
        with _statements(db) as sent:
            async with db.write() as session:
                loaded = await load_detached(session, Assistant, statement, {"tenant": "t"})
                assert len(session.identity_map) == 0, "load_detached put its objects in the session"
                assert [extra for _, extra in loaded] == [42, 42]
                assert [{a: getattr(o, a) for a in expected[0]} for o, _ in loaded] == expected
                loaded[0][0].metadata_ = {"changed": True}
        assert all(inspect(o).detached and not inspect(o).expired_attributes for o, _ in loaded)
        # (on SQLite the SELECT itself went straight to sqlite3, past SQLAlchemy's statement events)
        assert _kinds(sent) == ([] if sqlite else ["SELECT"]), f"changing a loaded object wrote something: {sent}"
        async with db.read() as session:
            assert await session.scalar(select(Assistant.metadata_).where(Assistant.id == "asst_1")) == {"k": "v"}
        # A loaded object added to a session later: only what changed since its load is written.
        second = loaded[1][0]
        second.description = "changed"
        sent = await _added_and_flushed(db, second)
        assert len(sent) == 1 and re.match(r"UPDATE assistants SET description=\S+ WHERE assistants\.seq = ", sent[0]), \
            f"a loaded object, added, no longer UPDATEs only what changed: {sent}"
        if sqlite:
            with pytest.raises(ValueError, match="expanding IN"):
                async with db.read() as session:
                    await load_detached(session, Assistant, select(*columns_of(Assistant))
                                        .where(Assistant.id.in_(["asst_1"])), {})

    _on(migrated_url, scenario)


def test_update_returning_gives_orm_objects_from_one_update_statement(migrated_url):
    async def scenario(db: Database) -> None:
        async with db.write() as session:
            await insert_objects(session, _thread(1), _thread(2), _thread(3))
        claimed = select(Thread.id).where(Thread.tenant == "t").order_by(Thread.seq).limit(2)
        with _statements(db) as sent:
            async with db.write() as session:
                rows = (await session.scalars(
                    update_returning(Thread).where(Thread.id.in_(claimed.scalar_subquery()))
                    .values(metadata_={"claimed": True}))).all()
        assert _kinds(sent) == ["UPDATE"], f"synchronize_session=False no longer sends the UPDATE alone: {sent}"
        assert sorted((type(r), r.id, r.metadata_) for r in rows) == [
            (Thread, "thread_1", {"claimed": True}), (Thread, "thread_2", {"claimed": True})], \
            "UPDATE ... RETURNING an entity no longer gives that entity's objects with the new values"

        # The documented limit: an object the session already holds is returned unrefreshed.
        async with db.write() as session:
            held = await session.scalar(select(Thread).where(Thread.id == "thread_3"))
            rows = (await session.scalars(
                update_returning(Thread).where(Thread.id == "thread_3").values(metadata_={"late": True}))).all()
        assert rows == [held] and held.metadata_ == {}, \
            "update_returning now refreshes objects the session holds: update its docstring"

    _on(migrated_url, scenario)


# --- engine.py: JSON columns, and the thread read of the inline engine (every backend) ------------

def test_json_columns_are_written_by_orjson_on_every_backend(migrated_url, databases):
    async def scenario(db: Database) -> str:
        async with db.write() as session:
            session.add(_thread(1, metadata_={"text": "é", "n": [1, 2.5, None, True]}))
        as_text = "metadata" if databases.backend == "sqlite" else "metadata::text"
        async with db.read() as session:
            return (await session.execute(text(f"SELECT {as_text} FROM threads"))).scalar_one()

    assert _on(migrated_url, scenario) == '{"text":"é","n":[1,2.5,null,true]}', \
        "the engine's json_serializer is no longer what writes JSON columns"


def test_inline_sync_engine_lets_a_thread_read_on_its_own_connection_and_is_none_elsewhere(migrated_url, databases):
    async def scenario(db: Database) -> list[str] | None:
        async with db.write() as session:
            session.add_all([_thread(1), _thread(2)])
            writing = inline_sync_engine(session)  # (bound to the writer's Connection: its engine)
            assert writing is None or isinstance(writing, Engine), writing
        async with db.read() as session:
            await session.execute(select(literal(1)))  # the loop's session holds a connection meanwhile
            engine = inline_sync_engine(session)
            if engine is None:
                return None

            def read() -> list[str]:
                with engine.connect() as connection:
                    return list(connection.execute(select(Thread.id).order_by(Thread.seq)).scalars())

            return await asyncio.to_thread(read)

    read = _on(migrated_url, scenario)
    assert read == (["thread_1", "thread_2"] if databases.backend == "sqlite" else None)


# --- engine.py: the inline SQLite engine (a file in tmp_path) -------------------------------------

def test_async_engine_takes_the_stdlib_sqlite_driver_because_it_is_marked_async(tmp_path):
    plain = create_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    with pytest.raises(InvalidRequestError, match="requires an async driver"):
        AsyncEngine(plain)
    plain.dialect.is_async = True
    AsyncEngine(plain)  # accepted: the flag is all that AsyncEngine checks

    async def scenario(db: Database) -> tuple[str, bool, type]:
        async with db.read() as session:
            connection = await session.connection()
            driver = connection.sync_connection.connection.driver_connection
        dialect = db.engine.sync_engine.dialect
        return dialect.driver, dialect.is_async, type(driver)

    assert _on(_sqlite_url(tmp_path), scenario) == ("pysqlite", True, _InlineConnection)


def test_async_session_soft_closes_the_cursor_of_a_row_returning_core_statement(tmp_path, monkeypatch):
    calls: list[sqlite3.Cursor] = []

    async def soft_close(cursor) -> None:
        calls.append(cursor)

    monkeypatch.setattr(_InlineCursor, "_async_soft_close", soft_close)

    async def scenario(db: Database) -> list:
        async with db.read() as session:
            return (await session.execute(select(literal(1)))).all()

    assert _on(_sqlite_url(tmp_path), scenario) == [(1,)]
    assert len(calls) == 1 and isinstance(calls[0], _InlineCursor), \
        "AsyncSession no longer calls _async_soft_close on the cursor: _InlineCursor may lose it"

    # Without the method, the same statement fails: why _InlineCursor has it.
    bare = create_engine(f"sqlite:///{tmp_path / 'bare.db'}")
    bare.dialect.is_async = True

    async def without() -> None:
        engine = AsyncEngine(bare)
        try:
            async with AsyncSession(engine) as session:
                await session.execute(select(literal(1)))
        finally:
            await engine.dispose()

    with pytest.raises(AttributeError, match="_async_soft_close"):
        asyncio.run(without())


def test_the_inline_engine_is_for_sessions_async_connection_execute_refuses_it(tmp_path):
    async def scenario(db: Database) -> list:
        async with db.engine.connect() as connection:
            with pytest.raises(AwaitRequired):
                await connection.execute(select(literal(1)))
            return await connection.run_sync(lambda c: c.execute(select(literal(2))).all())

    assert _on(_sqlite_url(tmp_path), scenario) == [(2,)], \
        "run_sync on the inline engine no longer runs the sync statement"


def test_the_begin_event_opens_a_real_transaction_that_a_rollback_undoes(tmp_path):
    path = tmp_path / "shortcuts.db"

    async def scenario(db: Database) -> None:
        async with db.write() as session:
            await session.execute(text("CREATE TABLE t (n INTEGER)"))
        async with db.read() as session:
            await session.execute(text("SELECT count(*) FROM t"))
            driver = (await session.connection()).sync_connection.connection.driver_connection
            assert driver.in_transaction, "a read no longer runs inside the BEGIN of the begin event"
        assert not driver.in_transaction, "a plain session.close() no longer ends the read's transaction"
        # (the one connection out is the writer's, held between write transactions: Database.write)
        assert db.engine.sync_engine.pool.checkedout() == 1, "a plain session.close() no longer returns the connection"

        with contextlib.suppress(RuntimeError):
            async with db.write() as session:
                await session.execute(text("INSERT INTO t VALUES (1)"))
                # Uncommitted: another connection does not see it.
                assert sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchone() == (0,)
                raise RuntimeError("rejected")
        async with db.write() as session:
            await session.execute(text("INSERT INTO t VALUES (2)"))
        assert sqlite3.connect(path).execute("SELECT n FROM t").fetchall() == [(2,)], \
            "the BEGIN sent by the begin event no longer makes the session's writes one transaction"

    _on(_sqlite_url(tmp_path), scenario)



def _count_greenlet_spawns(monkeypatch) -> list[str]:
    """The names of the functions AsyncSession hands to ``greenlet_spawn`` from now on."""
    import sqlalchemy.ext.asyncio.session as async_session_module
    spawned: list[str] = []
    real_spawn = async_session_module.greenlet_spawn

    async def counting_spawn(fn, *args, **kwargs):
        spawned.append(getattr(fn, "__name__", repr(fn)))
        return await real_spawn(fn, *args, **kwargs)

    monkeypatch.setattr(async_session_module, "greenlet_spawn", counting_spawn)
    return spawned


def test_sqlite_write_transactions_begin_on_sqlite3_and_the_session_joins_them(tmp_path):
    """``Database.write`` on SQLite: BEGIN and COMMIT sent to sqlite3 on the one held writer
    connection, SQLAlchemy's session transaction begun only if an ORM statement or flush needs
    it, on that connection, in that transaction (the begin event sends no second BEGIN): a row
    shortcut's write and an ORM statement's commit and roll back together, and a commit that
    fails leaves nothing open."""
    path = tmp_path / "shortcuts.db"

    async def scenario(db: Database) -> None:
        async with db.write() as session:
            await session.execute(text("CREATE TABLE p (id INTEGER PRIMARY KEY)"))
            await session.execute(text("CREATE TABLE c (p INTEGER REFERENCES p(id))"))
        writer = db._writer_connection().sync_connection.connection.driver_connection
        async with db.write() as session:
            raw = engine_module.raw_transaction(session)
            assert raw is writer and raw.in_transaction
            assert rows_module._sqlite_connection(session) is raw
            assert not session.sync_session.in_transaction(), "a row shortcut began SQLAlchemy's transaction"
            raw.execute("INSERT INTO p VALUES (1)")
        assert sqlite3.connect(path).execute("SELECT id FROM p").fetchall() == [(1,)]

        for outcome in ("rolled back", "committed"):
            with contextlib.suppress(RuntimeError):
                async with db.write() as session:
                    rows_module._sqlite_connection(session).execute("INSERT INTO p VALUES (2)")
                    await session.execute(text("INSERT INTO p VALUES (3)"))  # the session joins
                    assert session.sync_session.in_transaction()
                    assert (await session.connection()).sync_connection.connection.driver_connection is writer
                    rows_module._sqlite_connection(session).execute("INSERT INTO p VALUES (4)")
                    assert sqlite3.connect(path).execute("SELECT count(*) FROM p").fetchone() == (1,)
                    if outcome == "rolled back":
                        raise RuntimeError(outcome)
            assert not writer.in_transaction
            expected = [(1,)] if outcome == "rolled back" else [(1,), (2,), (3,), (4,)]
            assert sqlite3.connect(path).execute("SELECT id FROM p ORDER BY id").fetchall() == expected, outcome

        # A commit inside the block ends sqlite3's transaction: what follows is a transaction of
        # the session's own, on the same connection (not statements left in autocommit).
        with contextlib.suppress(RuntimeError):
            async with db.write() as session:
                rows_module._sqlite_connection(session).execute("INSERT INTO p VALUES (5)")
                await session.commit()
                raw = rows_module._sqlite_connection(session)
                assert raw is writer and raw.in_transaction and session.sync_session.in_transaction()
                raw.execute("INSERT INTO p VALUES (6)")
                raise RuntimeError("the part after the commit is rolled back")
        assert not writer.in_transaction
        assert sqlite3.connect(path).execute("SELECT max(id) FROM p").fetchone() == (5,)

        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            async with db.write() as session:
                raw = engine_module.raw_transaction(session)
                raw.execute("PRAGMA defer_foreign_keys = ON")
                raw.execute("INSERT INTO c VALUES (99)")  # checked at COMMIT, which fails
        assert not writer.in_transaction, "a failed commit left the writer's transaction open"
        async with db.write() as session:
            engine_module.raw_transaction(session).execute("INSERT INTO c VALUES (1)")
        assert sqlite3.connect(path).execute("SELECT p FROM c").fetchall() == [(1,)]

    _on(_sqlite_url(tmp_path), scenario)


def test_sqlite_sessions_run_their_transactions_and_statements_without_a_greenlet(tmp_path, monkeypatch):
    """``Database.write``/``read`` on SQLite begin, commit, roll back and close the sync session
    directly, and :class:`InlineSession` runs ``execute``/``scalar``/``scalars`` on it directly: no
    greenlet is spawned, and the results are AsyncSession's (buffered rows, a rollback that undoes).
    ``get`` and ``flush``: the next test."""
    spawned = _count_greenlet_spawns(monkeypatch)

    async def scenario(db: Database) -> tuple:
        async with db.write() as session:
            await session.execute(text("CREATE TABLE t (n INTEGER)"))
            await session.execute(text("INSERT INTO t VALUES (1), (2)"))
        with contextlib.suppress(RuntimeError):
            async with db.write() as session:
                await session.execute(text("INSERT INTO t VALUES (3)"))
                raise RuntimeError("rolled back")
        async with db.read() as session:
            rows = [tuple(r) for r in (await session.execute(text("SELECT n FROM t ORDER BY n"))).all()]
            total = await session.scalar(text("SELECT sum(n) FROM t"))
            listed = list(await session.scalars(text("SELECT n FROM t ORDER BY n DESC")))
        return rows, total, listed, type(session).__name__

    assert _on(_sqlite_url(tmp_path), scenario) == ([(1,), (2,)], 3, [2, 1], "InlineSession")
    assert spawned == [], f"an SQLite session spawned greenlets: {spawned}"


def test_inline_session_loads_and_flushes_orm_objects_like_async_session(migrated_url, monkeypatch):
    """The ORM through :class:`InlineSession` (SQLite, no greenlet) and AsyncSession (PostgreSQL,
    a greenlet a call) alike: an object added and flushed, read back by ``get`` and ``scalars``, its
    change flushed and committed."""
    spawned = _count_greenlet_spawns(monkeypatch)

    async def scenario(db: Database) -> tuple:
        thread = Thread(id="thread_inline", tenant="t1", created_at=1, tool_resources={}, metadata_={})
        async with db.write() as session:
            session.add(thread)
            await session.flush()
            seq = thread.seq
            got = await session.get(Thread, seq)
            assert got is thread
            got.metadata_ = {"k": "v"}
        async with db.read() as session:
            again = (await session.scalars(select(Thread).where(Thread.id == "thread_inline"))).one()
            return seq is not None, again.metadata_, type(session).__name__

    made, metadata, kind = _on(migrated_url, scenario)
    assert made and metadata == {"k": "v"}, "the flushed change was not read back"
    if migrated_url.startswith("sqlite"):
        assert kind == "InlineSession" and spawned == [], f"an SQLite session spawned greenlets: {spawned}"
    else:
        assert kind == "AsyncSession" and {"flush", "get"} <= set(spawned), \
            f"PostgreSQL's AsyncSession no longer goes through greenlet_spawn: {spawned}"


def test_sqlite_write_transactions_take_turns_with_one_session_each_finding_it_as_new(migrated_url):
    """``Database.write`` on SQLite hands the next writer the session the last one used (writers
    take turns; making and closing one a transaction cost more than most run-path transactions),
    closed if the ORM used it: no object, pending change, transaction or begun listener passes
    from one transaction to the next. One that leaves another module's key in ``info`` (with the
    listener ``files_queued`` attaches) is dropped, not handed on."""
    if not migrated_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's write sessions are the pool's, one a transaction")
    from assistantd.vector_stores import ingest

    async def scenario(db: Database) -> None:
        async with db.write() as first:
            pass
        async with db.write() as session:
            assert session is first, "an untouched session was not handed on"
            thread = Thread(id="thread_turns", tenant="t1", created_at=1, tool_resources={}, metadata_={})
            session.add(thread)
            await session.flush()
            assert session.sync_session.identity_map
        async with db.write() as session:
            assert session is first
            sync = session.sync_session
            assert not sync.identity_map and not sync.new and not sync.dirty, "the last transaction's objects"
            assert not sync.in_transaction()
            assert rows_module._sqlite_connection(session) is engine_module.raw_transaction(session)
            got = await session.get(Thread, thread.seq)
            assert got is not thread and got.id == "thread_turns"
        with contextlib.suppress(RuntimeError):
            async with db.write() as session:
                session.add(Thread(id="thread_rolled_back", tenant="t1", created_at=1, tool_resources={},
                                   metadata_={}))
                raise RuntimeError("rolled back")
        async with db.write() as session:
            assert session is first and not session.sync_session.new, "a rolled-back object is still pending"
            assert (await session.scalar(select(Thread.id).where(Thread.id == "thread_rolled_back"))) is None

        woken: list[bool] = []
        monkeypatch = pytest.MonkeyPatch()
        monkeypatch.setattr(ingest, "_committed", lambda _session: woken.append(True))
        try:
            with contextlib.suppress(RuntimeError):
                async with db.write() as session:
                    ingest.files_queued(session)
                    raise RuntimeError("rolled back: its after_commit listener stays on the session")
            async with db.write() as session:
                assert session is not first, "a session with another module's info was handed on"
                await session.scalar(select(Thread.id).limit(1))  # (the session joins: its commit is SQLAlchemy's)
            assert woken == [], "a rolled-back transaction's listener fired on a later commit"
        finally:
            monkeypatch.undo()

    _on(migrated_url, scenario)


def test_a_large_write_commits_in_a_worker_thread_while_the_loop_runs(tmp_path, monkeypatch):
    """``Database.write(commit_in_thread=True)``: the sync session's commit works from a worker
    thread (nothing in the inline engine's commit path calls back into the loop), the loop runs
    meanwhile, and a failed transaction still rolls back."""
    path = tmp_path / "shortcuts.db"
    commit = engine_module.commit_blocking
    seen: dict[str, Any] = {"threads": set(), "ticks_during_commit": 0}
    ticks = 0

    def spying_commit(session: AsyncSession) -> None:
        seen["threads"].add(threading.get_ident())
        before = ticks
        commit(session)
        deadline = time.monotonic() + 5  # the loop's ticker runs while this thread holds the commit
        while ticks == before and time.monotonic() < deadline:
            time.sleep(0.001)
        seen["ticks_during_commit"] += ticks - before

    monkeypatch.setattr(engine_module, "commit_blocking", spying_commit)

    async def scenario(db: Database) -> list[tuple[int, int]]:
        nonlocal ticks
        async with db.write() as session:
            await session.execute(text("CREATE TABLE t (n INTEGER, payload TEXT)"))

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            async with db.write(commit_in_thread=True) as session:
                await session.execute(text("INSERT INTO t VALUES (1, :p)"), {"p": "x" * 1_000_000})
            with contextlib.suppress(RuntimeError):
                async with db.write(commit_in_thread=True) as session:
                    await session.execute(text("INSERT INTO t VALUES (2, 'rolled back')"))
                    raise RuntimeError("rejected")
        finally:
            task.cancel()
        async with db.read() as session:
            return [tuple(r) for r in (await session.execute(text("SELECT n, length(payload) FROM t"))).all()]

    assert _on(_sqlite_url(tmp_path), scenario) == [(1, 1_000_000)], \
        "the worker thread's commit lost the write, or the failed transaction was kept"
    assert len(seen["threads"]) == 1 and threading.get_ident() not in seen["threads"], \
        "the commit did not run in a worker thread"
    assert seen["ticks_during_commit"] > 0, "the event loop did not run while the commit was in its thread"
    assert sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchone() == (1,)
