"""The sandboxes of this server: one per thread (stateful across calls, like a notebook), a warm
pool of started kernels so a thread's first call does not wait for a container, idle reaping,
and clean-up — at shutdown, and at start-up for whatever a crashed process left behind.

Bounds: at most ``sandbox_max_total`` sandboxes at once (warm ones included) and
``sandbox_max_per_tenant`` held by one tenant's threads. A thread that needs one when the bound is
reached takes the place of the least recently used idle sandbox (its state is lost, as after the
idle timeout); when every sandbox is busy it waits up to ``sandbox_wait_seconds`` for one to be
released, then :class:`SandboxBusy` says so.

Every container carries the label ``assistantd.instance`` (a digest of this server's data
folder and database), so servers sharing one Docker engine never reap each other's sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator

from anyio import to_thread

from assistantd.sandbox.container import LABEL, Sandbox, SandboxLimits
from assistantd.settings import Settings

log = logging.getLogger("assistantd.sandbox")

INSTANCE_LABEL = "assistantd.instance"


class SandboxUnavailable(Exception):
    """Docker or the sandbox image cannot be used; the message says what to do."""


class SandboxBusy(Exception):
    """Every sandbox this server (or this tenant) may hold is busy, for longer than the wait."""


def instance_id(settings: Settings) -> str:
    key = f"{settings.data_dir.resolve()}|{settings.sqlalchemy_url}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class SandboxPool:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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
        self._warm: list[Sandbox] = []
        self._by_thread: dict[str, Sandbox] = {}
        self._lock = asyncio.Lock()
        self._filling: asyncio.Task | None = None
        self._starting = 0  # sandboxes being started for a thread (counted against max_total)
        self._released = asyncio.Event()  # set whenever a sandbox stops being busy or is removed
        self._closed = False

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

    def _new_sandbox_blocking(self, preload: bool = False) -> Sandbox:
        """A started sandbox; with ``preload`` (a warm-pool one) its kernel has also imported
        its heavy libraries, so its first execution does not wait for them in its time limit."""
        client = self._docker()
        if not self._image_checked:
            try:
                client.images.get(self.image)
            except Exception as exc:
                raise SandboxUnavailable(
                    f"The sandbox image {self.image!r} is not built; run `assistantd sandbox build`."
                ) from exc
            self._image_checked = True
        sandbox = Sandbox(client, self.image, self.limits, {INSTANCE_LABEL: self.instance})
        try:
            sandbox.start()
            if preload:
                sandbox.preload_blocking()
            return sandbox
        except Exception:
            sandbox.remove()
            raise

    def _reap_leftovers_blocking(self) -> int:
        client = self._docker()
        leftovers = client.containers.list(all=True, filters={"label": [f"{LABEL}=1", f"{INSTANCE_LABEL}={self.instance}"]})
        for container in leftovers:
            try:
                container.remove(force=True)
            except Exception:
                pass
        return len(leftovers)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Reap what an earlier process of this server left, then warm the pool (in the background)."""
        try:
            removed = await to_thread.run_sync(self._reap_leftovers_blocking)
            if removed:
                log.info("removed %d sandbox container(s) left by an earlier run", removed)
        except SandboxUnavailable as exc:
            log.warning("code interpreter unavailable: %s", exc)
            return
        self._refill()

    async def close(self) -> None:
        self._closed = True
        if self._filling is not None:
            self._filling.cancel()
            await asyncio.gather(self._filling, return_exceptions=True)
        sandboxes = self._warm + list(self._by_thread.values())
        self._warm, self._by_thread = [], {}
        await asyncio.gather(*(to_thread.run_sync(s.remove) for s in sandboxes), return_exceptions=True)
        if self._client is not None:
            try:
                await to_thread.run_sync(self._reap_leftovers_blocking)
            except Exception:
                pass

    def _refill(self) -> None:
        if self._closed or self.warm_size <= 0 or (self._filling and not self._filling.done()):
            return
        self._filling = asyncio.create_task(self._fill())

    async def _fill(self) -> None:
        while not self._closed and len(self._warm) < min(self.warm_size, self.max_total - self._count()):
            try:
                sandbox = await to_thread.run_sync(self._new_sandbox_blocking, True)
            except Exception as exc:
                log.warning("could not start a warm sandbox: %s", exc)
                return
            if self._closed:
                await to_thread.run_sync(sandbox.remove)
                return
            self._warm.append(sandbox)

    # --- use -------------------------------------------------------------------------------------

    def _count(self) -> int:
        return len(self._warm) + len(self._by_thread) + self._starting

    @contextlib.asynccontextmanager
    async def borrow(self, thread_id: str, tenant: str) -> AsyncIterator[Sandbox]:
        """The thread's sandbox for one call (busy meanwhile: never evicted nor reaped)."""
        sandbox = await self._for_thread(thread_id, tenant)
        sandbox.busy += 1
        try:
            yield sandbox
        finally:
            sandbox.busy -= 1
            sandbox.last_used = time.monotonic()
            self._released.set()

    async def _for_thread(self, thread_id: str, tenant: str) -> Sandbox:
        """The thread's sandbox: its own if it has one, else a warm one, else a new one —
        within the bounds, making room by evicting idle sandboxes, waiting when all are busy."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            async with self._lock:
                sandbox = self._by_thread.get(thread_id)
                if sandbox is not None:
                    return sandbox
                evict = self._make_room(tenant)
                if evict is not False:
                    sandbox = self._warm.pop(0) if self._warm else None
                    if sandbox is None:
                        self._starting += 1
                    break
                self._released.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxBusy(
                    f"No code interpreter sandbox became free within {self.wait_seconds:g} s (at most "
                    f"{self.max_total} per server and {self.max_per_tenant} per tenant, all busy); "
                    "try again later.")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._released.wait(), remaining)
        for old in evict:
            log.info("sandbox of thread %s removed to make room", old.thread_id)
            await to_thread.run_sync(old.remove)
        if sandbox is None:
            try:
                sandbox = await to_thread.run_sync(self._new_sandbox_blocking)
            finally:
                self._starting -= 1
        sandbox.thread_id, sandbox.tenant = thread_id, tenant
        sandbox.last_used = time.monotonic()
        self._by_thread[thread_id] = sandbox
        self._refill()
        return sandbox

    def _make_room(self, tenant: str) -> list[Sandbox] | bool:
        """Under the lock: take the idle sandboxes to evict so one more fits for ``tenant``
        (out of the map, to be removed by the caller), or ``False`` when they cannot make room."""
        idle = sorted((s for s in self._by_thread.values() if not s.busy), key=lambda s: s.last_used)
        evict: list[Sandbox] = []
        held = sum(1 for s in self._by_thread.values() if s.tenant == tenant)
        if held >= self.max_per_tenant:
            own = [s for s in idle if s.tenant == tenant]
            if not own:
                return False
            evict.append(own[0])
        # A warm sandbox is taken, not added: it needs no new room.
        if not evict and not self._warm and self._count() >= self.max_total:
            if not idle:
                return False
            evict.append(idle[0])
        for old in evict:
            del self._by_thread[old.thread_id]
        return evict

    async def release_thread(self, thread_id: str) -> None:
        """Remove the thread's sandbox (the thread was deleted, or has been idle too long)."""
        sandbox = self._by_thread.pop(thread_id, None)
        if sandbox is not None:
            await to_thread.run_sync(sandbox.remove)
            self._released.set()

    async def reap_idle(self) -> int:
        now = time.monotonic()
        idle = [t for t, s in self._by_thread.items() if not s.busy and now - s.last_used > self.idle_seconds]
        for thread_id in idle:
            await self.release_thread(thread_id)
        return len(idle)
