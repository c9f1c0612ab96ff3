"""The ``sandboxes`` table: every sandbox container of the deployment, whichever server process
started it, and the statements that lease, admit, release and reap them.

Invariants the reaping relies on: a record is committed *before* its container is created, and
deleted *before* its container is removed, so a container of this deployment with no record is
left-over (its creator died between the two, or it predates the table) and anyone may remove it.
Each record is deleted by one statement with ``RETURNING``: of several processes reaping at once,
exactly one gets it and removes its container.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd.db.models import SandboxRecord as R

NAME_PREFIX = "assistantd-"


def container_name(record_id: str) -> str:
    return NAME_PREFIX + record_id


def new_id() -> str:
    return "sbx_" + os.urandom(10).hex()


def free(now: float):
    """Not used by any process right now (never leased, released, or its holder's lease lapsed)."""
    return or_(R.holder.is_(None), R.lease_until < now)


@dataclass
class Leased:
    id: str
    placed_files: list[str]


async def lease(session: AsyncSession, thread_id: str, worker: str, seconds: float) -> Leased | bool | None:
    """Lease the thread's sandbox: its record, ``False`` while another process uses it, ``None``
    when the thread has none."""
    now = time.time()
    row = (await session.execute(
        update(R).where(R.thread_id == thread_id, free(now)).values(holder=worker, lease_until=now + seconds)
        .returning(R.id, R.placed_files))).first()
    if row is not None:
        return Leased(row[0], list(row[1] or []))
    return False if await session.scalar(select(R.id).where(R.thread_id == thread_id)) else None


async def renew(session: AsyncSession, record_id: str, worker: str, seconds: float) -> bool:
    """Extend ``worker``'s lease; False when it no longer holds it (it lapsed and was taken)."""
    result = await session.execute(update(R).where(R.id == record_id, R.holder == worker)
                                   .values(lease_until=time.time() + seconds))
    return result.rowcount == 1


async def release(session: AsyncSession, record_id: str, worker: str, placed_files: list[str]) -> None:
    await session.execute(update(R).where(R.id == record_id, R.holder == worker).values(
        holder=None, lease_until=None, last_used=time.time(), placed_files=placed_files))


async def all_records(session: AsyncSession) -> list:
    return list((await session.execute(
        select(R.id, R.thread_id, R.tenant, R.worker, R.holder, R.lease_until, R.last_used))).all())


async def take_free(session: AsyncSession, record_ids: list[str]) -> bool:
    """Delete these records if every one is still free (to evict them); False if one is not."""
    if not record_ids:
        return True
    result = await session.execute(delete(R).where(R.id.in_(record_ids), free(time.time())))
    return result.rowcount == len(record_ids)


async def adopt_warm(session: AsyncSession, record_id: str, thread_id: str, tenant: str, worker: str,
                     seconds: float) -> bool:
    """A warm sandbox of ``worker`` becomes the thread's (leased to it)."""
    now = time.time()
    result = await session.execute(update(R).where(R.id == record_id, R.thread_id.is_(None)).values(
        thread_id=thread_id, tenant=tenant, holder=worker, lease_until=now + seconds, last_used=now))
    return result.rowcount == 1


def add(session: AsyncSession, worker: str, thread_id: str | None = None, tenant: str | None = None,
        holder: str | None = None, lease_seconds: float = 0.0) -> str:
    now = time.time()
    record = R(id=new_id(), worker=worker, thread_id=thread_id, tenant=tenant, holder=holder,
               lease_until=now + lease_seconds if holder else None, last_used=now, placed_files=[])
    session.add(record)
    return record.id


async def remove(session: AsyncSession, *conditions) -> list[str]:
    """Delete the records matching ``conditions``; return their ids (their containers are the
    caller's to remove)."""
    return list((await session.scalars(delete(R).where(*conditions).returning(R.id))).all())


async def remove_thread(session: AsyncSession, thread_id: str) -> list[str]:
    return await remove(session, R.thread_id == thread_id)


async def remove_one(session: AsyncSession, record_id: str) -> list[str]:
    return await remove(session, R.id == record_id)


def reapable(alive: set[str], idle_seconds: float):
    """Warm sandboxes of dead processes, and threads' sandboxes unused for ``idle_seconds``."""
    now = time.time()
    return or_(and_(R.thread_id.is_(None), R.worker.not_in(sorted(alive))),
               and_(R.thread_id.is_not(None), R.last_used < now - idle_seconds, free(now)))


def warm_of(worker: str):
    return and_(R.thread_id.is_(None), R.worker == worker)


async def unlease_all(session: AsyncSession, worker: str) -> None:
    await session.execute(update(R).where(R.holder == worker).values(holder=None, lease_until=None))


async def known_ids(session: AsyncSession) -> set[str]:
    return set((await session.scalars(select(R.id))).all())
