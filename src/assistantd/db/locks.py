"""Advisory locks: several server processes on one PostgreSQL take turns at a piece of shared
work (a sweep, a sandbox admission) with a transaction-scoped lock named by a string.

On SQLite one process owns the database and its writes already take turns (``Database.write``),
so both functions are no-ops there.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


def key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL's advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


async def take(session: AsyncSession, name: str) -> None:
    """Wait for the lock ``name``; it is held until the session's transaction ends."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key(name)})


async def try_take(session: AsyncSession, name: str) -> bool:
    """Take the lock ``name`` for the transaction if nobody holds it; False if another has it."""
    if session.bind.dialect.name != "postgresql":
        return True
    return bool(await session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key(name)}))
