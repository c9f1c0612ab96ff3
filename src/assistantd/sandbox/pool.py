"""The code-interpreter sandboxes: one per thread (stateful across calls, like a notebook), a warm
pool of started kernels per server process so a thread's first call does not wait for a
container, idle reaping, and clean-up — shared by every server process on one database and one
Docker engine (replicas).

Where a sandbox is: every container is recorded in the ``sandboxes`` table
(:mod:`assistantd.sandbox.records`) and named after its record. A thread's sandbox belongs to the
deployment, not to the process that started it: whichever process executes the thread's run
leases the record (one process at a time; the lease is renewed while the call lasts) and attaches
to the container's kernel through the engine, so variables defined in a run on one replica are
there in the next run on another. A process attaches only for the length of a call, and one
that finds its lease taken over abandons the kernel at once (Docker hands the kernel's output
to every attached client in turn: one that stops reading stalls it for all). Warm sandboxes
belong to the process that started them.

Bounds, counted over the deployment (every process on the database): at most
``sandbox_max_total`` sandboxes (warm ones included) and ``sandbox_max_per_tenant`` held by one
tenant's threads. A thread that needs one when a bound is reached takes the place of the least
recently used idle sandbox (its state is lost, as after the idle timeout); when every sandbox is
busy it waits up to ``sandbox_wait_seconds`` for one to be released, then :class:`SandboxBusy`
says so. Admissions take turns behind an advisory lock on PostgreSQL.

Reaping (every process, every :attr:`SandboxPool.reap_interval` seconds; each record is deleted
by exactly one of them): threads' sandboxes idle for ``sandbox_idle_seconds``, the warm sandboxes
of dead processes (:mod:`assistantd.workers`), and containers of this deployment with no record.
A process that stops removes its warm sandboxes; the last one to stop (and the first to start
after a crash of them all) removes every sandbox. Containers carry ``assistantd.instance`` (a
digest of the data folder and database: one per deployment, so deployments sharing an engine
never touch each other's), ``assistantd.worker`` (the starting process) and
``assistantd.sandbox_id`` (the record).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from anyio import to_thread

from assistantd.db import Database, locks
from assistantd.sandbox import records
from assistantd.sandbox.container import LABEL, Sandbox, SandboxLimits
from assistantd.settings import Settings
from assistantd.workers import Workers

log = logging.getLogger("assistantd.sandbox")

INSTANCE_LABEL = "assistantd.instance"
WORKER_LABEL = "assistantd.worker"
ID_LABEL = "assistantd.sandbox_id"
LEASE_SECONDS = 15.0  # a thread's sandbox used by a process that stopped renewing this is free again
POLL_SECONDS = 0.5  # how often a call waiting for a sandbox looks again (others may release one)
# Admissions, warm-ups, reaping and the first start / last stop take turns (an advisory lock on
# PostgreSQL): each reads the records as a whole, and none can deadlock another on their rows.
LOCK = "assistantd.sandboxes"


class SandboxUnavailable(Exception):
    """Docker or the sandbox image cannot be used; the message says what to do."""


class SandboxBusy(Exception):
    """Every sandbox this deployment (or this tenant) may hold is busy, for longer than the wait."""


class _Retry(Exception):
    """The admission raced with another process; look again."""


def instance_id(settings: Settings) -> str:
    key = f"{settings.data_dir.resolve()}|{settings.sqlalchemy_url}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class _Borrowed:
    record_id: str
    sandbox: Sandbox
    renewing: asyncio.Task
    users: int = 1


class SandboxPool:
    def __init__(self, settings: Settings, db: Database, workers: Workers) -> None:
        self.settings, self.db, self.workers = settings, db, workers
        self.image = settings.sandbox_image
        self.limits = SandboxLimits(
            memory=settings.sandbox_memory, cpus=settings.sandbox_cpus, pids=settings.sandbox_pids,
            tmp_size=settings.sandbox_tmp_size, data_size=settings.sandbox_data_size,
            exec_timeout=settings.sandbox_exec_timeout, shm_size=settings.sandbox_shm_size,
            max_output_bytes=settings.sandbox_max_output_bytes,
            max_output_files=settings.sandbox_max_output_files,
            max_output_file_bytes=settings.sandbox_max_output_file_bytes,
        )
        self.max_total = max(1, settings.sandbox_max_total)
        self.max_per_tenant = max(1, settings.sandbox_max_per_tenant)
        self.wait_seconds = settings.sandbox_wait_seconds
        self.warm_size = settings.sandbox_warm_pool
        self.idle_seconds = settings.sandbox_idle_seconds
        self.instance = instance_id(settings)
        self._client = None
        self._image_checked = False
        self._warm: list[tuple[str, Sandbox]] = []  # this process's warm sandboxes: (record id, attached)
        self._warm_starting = 0
        self._borrowed: dict[str, _Borrowed] = {}  # thread id → its sandbox while this process uses it
        self._filling: asyncio.Task | None = None
        self._preparing: set[Sandbox] = set()  # being started in a worker thread (abandoned at close)
        self._released = asyncio.Event()  # set whenever this process releases or removes a sandbox
        self._closed = False

    @property
    def reap_interval(self) -> float:
        return min(30.0, max(1.0, self.idle_seconds / 2))

    # --- docker ----------------------------------------------------------------------------------

    def _docker(self):
        if self._client is None:
            try:
                import docker

                client = docker.from_env()
                client.ping()
            except Exception as exc:
                raise SandboxUnavailable(f"The Docker engine is not reachable ({exc}).") from exc
            self._client = client
        return self._client

    async def _stopped_hosts(self) -> set[str]:
        """Hosts of servers that Docker says have stopped: the host name of a server in a container
        is the container's short id (Compose's default), and a replica killed or stopped leaves its
        container behind, exited, until it is removed. Its worker row would look alive for
        :data:`~assistantd.workers.TIMEOUT_SECONDS` more, keeping its sandboxes (and, at a
        ``compose down``, the last server's clean-up) waiting. Empty without Docker."""
        if self._client is None:
            return set()
        try:
            containers = await to_thread.run_sync(lambda: self._client.containers.list(
                all=True, sparse=True, filters={"status": ["exited", "dead"]}))
        except Exception:
            return set()
        return {c.id[:12] for c in containers}

    def _new_sandbox_blocking(self, record_id: str, preload: bool = False) -> Sandbox:
        """A started sandbox for ``record_id``; with ``preload`` (a warm-pool one) its kernel has
        also imported its heavy libraries, so its first execution does not wait for them."""
        client = self._docker()
        if not self._image_checked:
            try:
                client.images.get(self.image)
            except Exception as exc:
                raise SandboxUnavailable(
                    f"The sandbox image {self.image!r} is not built; run `assistantd sandbox build`."
                ) from exc
            self._image_checked = True
        labels = {INSTANCE_LABEL: self.instance, WORKER_LABEL: self.workers.id, ID_LABEL: record_id}
        sandbox = Sandbox(client, self.image, self.limits, labels, records.container_name(record_id))
        self._preparing.add(sandbox)
        try:
            if self._closed:
                raise SandboxUnavailable("The server is shutting down.")
            sandbox.start()
            if preload:
                sandbox.preload_blocking()
            return sandbox
        except Exception:
            sandbox.remove()
            raise
        finally:
            self._preparing.discard(sandbox)

    def _remove_blocking(self, record_ids: list[str]) -> None:
        client = self._docker()
        for record_id in record_ids:
            try:
                client.api.remove_container(records.container_name(record_id), force=True)
            except Exception as exc:  # already gone
                log.debug("removing sandbox %s: %s", record_id, exc)

    def _listed_blocking(self) -> list[tuple[str, str | None]]:
        """(container id, record id) of every container of this deployment."""
        client = self._docker()
        found = client.containers.list(all=True, filters={"label": [f"{LABEL}=1", f"{INSTANCE_LABEL}={self.instance}"]},
                                       ignore_removed=True)  # (one removed between the list and its inspect)
        return [(c.id, c.labels.get(ID_LABEL)) for c in found]

    async def _remove(self, record_ids: list[str], why: str) -> None:
        for record_id in record_ids:
            log.info("sandbox %s removed: %s", record_id, why)
        if record_ids and self._client is not None:
            await to_thread.run_sync(self._remove_blocking, record_ids)
        if record_ids:
            self._released.set()

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Reap what dead processes left (everything, when no other process is alive: the
        deployment had stopped), then warm the pool in the background."""
        try:
            await to_thread.run_sync(self._docker)
        except SandboxUnavailable as exc:
            log.warning("code interpreter unavailable: %s", exc)
            return
        await self.reap_idle(startup=True)
        self._refill()

    async def close(self) -> None:
        """Stop using sandboxes: this process's warm ones go; so does every one when no other
        process is left alive. Ends this process's registration (:mod:`assistantd.workers`)."""
        self._closed = True
        for sandbox in list(self._preparing):  # a warm-up waiting for its kernel ends now
            sandbox.abandon()
        if self._filling is not None:
            self._filling.cancel()
            await asyncio.gather(self._filling, return_exceptions=True)
        for entry in list(self._borrowed.values()):
            entry.renewing.cancel()
            entry.sandbox.detach()
        for _, sandbox in self._warm:
            sandbox.detach()
        self._warm, self._borrowed = [], {}
        stopped = await self._stopped_hosts()
        try:
            async with self.db.write() as session:
                await locks.take(session, LOCK)
                await self.workers.deregister(session)
                last = (await self.workers.alive(session, stopped)) == {self.workers.id}
                if last:
                    gone = await records.remove(session)
                else:
                    gone = await records.remove(session, records.warm_of(self.workers.id))
                    await records.unlease_all(session, self.workers.id)
        except Exception:  # the others reap what this process leaves once it is seen dead
            log.exception("releasing this server's sandboxes failed")
            return
        if self._client is None:
            return
        await self._remove(gone, "the last server stopped" if last else "its server stopped")
        # Also a container a warm-up was still creating when its record went (as every reap pass does).
        with contextlib.suppress(Exception):
            await self._remove_strays()

    def _refill(self) -> None:
        if self._closed or self.warm_size <= 0 or (self._filling and not self._filling.done()):
            return
        self._filling = asyncio.create_task(self._fill())

    async def _fill(self) -> None:
        while not self._closed and len(self._warm) + self._warm_starting < self.warm_size:
            async with self.db.write() as session:
                await locks.take(session, LOCK)
                if len(await records.all_records(session)) >= self.max_total:
                    return
                record_id = records.add(session, self.workers.id)
            self._warm_starting += 1
            try:
                sandbox = await to_thread.run_sync(self._new_sandbox_blocking, record_id, True)
            except Exception as exc:
                log.warning("could not start a warm sandbox: %s", exc)
                await self._forget(record_id)
                return
            finally:
                self._warm_starting -= 1
            if self._closed:
                await to_thread.run_sync(sandbox.remove)
                return
            self._warm.append((record_id, sandbox))

    async def _forget(self, record_id: str) -> None:
        async with self.db.write() as session:
            gone = await records.remove_one(session, record_id)
        await self._remove(gone, "it could not be used")

    # --- use -------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def borrow(self, thread_id: str, tenant: str) -> AsyncIterator[Sandbox]:
        """The thread's sandbox for one call, leased to this process meanwhile (never evicted
        nor reaped, nor used by another process)."""
        entry = self._borrowed.get(thread_id)
        if entry is not None:  # already in use here (another call of the thread's run)
            entry.users += 1
        else:
            record_id, sandbox = await self._acquire(thread_id, tenant)
            renewing = asyncio.create_task(self._renew(record_id, sandbox))
            entry = self._borrowed[thread_id] = _Borrowed(record_id, sandbox, renewing)
        try:
            yield entry.sandbox
        finally:
            entry.users -= 1
            if entry.users == 0 and self._borrowed.get(thread_id) is entry:
                del self._borrowed[thread_id]
                entry.renewing.cancel()
                entry.sandbox.detach()
                with contextlib.suppress(Exception):
                    async with self.db.write() as session:
                        await records.release(session, entry.record_id, self.workers.id,
                                              sorted(entry.sandbox.placed_files))
                self._released.set()

    async def _renew(self, record_id: str, sandbox: Sandbox) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            try:
                async with self.db.write() as session:
                    held = await records.renew(session, record_id, self.workers.id, LEASE_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("renewing the lease of sandbox %s failed", record_id)
                continue
            if not held:
                # Another process took the kernel over (this one was too slow to renew): stop
                # listening at once. Docker's attach hands the kernel's output to every attached
                # client in turn, so one that stops reading would stall the kernel for the new
                # holder. This process's call fails.
                log.warning("lost the lease of sandbox %s; letting its kernel go", record_id)
                sandbox.abandon()
                return

    async def _acquire(self, thread_id: str, tenant: str) -> tuple[str, Sandbox]:
        """The thread's sandbox, leased and attached: its own if it has one (wherever it was
        started), else a warm one of this process, else a new one — within the bounds, making
        room by evicting idle sandboxes, waiting while the thread's is used elsewhere or all
        are busy."""
        if self._client is None:
            await to_thread.run_sync(self._docker)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            if self._closed:
                raise SandboxUnavailable("The server is shutting down.")
            self._released.clear()
            pause = POLL_SECONDS
            async with self.db.write() as session:
                leased = await records.lease(session, thread_id, self.workers.id, LEASE_SECONDS)
            if isinstance(leased, records.Leased):
                try:
                    sandbox = await to_thread.run_sync(
                        Sandbox.existing, self._client, records.container_name(leased.id), self.limits)
                except Exception as exc:  # the container is gone (removed by hand, engine restarted)
                    log.warning("sandbox %s of thread %s is gone (%s); starting another", leased.id, thread_id, exc)
                    await self._forget(leased.id)
                    continue
                except BaseException:  # cancelled: the lease must not wait 30 s to lapse
                    async with self.db.write() as session:
                        await records.release(session, leased.id, self.workers.id, leased.placed_files)
                    raise
                sandbox.placed_files = set(leased.placed_files)
                return leased.id, sandbox
            if leased is None:
                try:
                    admitted = await self._admit(thread_id, tenant)
                except _Retry:
                    admitted, pause = None, 0.05  # raced with another process: look again soon
                if admitted is not None:
                    return await self._ready(thread_id, *admitted)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxBusy(
                    f"No code interpreter sandbox became free within {self.wait_seconds:g} s (at most "
                    f"{self.max_total} per server and {self.max_per_tenant} per tenant, all busy); "
                    "try again later.")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._released.wait(), min(remaining, pause))

    async def _admit(self, thread_id: str, tenant: str) -> tuple[str, Sandbox | None, list[str]] | None:
        """Give the thread a sandbox record (a warm one of this process, or a new one, leased to
        this process), evicting idle ones to make room: (record id, its warm sandbox or None,
        evicted record ids); ``None`` when nothing can make room now."""
        now = time.time()
        warm = None
        try:
            async with self.db.write() as session:
                await locks.take(session, LOCK)
                rows = await records.all_records(session)
                if any(r.thread_id == thread_id for r in rows):
                    raise _Retry  # another process gave the thread one meanwhile
                idle = sorted((r for r in rows if r.thread_id and (r.holder is None or r.lease_until < now)),
                              key=lambda r: r.last_used)
                # Other processes' warm sandboxes give way too, after every idle thread's.
                idle += [r for r in rows if r.thread_id is None and r.worker != self.workers.id]
                evict: list[str] = []
                if sum(1 for r in rows if r.thread_id and r.tenant == tenant) >= self.max_per_tenant:
                    own = [r for r in idle if r.thread_id and r.tenant == tenant]
                    if not own:
                        return None
                    evict.append(own[0].id)
                # A warm sandbox is taken, not added: it needs no new room.
                if not evict and not self._warm and len(rows) >= self.max_total:
                    if not idle:
                        return None
                    evict.append(idle[0].id)
                if not await records.take_free(session, evict):
                    raise _Retry  # one was leased meanwhile
                if self._warm:
                    warm = self._warm.pop(0)
                    if not await records.adopt_warm(session, warm[0], thread_id, tenant, self.workers.id,
                                                    LEASE_SECONDS):
                        # Its record is gone (reaped by a process that took this one for dead).
                        warm[1].detach()
                        warm = None  # left to the reaping of containers without a record
                        raise _Retry
                    record_id = warm[0]
                else:
                    record_id = records.add(session, self.workers.id, thread_id, tenant, self.workers.id, LEASE_SECONDS)
        except BaseException:
            if warm is not None:
                self._warm.insert(0, warm)
            raise
        return record_id, warm[1] if warm else None, evict

    async def _ready(self, thread_id: str, record_id: str, sandbox: Sandbox | None,
                     evicted: list[str]) -> tuple[str, Sandbox]:
        await self._remove(evicted, "to make room")
        if sandbox is None:
            try:
                sandbox = await to_thread.run_sync(self._new_sandbox_blocking, record_id)
            except BaseException:
                await self._forget(record_id)
                raise
        log.info("sandbox %s is thread %s's", record_id, thread_id)
        self._refill()
        return record_id, sandbox

    async def release_thread(self, thread_id: str) -> None:
        """Remove the thread's sandbox (the thread was deleted)."""
        entry = self._borrowed.pop(thread_id, None)
        if entry is not None:
            entry.renewing.cancel()
            entry.sandbox.detach()
        async with self.db.write() as session:
            gone = await records.remove_thread(session, thread_id)
        await self._remove(gone, "its thread was deleted")

    async def reap_idle(self, startup: bool = False) -> int:
        """Remove the sandboxes nobody needs any more (see the module's docstring); each record is
        taken by one process only. At start-up with no other process alive, every sandbox goes."""
        stopped = await self._stopped_hosts()
        async with self.db.write() as session:
            await locks.take(session, LOCK)
            alive = await self.workers.forget_dead(session, stopped)
            if startup and alive == {self.workers.id}:
                gone, why = await records.remove(session), "left from before this server started"
            else:
                gone, why = await records.remove(session, records.reapable(alive, self.idle_seconds)), "idle, or its server is gone"
        await self._remove(gone, why)
        await self._remove_strays()
        return len(gone)

    async def _remove_strays(self) -> None:
        """Containers of this deployment with no record (listed first, then the records read:
        a record is always written before its container is created)."""
        if self._client is None:
            return
        listed = await to_thread.run_sync(self._listed_blocking)
        async with self.db.read() as session:
            known = await records.known_ids(session)
        strays = [(cid, rid) for cid, rid in listed if rid not in known]
        for cid, rid in strays:
            log.info("sandbox container %s removed: it has no record", rid or cid[:12])
            with contextlib.suppress(Exception):
                await to_thread.run_sync(lambda c=cid: self._client.api.remove_container(c, force=True))
