"""Writing mapped objects with single Core statements, for the paths every run takes.

The shortcut: the ORM's unit of work (flush) works out what changed, orders the statements and
refreshes the objects; for one known object per statement that bookkeeping costs several times
the statement (the run executor's profile showed flushes as the largest part of a run's CPU).
These helpers write an object with one ``INSERT`` or ``UPDATE`` of the table and leave it as the
ORM would have: inserted objects become *detached* with their primary key (so a later
``session.add`` of one updates it), and written attributes hold no pending change.

They are the only code that touches the ORM's state by hand (``set_committed_value``,
``make_transient_to_detached``); every SQLAlchemy behaviour they rely on is pinned by
tests/test_db_shortcuts.py, on SQLite and PostgreSQL.

On SQLite (whose driver runs inline on the event loop, :mod:`assistantd.db.engine`) the statement,
compiled once by SQLAlchemy, goes straight to the session's sqlite3 connection: SQLAlchemy's
statement path (greenlet, session, compiled-cache lookup, parameter processing, result) cost
~150 µs a statement, the driver's call ~10 µs, and a streamed run writes five such rows. Only
when the session holds no pending ORM change (which its own ``execute`` would flush first);
otherwise the statement goes through SQLAlchemy as on PostgreSQL.
"""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Update, bindparam, insert, inspect, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import instance_dict, set_committed_value
from sqlalchemy.orm.instrumentation import manager_of_class

from assistantd.db.engine import has_pending, json_text, raw_transaction


@functools.cache
def _columns(cls: type) -> tuple[tuple[str, str], ...]:
    """(attribute, column) names of a mapped class, but its autoincrement ``seq``."""
    return tuple((attr.key, attr.columns[0].key) for attr in inspect(cls).column_attrs if attr.key != "seq")


@functools.cache
def _insert(cls: type):
    # Built once, parameters apart: SQLAlchemy caches its compiled form.
    return insert(cls.__table__).values({column: bindparam(column) for _, column in _columns(cls)})


@functools.cache
def _update(cls: type, attributes: tuple[str, ...]):
    names = dict(_columns(cls))
    table = cls.__table__
    return (update(table).where(table.c.seq == bindparam("_seq"))
            .values({names[a]: bindparam(names[a]) for a in attributes}))


@dataclass(frozen=True, slots=True)
class _SQLiteStatement:
    """A statement compiled for sqlite3: its SQL, and its parameters' names in order, each
    with whether its column holds JSON (written as JSON text, ``None`` as ``null``, as
    SQLAlchemy's JSON type does)."""

    sql: str
    params: tuple[tuple[str, bool], ...]

    def execute(self, connection: sqlite3.Connection, values: dict[str, Any]) -> sqlite3.Cursor:
        return connection.execute(self.sql, [json_text(values[n]) if is_json else values[n]
                                             for n, is_json in self.params])


@functools.cache
def _for_sqlite(statement: Any, json_params: frozenset[str]) -> _SQLiteStatement:
    compiled = statement.compile(dialect=sqlite.dialect())
    return _SQLiteStatement(str(compiled), tuple((name, name in json_params) for name in compiled.positiontup))


@functools.cache
def _json_columns(cls: type) -> frozenset[str]:
    return frozenset(c.key for c in cls.__table__.columns if isinstance(c.type, JSON))


@functools.cache
def _manager(cls: type) -> Any:
    return manager_of_class(cls)


@functools.cache
def _settable(cls: type) -> frozenset[str]:
    return frozenset(attribute for attribute, _ in _columns(cls))


def new_row(cls: type, **values: Any) -> Any:
    """A new (transient) ``cls`` object holding ``values``, for :func:`insert_objects`: what
    ``cls(**values)`` makes, without the mapped constructor's attribute events (one per
    attribute, each recording history that nothing reads: the row is written by a Core
    ``INSERT`` of every column, and the object is then detached with no pending change). Built
    as the ORM builds an object it loads (its class manager's ``new_instance``, the values put
    in the instance's dict). 27 µs → ~1.5 µs for a run, timed here. An unknown attribute is a
    TypeError, as from the constructor."""
    unknown = values.keys() - _settable(cls)
    if unknown:
        raise TypeError(f"{sorted(unknown)[0]!r} is an invalid keyword argument for {cls.__name__}")
    return _built(cls, values)


def _built(cls: type, values: Any) -> Any:
    """A ``cls`` object holding ``values`` (a mapping, or (attribute, value) pairs) as loaded."""
    obj = _manager(cls).new_instance()
    instance_dict(obj).update(values)
    return obj


def _sqlite_connection(session: AsyncSession) -> sqlite3.Connection | None:
    """The session's sqlite3 connection, in its transaction, when a statement may go straight to
    it: SQLite, and nothing pending in the session (else None)."""
    sync = session.sync_session
    raw = raw_transaction(session)  # a write transaction's (Database.write)
    if raw is None and sync.bind.dialect.name != "sqlite":
        return None
    if has_pending(sync):
        return None
    if raw is not None and raw.in_transaction:  # (no SQLAlchemy transaction begun for it)
        return raw
    return sync.connection().connection.driver_connection


async def _execute(session: AsyncSession, statement: Any, cls: type, values: dict[str, Any]) -> tuple[int, Any]:
    """Execute ``statement`` with ``values``; return its row count and last inserted key."""
    raw = _sqlite_connection(session)
    if raw is not None:
        cursor = _for_sqlite(statement, _json_columns(cls)).execute(raw, values)
        return cursor.rowcount, cursor.lastrowid
    result = await session.execute(statement, values)
    return result.rowcount, result.inserted_primary_key[0] if result.context.isinsert else None


async def insert_objects(session: AsyncSession, *objects: Any) -> None:
    """INSERT each new (transient) object, every column given; ``seq`` comes back from the
    database.

    Every attribute but ``seq`` must have been set: the row is written as the object holds it,
    with no column default, and an attribute left unset would be *expired* on the detached
    object (reading it would fail far from here), so it is refused now with a ValueError.
    """
    for obj in objects:
        cls = type(obj)
        given = instance_dict(obj)
        try:
            values = {column: given[attribute] for attribute, column in _columns(cls)}
        except KeyError as missing:
            raise ValueError(f"insert_objects: {cls.__name__}.{missing.args[0]} is not set "
                             "(every attribute but seq must be)") from None
        _, seq = await _execute(session, _insert(cls), cls, values)
        set_committed_value(obj, "seq", seq)
        make_transient_to_detached(obj)


async def update_object(session: AsyncSession, obj: Any, *attributes: str) -> None:
    """UPDATE the row of a detached object with the current values of ``attributes``.

    Detached, as the run executor's objects are between transactions: a session that holds the
    object with those attributes changed flushes them itself before any statement (autoflush),
    so they would be written twice.
    """
    cls = type(obj)
    names = dict(_columns(cls))
    current = {a: getattr(obj, a) for a in attributes}
    await _execute(session, _update(cls, attributes), cls,
                   {"_seq": obj.seq, **{names[a]: v for a, v in current.items()}})
    mark_loaded(obj, **current)


# --- reads ----------------------------------------------------------------------------------------

@functools.cache
def _attributes(cls: type) -> tuple[tuple[str, Any], ...]:
    """(attribute, column) of every column of a mapped class, ``seq`` included, in mapping order."""
    return tuple((attr.key, attr.columns[0]) for attr in inspect(cls).column_attrs)


@functools.cache
def _attribute_names(cls: type) -> tuple[str, ...]:
    return tuple(attribute for attribute, _ in _attributes(cls))


def columns_of(cls: type) -> list[Any]:
    """The columns a statement for :func:`load_detached` selects first, in the order it reads them."""
    return [column for _, column in _attributes(cls)]


@dataclass(frozen=True, slots=True)
class _SQLiteSelect:
    sql: str
    params: tuple[str, ...]
    fixed: dict[str, Any]  # the values of the statement's own literals (an IN list's), by parameter name
    processors: tuple[Any, ...]  # per result column: SQLAlchemy's result processor of its type, or None


@functools.cache
def _select_for_sqlite(statement: Any, dialect: Any) -> _SQLiteSelect:
    compiled = statement.compile(dialect=dialect)
    if "POSTCOMPILE" in str(compiled):
        raise ValueError("load_detached: an expanding IN is not supported (write it as OR-ed equalities)")
    processors = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                       for column in statement.selected_columns)
    fixed = {name: value for name, value in compiled.params.items() if value is not None}
    return _SQLiteSelect(str(compiled), tuple(compiled.positiontup or ()), fixed, processors)


def _detached(cls: type, values: Any) -> Any:
    obj = _built(cls, zip(_attribute_names(cls), values))
    make_transient_to_detached(obj)
    return obj


async def load_detached(session: AsyncSession, cls: type, statement: Any, params: dict[str, Any]) -> list[tuple]:
    """Rows of ``statement`` — a Core ``select(*columns_of(cls), *more)`` — each as ``(obj,
    *more)``: ``obj`` a *detached* ``cls`` object with every column loaded, for reading only (the
    session does not hold it, so changing it writes nothing).

    The ORM's load (identity map, loader machinery, an instance state per row) was most of the
    cost of the reads every run makes: a thread with its active run, an assistant, the history
    (traced on the idle path: 0.8, 0.3, 0.4 ms, cold). Here the row's values are converted by
    SQLAlchemy's own result processors of the column types and set as loaded, as
    :func:`insert_objects` leaves an object. On SQLite the statement, compiled once, goes straight
    to the session's sqlite3 connection (see :func:`_execute`); on PostgreSQL through Core.
    """
    n = len(_attributes(cls))
    raw = _sqlite_connection(session)
    if raw is not None:
        select_ = _select_for_sqlite(statement, session.sync_session.bind.dialect)
        values = {**select_.fixed, **params}
        rows = raw.execute(select_.sql, [values[name] for name in select_.params]).fetchall()
        processors = select_.processors
        rows = [[value if process is None or value is None else process(value)
                 for process, value in zip(processors, row)] for row in rows]
    else:
        rows = (await session.execute(statement, params)).all()
    return [(_detached(cls, row[:n]), *row[n:]) for row in rows]


def mark_loaded(obj: Any, **values: Any) -> None:
    """Set ``values`` on ``obj`` as what its row already holds: no change pending, so no flush
    writes them again. For attributes a Core statement has just written (the ORM does not see
    those), on a persistent or detached object."""
    for attribute, value in values.items():
        set_committed_value(obj, attribute, value)


def update_returning(cls: type) -> Update:
    """An ORM ``UPDATE`` of ``cls``'s table whose ``RETURNING`` gives ``cls`` objects (read them
    with ``session.scalars``); add ``.where(...)`` and ``.values(...)``.

    It skips the ORM's synchronisation of the session's objects with the statement (an attempt
    to evaluate the WHERE in Python, then matching the returned rows to the identity map):
    measured here on SQLite, a transaction updating two rows this way took ~0.75 ms against
    ~1.0 ms. The objects are built from the returned rows, so run it in a session that holds
    none of them: an object of a matched row that the session already holds is returned as it
    was, not refreshed.
    """
    return update(cls).returning(cls).execution_options(synchronize_session=False)


@functools.cache
def _update_where(cls: type, attributes: tuple[str, ...], where: tuple[tuple[str, int], ...]):
    names = dict(_columns(cls))
    table = cls.__table__
    conditions = [table.c[names[a]].in_([bindparam(f"_{a}{i}") for i in range(n)]) for a, n in where]
    return (update(table).where(table.c.seq == bindparam("_seq"), *conditions)
            .values({names[a]: bindparam(names[a]) for a in attributes}))


async def update_object_where(session: AsyncSession, obj: Any, values: dict[str, Any],
                              where: dict[str, tuple[Any, ...]]) -> bool:
    """Compare and set: UPDATE the object's row with ``values`` only while each attribute named
    in ``where`` holds one of the values given for it. Returns whether the row was updated; only
    then does the object take ``values`` (as persisted, no pending change)."""
    cls = type(obj)
    names = dict(_columns(cls))
    statement = _update_where(cls, tuple(values), tuple((a, len(v)) for a, v in where.items()))
    params = {"_seq": obj.seq, **{names[a]: v for a, v in values.items()}}
    for attribute, allowed in where.items():
        params.update({f"_{attribute}{i}": v for i, v in enumerate(allowed)})
    rowcount, _ = await _execute(session, statement, cls, params)
    if rowcount != 1:
        return False
    mark_loaded(obj, **values)
    return True
