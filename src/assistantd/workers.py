"""The server processes sharing one database (replicas), and which of them are alive.

Each process registers a row in ``workers`` at start, refreshes its ``seen_at`` every
:data:`HEARTBEAT_SECONDS` and deletes it when it stops. Another process counts as dead when its
row is gone, was not refreshed for :data:`TIMEOUT_SECONDS`, or names a process of this host
that no longer exists (a killed local process is known dead at once). On SQLite one process owns
the database, so every other row is a dead process's.

What a process owns alone (its warm sandboxes) is reclaimed by the others once it is dead; work
on shared objects is divided by leases and conditional writes, not by this table.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Collection

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd.db import Database
from assistantd.db.models import Worker

log = logging.getLogger("assistantd")

HEARTBEAT_SECONDS = 5.0
TIMEOUT_SECONDS = 30.0  # a row not refreshed for this long is a dead process's


def new_worker_id() -> str:
    """``host:pid:token``: this process's id, in ``workers`` and as the holder of its runs' leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def is_dead_local(worker: str, me: str) -> bool:
    """A worker id of this host whose process is gone (or is this very process under another
    token: a restarted container is pid 1 again)."""
    host, _, rest = worker.partition(":")
    pid_text, _, _token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return worker != me
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Workers:
    def __init__(self, db: Database, worker_id: str | None = None) -> None:
        self.db = db
        self.id = worker_id or new_worker_id()

    async def register(self) -> None:
        now = time.time()
        async with self.db.write() as session:
            if self.db.is_sqlite:  # one process owns the database: the other rows are the dead's
                await session.execute(delete(Worker).where(Worker.id != self.id))
            session.add(Worker(id=self.id, started_at=now, seen_at=now))

    async def heartbeat(self) -> None:
        """Refresh this process's row (re-adding it if a peer took it for dead and removed it)."""
        async with self.db.write() as session:
            result = await session.execute(update(Worker).where(Worker.id == self.id).values(seen_at=time.time()))
            if result.rowcount == 0:
                log.warning("this server's worker row %s was gone; registering again", self.id)
                session.add(Worker(id=self.id, started_at=time.time(), seen_at=time.time()))

    async def beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker heartbeat failed")

    async def alive(self, session: AsyncSession, stopped_hosts: Collection[str] = ()) -> set[str]:
        """The ids of the live processes (this one included). ``stopped_hosts``: hosts known to
        have stopped (a killed replica's container: its row would look alive for a while yet)."""
        rows = (await session.execute(select(Worker.id, Worker.seen_at))).all()
        cutoff = time.time() - TIMEOUT_SECONDS
        return {self.id} | {w for w, seen in rows if seen >= cutoff and not is_dead_local(w, self.id)
                            and w.partition(":")[0] not in stopped_hosts}

    async def forget_dead(self, session: AsyncSession, stopped_hosts: Collection[str] = ()) -> set[str]:
        """Delete the rows of dead processes; return the ids still alive."""
        rows = set((await session.scalars(select(Worker.id))).all())
        alive = await self.alive(session, stopped_hosts)
        if rows - alive:
            await session.execute(delete(Worker).where(Worker.id.in_(rows - alive)))
        return alive

    async def deregister(self, session: AsyncSession) -> None:
        await session.execute(delete(Worker).where(Worker.id == self.id))
