"""The run queue, in the database: every statement that claims, leases, recovers or expires runs.

A process *claims* a queued run by moving it to ``in_progress`` with its worker id and a lease
(``FOR UPDATE SKIP LOCKED`` lets PostgreSQL processes claim side by side), renews the lease while
it executes the run, and a run whose lease lapsed — its process died — is an orphan that any
process *takes over* (and resumes, :mod:`assistantd.runs.resume`). A run nobody answers in time
(queued, or waiting for tool outputs past ``expires_at``) expires.
"""

from __future__ import annotations

import time

from sqlalchemy import select, update
from sqlalchemy.sql.elements import ColumnElement

from assistantd import ids
from assistantd.db import Database
from assistantd.db.models import Run
from assistantd.db.rows import update_object_where
from assistantd.runs import states
from assistantd.runs.states import RunStatus
from assistantd.runs.store import Writes
from assistantd.workers import is_dead_local, new_worker_id

__all__ = ["LEASE_SECONDS", "RunQueue"]

LEASE_SECONDS = 10.0  # a run whose executor stops renewing this is orphaned
EXPIRE_BATCH = 500  # runs expired per transaction (the rest at the next round)


class RunQueue:
    def __init__(self, db: Database, worker_id: str | None = None) -> None:
        """``worker_id``: this process's (its row in ``workers``); a new one when not given."""
        self.db = db
        self.worker_id = worker_id or new_worker_id()

    async def claim(self, writes: Writes, limit: int) -> list[Run]:
        """Take up to ``limit`` queued runs, oldest first."""
        candidates = (select(Run).where(Run.status == RunStatus.QUEUED).order_by(Run.seq).limit(limit))
        if not self.db.is_sqlite:
            candidates = candidates.with_for_update(skip_locked=True)
        runs = (await writes.session.scalars(candidates)).all()
        return [run for run in runs if await self.claim_run(writes, run)]

    async def claim_run(self, writes: Writes, run: Run) -> bool:
        """Claim one queued run for this process (in ``writes``' transaction)."""
        return await writes.move(run, RunStatus.IN_PROGRESS, expect=(RunStatus.QUEUED,), worker=self.worker_id,
                                 lease_until=time.time() + LEASE_SECONDS, started_at=run.started_at or ids.now())

    async def renew(self, run_ids: list[str]) -> tuple[list[str], list[str]]:
        """Extend this process's leases on ``run_ids``. Return those a cancel has marked
        ``cancelling`` meanwhile (maybe through another process: the flag is durable), and those
        another process has taken over (this one's lease lapsed while it still ran them)."""
        async with self.db.write() as session:
            renewed = set(await session.scalars(
                update(Run).where(Run.worker == self.worker_id, Run.id.in_(run_ids))
                .values(lease_until=time.time() + LEASE_SECONDS).returning(Run.id)))
            cancelling = list(await session.scalars(
                select(Run.id).where(Run.id.in_(run_ids), Run.status == RunStatus.CANCELLING)))
            lost = [run_id for run_id in run_ids if run_id not in renewed]
            if lost:  # (a run that ended or waits for outputs has no worker: it was not taken)
                lost = list(await session.scalars(select(Run.id).where(
                    Run.id.in_(lost), Run.worker.is_not(None), Run.worker != self.worker_id)))
            return cancelling, lost

    async def orphans(self, writes: Writes, startup: bool) -> list[Run]:
        """Runs whose executor is gone. On SQLite (one process) every run in progress at start-up
        is one; elsewhere a run is orphaned when its lease has lapsed, or at start-up when it was
        held by a process of this host that no longer exists."""
        if startup and self.db.is_sqlite:
            return await self.executing(writes, Run.worker.is_not(None))
        orphaned = (Run.lease_until < time.time()) & (Run.worker != self.worker_id)
        if startup:
            workers = set((await writes.session.scalars(
                select(Run.worker).where(Run.status.in_(states.EXECUTING)))).all())
            dead = [w for w in workers if w and is_dead_local(w, self.worker_id)]
            if dead:
                orphaned = orphaned | Run.worker.in_(dead)
        return await self.executing(writes, orphaned)

    async def take_over(self, writes: Writes, run: Run, expires_at: int) -> bool:
        """Make this process the executor of an orphan still ``in_progress``, unless another
        process took it first: a compare-and-set on the worker it had (its status stays)."""
        return await update_object_where(
            writes.session, run, {"worker": self.worker_id, "lease_until": time.time() + LEASE_SECONDS,
                                  "expires_at": expires_at},
            {"status": (RunStatus.IN_PROGRESS.value,), "worker": (run.worker,)})

    async def hand_back(self, writes: Writes) -> None:
        """Let this process's leases lapse now (it is stopping): whichever process looks for
        orphans next takes its runs over."""
        await writes.session.execute(update(Run).where(Run.worker == self.worker_id, Run.status.in_(states.EXECUTING))
                                     .values(lease_until=0.0))

    async def executing(self, writes: Writes, condition: ColumnElement[bool]) -> list[Run]:
        """Runs in progress (or being cancelled) that meet ``condition``."""
        return list((await writes.session.scalars(
            select(Run).where(Run.status.in_(states.EXECUTING), condition))).all())

    async def expired(self, writes: Writes) -> list[Run]:
        """Runs nobody took up in time: queued or waiting for tool outputs past ``expires_at``.
        Locked in ``writes``' transaction, skipping those another process is expiring (or
        claiming) now: processes expiring together take disjoint runs, in one order."""
        query = select(Run).where(Run.status.in_((RunStatus.QUEUED, RunStatus.REQUIRES_ACTION)),
                                  Run.expires_at < ids.now()).order_by(Run.seq).limit(EXPIRE_BATCH)
        if not self.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        return list((await writes.session.scalars(query)).all())
