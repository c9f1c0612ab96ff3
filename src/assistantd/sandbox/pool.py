"""The sandboxes of this server: one per thread (stateful across calls, like a notebook), a warm
pool of started kernels so a thread's first call does not wait for a container, idle reaping,
and clean-up — at shutdown, and at start-up for whatever a crashed process left behind.

Every container carries the label ``assistantd.instance`` (a digest of this server's data
folder and database), so servers sharing one Docker engine never reap each other's sandboxes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from anyio import to_thread

from assistantd.sandbox.container import LABEL, Sandbox, SandboxLimits
from assistantd.settings import Settings

log = logging.getLogger("assistantd.sandbox")

INSTANCE_LABEL = "assistantd.instance"


class SandboxUnavailable(Exception):
    """Docker or the sandbox image cannot be used; the message says what to do."""


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
            exec_timeout=settings.sandbox_exec_timeout,
        )
        self.warm_size = settings.sandbox_warm_pool
        self.idle_seconds = settings.sandbox_idle_seconds
        self.instance = instance_id(settings)
        self._client = None
        self._image_checked = False
        self._warm: list[Sandbox] = []
        self._by_thread: dict[str, Sandbox] = {}
        self._lock = asyncio.Lock()
        self._filling: asyncio.Task | None = None
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

    def _new_sandbox_blocking(self) -> Sandbox:
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
            return sandbox.start()
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
        while not self._closed and len(self._warm) < self.warm_size:
            try:
                sandbox = await to_thread.run_sync(self._new_sandbox_blocking)
            except Exception as exc:
                log.warning("could not start a warm sandbox: %s", exc)
                return
            if self._closed:
                await to_thread.run_sync(sandbox.remove)
                return
            self._warm.append(sandbox)

    # --- use -------------------------------------------------------------------------------------

    async def for_thread(self, thread_id: str) -> Sandbox:
        """The thread's sandbox: its own if it has one, else a warm one, else a new one."""
        async with self._lock:
            sandbox = self._by_thread.get(thread_id)
            if sandbox is None and self._warm:
                sandbox = self._warm.pop(0)
        if sandbox is None:
            sandbox = await to_thread.run_sync(self._new_sandbox_blocking)
        sandbox.thread_id = thread_id
        sandbox.last_used = time.monotonic()
        self._by_thread[thread_id] = sandbox
        self._refill()
        return sandbox

    async def release_thread(self, thread_id: str) -> None:
        sandbox = self._by_thread.pop(thread_id, None)
        if sandbox is not None:
            await to_thread.run_sync(sandbox.remove)

    async def reap_idle(self) -> int:
        now = time.monotonic()
        idle = [t for t, s in self._by_thread.items() if now - s.last_used > self.idle_seconds]
        for thread_id in idle:
            await self.release_thread(thread_id)
        return len(idle)
