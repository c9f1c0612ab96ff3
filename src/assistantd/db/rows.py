"""Writing mapped objects with single Core statements, for the paths every run takes.

The ORM's unit of work (flush) works out what changed, orders the statements and refreshes the
objects; for one known object per statement that bookkeeping costs several times the statement
(the run executor's profile showed flushes as the largest part of a run's CPU). These helpers
write an object with one ``INSERT`` or ``UPDATE`` of the table and leave it as the ORM would
have: inserted objects become *detached* with their primary key (so a later ``session.add`` of
one updates it), and updated attributes hold no pending change.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import bindparam, insert, inspect, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value


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


async def insert_objects(session: AsyncSession, *objects: Any) -> None:
    """INSERT each new (transient) object, every column given; ``seq`` comes back from the
    database."""
    for obj in objects:
        cls = type(obj)
        values = {column: getattr(obj, attribute) for attribute, column in _columns(cls)}
        result = await session.execute(_insert(cls), values)
        set_committed_value(obj, "seq", result.inserted_primary_key[0])
        make_transient_to_detached(obj)


async def update_object(session: AsyncSession, obj: Any, *attributes: str) -> None:
    """UPDATE the row of a persistent or detached object with the current values of
    ``attributes``."""
    cls = type(obj)
    names = dict(_columns(cls))
    values = {names[a]: getattr(obj, a) for a in attributes}
    await session.execute(_update(cls, attributes), {"_seq": obj.seq, **values})
    for attribute in attributes:
        set_committed_value(obj, attribute, getattr(obj, attribute))


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
    result = await session.execute(statement, params)
    if result.rowcount != 1:
        return False
    for attribute, value in values.items():
        set_committed_value(obj, attribute, value)
    return True


def mark_persisted(obj: Any, **values: Any) -> None:
    """Give a loaded object attribute values the database already holds (no pending change)."""
    for attribute, value in values.items():
        set_committed_value(obj, attribute, value)
