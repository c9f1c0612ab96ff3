"""The database handle: an async engine plus the two ways to open a session.

``read()`` is a plain session. ``write()`` is a transaction that commits on success and rolls
back on any exception, so a rejected request leaves nothing half-written. On SQLite, writers in
this process take turns behind one lock: SQLite allows a single writer, and queuing in asyncio is
cheaper and fairer than retrying on ``SQLITE_BUSY``. PostgreSQL needs no such lock.

The shortcuts this module holds, all for SQLite (what they save is in the docstrings below), each
pinned by tests/test_db_shortcuts.py where it relies on SQLAlchemy's behaviour:

- the *inline* engine (:func:`_inline_sqlite_engine`): the stdlib sqlite3 driver run on the
  event loop, marked async so that SQLAlchemy's async layer takes it, instead of aiosqlite's
  thread hop per statement. Use it through sessions (``read()``/``write()``, ``run_sync``):
  ``AsyncConnection.execute`` insists on a real await and refuses it. A read too long to hold
  the loop gets its own connection in a thread (:func:`inline_sync_engine`);
- ``BEGIN`` sent straight to the driver when SQLAlchemy begins a transaction;
- write transactions on one held connection, begun and committed on sqlite3, the session joining
  them only when the ORM is used (:meth:`Database.write`);
- a large transaction's commit run in a worker thread (:func:`commit_blocking`);
- a session closed with a plain call rather than its own ``async with`` exit, which runs its
  close in a task of its own so that a cancellation cannot cut it short; that costs a task and a
  turn of the event loop per session, and an inline SQLite close never suspends, so nothing can
  cut it short anyway;
- no greenlet: SQLite's sessions are :class:`InlineSession`, which runs its statements on the
  sync session directly, and ``write()``/``read()`` begin, commit, roll back and close that sync
  session directly (AsyncSession spawns a greenlet and switches to it for each call).

JSON columns are written by orjson on both backends (:func:`json_text`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator

import orjson
from anyio import to_thread
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio.result import _ensure_sync_result


log = logging.getLogger("assistantd.db")

RAW_TRANSACTION = "assistantd.raw_transaction"  # a write session's info: its sqlite3 connection, in its transaction


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _inline_sqlite_engine(url)
        else:
            self.engine = create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True,
                                              json_serializer=json_text)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False,
                                            class_=InlineSession if self.is_sqlite else AsyncSession)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._writer: AsyncConnection | None = None
        self._idle_writer_session: AsyncSession | None = None  # SQLite: the next write transaction's

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        if not self.is_sqlite:
            async with self._sessions() as session:
                yield session
            return
        session = self._sessions()
        try:
            yield session
        finally:
            session.sync_session.close()  # (inline: see write())

    @contextlib.asynccontextmanager
    async def write(self, *, commit_in_thread: bool = False) -> AsyncIterator[AsyncSession]:
        """A transaction. ``commit_in_thread`` (SQLite; for a transaction that wrote megabytes):
        the commit runs in a worker thread, where sqlite3 lets go of the GIL while it writes the
        pages, instead of holding the event loop for it (8 MB of messages: a ~26 ms commit).

        On SQLite the transaction is sqlite3's own, on one connection this process holds for its
        writers (they take turns behind the lock): ``BEGIN`` and ``COMMIT`` go to the driver, and
        the run path's rows (:mod:`assistantd.db.rows`) are read and written on it directly. The
        session joins that transaction on that connection only when an ORM statement or flush
        needs it (the begin event then sends no second ``BEGIN``), and its commit, called on the
        sync session (no greenlet: the inline engine never awaits, as :func:`commit_blocking`
        relies on too), flushes and commits. Measured: 228 µs an empty transaction through
        AsyncSession, 83 µs through a sync session, ~51 µs through the pooled sync session,
        ~23 µs this way (sqlite3's own BEGIN and COMMIT: 1–7 µs)."""
        if not self.is_sqlite:
            async with self._sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock:
            writer = self._writer_connection()
            raw = writer.sync_connection.connection.driver_connection
            session, self._idle_writer_session = self._idle_writer_session, None
            if session is None or session.bind is not writer:
                session = self._sessions(bind=writer)
            session.sync_session.info[RAW_TRANSACTION] = raw
            try:
                if raw.in_transaction:  # (cannot be, writers taking turns: never build on one left open)
                    log.error("the SQLite writer connection was left in a transaction; rolling it back")
                    raw.execute("ROLLBACK")
                raw.execute("BEGIN")
                try:
                    yield session
                except BaseException:
                    _finish(session, commit=False)
                    raise
                if commit_in_thread:
                    await to_thread.run_sync(commit_blocking, session)
                else:
                    _finish(session, commit=True)
            finally:
                self._idle_writer_session = _reusable(session)

    def _writer_connection(self) -> AsyncConnection:
        """SQLite: the connection every write transaction of this process takes in turn (they
        are serialised anyway), held open: no pool checkout and return per transaction."""
        writer = self._writer
        if writer is None or writer.sync_connection.closed or writer.sync_connection.invalidated:
            if writer is not None:
                writer.sync_connection.close()
            writer = self._writer = AsyncConnection(self.engine, self.engine.sync_engine.connect())
        return writer

    async def dispose(self) -> None:
        self._idle_writer_session = None
        if self._writer is not None:
            self._writer.sync_connection.close()
            self._writer = None
        await self.engine.dispose()


def json_text(value) -> str:
    """JSON columns' encoder: orjson (a message's 8 MB of text: ~2 ms, the stdlib's ~20 ms, on the
    event loop when SQLite writes inline); the stdlib's for what orjson does not take."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def commit_blocking(session: AsyncSession) -> None:
    """Commit ``session`` with blocking calls, off the event loop: the inline engine's statements
    never await (nothing in its commit path calls back into the loop), so its sync session can
    commit from a worker thread while the loop waits for it. Pinned by tests/test_db_shortcuts.py."""
    _finish(session, commit=True)


def raw_transaction(session: AsyncSession) -> sqlite3.Connection | None:
    """The sqlite3 connection of an SQLite write transaction (:meth:`Database.write`), in it."""
    return session.sync_session.info.get(RAW_TRANSACTION)


def _finish(session: AsyncSession, *, commit: bool) -> None:
    """End an SQLite write transaction: begun on sqlite3 (``BEGIN``), it may have been joined
    by the session (an ORM statement or flush began SQLAlchemy's transaction on the same
    connection, the begin event sending no second ``BEGIN``), whose commit then flushes what it
    holds and commits. Whatever fails, nothing is left open on the held connection."""
    sync = session.sync_session
    try:
        if commit:
            if sync.in_transaction() or has_pending(sync):
                sync.commit()
            _end_sqlite3(sync, "COMMIT")
    finally:
        if sync.in_transaction():
            sync.rollback()
        _end_sqlite3(sync, "ROLLBACK")


def has_pending(sync) -> bool:
    """Whether the sync session holds a change a flush would write: ``new or dirty or deleted``
    without building those three sets (their public properties do, each call; the run path asks
    before every statement). Pinned by tests/test_db_shortcuts.py."""
    return bool(sync._new or sync._deleted or sync.identity_map._modified)


def _reusable(session: AsyncSession) -> AsyncSession | None:
    """A SQLite write session after its transaction, closed, for the next one (writers take
    turns, so one session serves them all): a session costs ~6 µs to make and ~11 µs to close,
    and most write transactions leave theirs as they found it (the run path writes through
    sqlite3, :mod:`assistantd.db.rows`), so one that holds nothing is not closed again. None
    when the transaction left anything on it beyond its sqlite3 connection in ``info`` (a key
    of another module, with the instance-level listener that may go with it: ``files_queued``)."""
    sync = session.sync_session
    if len(sync.info) != 1:  # (RAW_TRANSACTION's alone)
        sync.close()
        return None
    if sync.in_transaction() or sync.identity_map or has_pending(sync):
        sync.close()
    return session


def _end_sqlite3(sync, statement: str) -> None:
    """``COMMIT`` or ``ROLLBACK`` a write session's sqlite3 transaction, if it is still open."""
    raw = sync.info.get(RAW_TRANSACTION)
    if raw is not None and raw.in_transaction:
        raw.execute(statement)


def inline_sync_engine(session: AsyncSession) -> Engine | None:
    """The sync engine behind ``session`` when its statements run inline on the event loop
    (SQLite), for a read too long to hold the loop: a worker thread may use a connection of its
    own from it (its connections are not tied to a thread). None on PostgreSQL, whose driver
    already leaves the loop free while a statement runs."""
    bind = session.get_bind()  # (a write transaction's is the writer's Connection: its engine, then)
    return bind.engine if bind.dialect.name == "sqlite" else None


def _inline_sqlite_engine(url: str) -> AsyncEngine:
    """An AsyncEngine whose SQLite calls run inline on the event loop.

    aiosqlite sends every statement to a worker thread and back; on a local WAL database those
    two thread hops cost more than the statement itself (measured here: a one-row insert
    transaction 1.9 ms via aiosqlite, 1.2 ms inline, reads 2.0 ms vs 1.0 ms under load). The
    stdlib sqlite3 driver does the same work without them. SQLAlchemy's async layer runs the sync
    driver unchanged inside its greenlet (nothing in it awaits); the engine is marked async so
    that AsyncEngine accepts it. Writers are serialised by :class:`Database`, so a statement
    never waits on a lock here, and blocking the loop for one statement is cheaper than a hop.
    """
    sync_url = url.replace("sqlite+aiosqlite:", "sqlite:", 1)
    # The pool must never make a checkout wait: a blocking wait here would stop the event loop
    # (and so the session that would return the connection). Overflow is unbounded.
    sync_engine = create_engine(
        sync_url, pool_size=32, max_overflow=-1, pool_use_lifo=True,
        connect_args={"check_same_thread": False, "timeout": 30, "factory": _InlineConnection},
        json_serializer=json_text)
    sync_engine.dialect.is_async = True
    _configure_sqlite(sync_engine)
    return AsyncEngine(sync_engine)


class InlineSession(AsyncSession):
    """SQLite's sessions: ``execute``, ``scalar``, ``scalars``, ``get``, ``flush``, ``commit`` and
    ``rollback`` call the sync session directly, where AsyncSession spawns a greenlet for each and
    switches to it. The inline engine never awaits (:func:`_inline_sqlite_engine`), so the greenlet
    only cost time; results are buffered and checked as AsyncSession's are. Pinned by
    tests/test_db_shortcuts.py."""

    async def execute(self, statement, params=None, *, execution_options=None, bind_arguments=None, **kw):
        options = {**(execution_options or {}), "prebuffer_rows": True}
        result = self.sync_session.execute(statement, params=params, execution_options=options,
                                           bind_arguments=bind_arguments, **kw)
        return await _ensure_sync_result(result, self.execute)

    async def scalar(self, statement, params=None, *, execution_options=None, bind_arguments=None, **kw):
        options = {**(execution_options or {}), "prebuffer_rows": True}
        return self.sync_session.scalar(statement, params=params, execution_options=options,
                                        bind_arguments=bind_arguments, **kw)

    async def get(self, entity, ident, **kw):
        return self.sync_session.get(entity, ident, **kw)

    async def flush(self, objects=None) -> None:
        self.sync_session.flush(objects)

    async def commit(self) -> None:
        """Within :meth:`Database.write` the transaction may be sqlite3's alone (the session never
        joined it): it is committed too, and what follows is a new one, the session's."""
        self.sync_session.commit()
        _end_sqlite3(self.sync_session, "COMMIT")

    async def rollback(self) -> None:
        self.sync_session.rollback()
        _end_sqlite3(self.sync_session, "ROLLBACK")


class _InlineCursor(sqlite3.Cursor):
    async def _async_soft_close(self) -> None:
        """AsyncSession calls this on an async driver's cursor after a row-returning Core
        statement; a stdlib cursor has nothing to release before its rows are read."""


class _InlineConnection(sqlite3.Connection):
    def cursor(self, factory=_InlineCursor):  # type: ignore[override]
        return super().cursor(factory)


def _configure_sqlite(sync_engine) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (the sqlite3
    # module's legacy mode starts them lazily and only before writes), as SQLAlchemy's docs advise.
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn):
        # Straight to the driver: SQLAlchemy's statement path (exec_driver_sql) costs ten times
        # the BEGIN itself, and every transaction starts here.
        raw = conn.connection.driver_connection
        if not raw.in_transaction:  # (a write transaction's connection is in one: Database.write)
            raw.execute("BEGIN")
