"""The run worker: the loops that keep this process's runs going, and their tasks.

It claims queued runs from the :class:`~assistantd.runs.queue.RunQueue` while it has room
(``ASSISTANTD_MAX_CONCURRENT_RUNS``), executes each in a task of its own
(:class:`~assistantd.runs.executor.RunExecutor`), renews their leases, passes cancels on, resumes
the runs whose executor is gone (:mod:`assistantd.runs.resume`) and ends the runs that expired. A
run created by a request of this process is claimed in that request's transaction
(:meth:`RunWorker.claim_created`) and starts at once. Stopping hands this process's runs back: their
leases lapse at once, and the next process to look (on SQLite, this server's next start) resumes them.
Between processes (through the event bus's signals): a run queued and not claimed here wakes
every process's claim loop, and a cancel reaches the process that executes the run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from assistantd.db.models import Run
from assistantd.runs import resume
from assistantd.runs.context import RunContext
from assistantd.runs.events import stream_error
from assistantd.runs.executor import RunExecutor
from assistantd.runs.queue import RunQueue
from assistantd.runs.states import EXECUTING, RunStatus
from assistantd.runs.store import RunStore, Writes

__all__ = ["RunWorker"]

log = logging.getLogger("assistantd.executor")

MAINTENANCE_INTERVAL = 3.0
POLL_INTERVAL = 1.0  # the claim loop's look for runs queued with no wake-up (another process's, a lost signal)
# On SQLite every run is queued by this process, which wakes the claim loop itself: the look is only
# a safety net there, and each one was a write transaction (~1.4 ms of an idle server's CPU a second).
POLL_INTERVAL_SQLITE = 10.0
CLAIM_BATCH = 32
WAKE, CANCEL = "wake", "cancel"  # the bus signals between processes' workers
RESUMED = ("The server executing the run stopped; another one resumed the run from its last saved point. "
           "This stream ends here: retrieve the run and its messages to follow it.")


class RunWorker:
    def __init__(self, executor: RunExecutor, store: RunStore, queue: RunQueue, max_concurrent: int) -> None:
        self.executor, self.store, self.queue = executor, store, queue
        self.max_concurrent = max_concurrent
        self._wake = asyncio.Event()
        self._running: dict[str, tuple[asyncio.Task, RunContext]] = {}
        self._claimed: dict[str, RunContext] = {}  # claimed in transactions not yet committed
        self._background: list[asyncio.Task] = []
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.store.bus.on_signal(WAKE, lambda _: self._wake.set())
        self.store.bus.on_signal(CANCEL, self.cancel_here)
        await self._recover_orphans(startup=True)
        self._background = [
            asyncio.create_task(self._claim_loop(), name="run-claims"),
            asyncio.create_task(self._maintenance_loop(), name="run-maintenance"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._background:
            task.cancel()
        for task, _ in list(self._running.values()):
            task.cancel()  # (nothing is written: the run stays where its last boundary left it)
        await asyncio.gather(*self._background, *(t for t, _ in self._running.values()),
                             return_exceptions=True)
        # Runs this process was executing are handed back, to be resumed by whichever process
        # looks next; a run being cancelled ends now.
        async with self.store.writing() as writes:
            for run in await self.queue.executing(writes, Run.worker == self.queue.worker_id):
                if run.status == RunStatus.CANCELLING:
                    await writes.end(run, RunStatus.CANCELLED, expect=(run.status,))
            await self.queue.hand_back(writes)

    def wake(self) -> None:
        """A run was queued and not claimed here: look for it, and have the other processes look."""
        self._wake.set()
        self.store.bus.broadcast(WAKE)

    def request_cancel(self, run_id: str) -> None:
        """Tell the run's executor, here or in whichever process executes it, to stop now (it
        would see the durable ``cancelling`` flag at its next lease renewal anyway)."""
        if not self.cancel_here(run_id):
            self.store.bus.broadcast(CANCEL, run_id)

    def cancel_here(self, run_id: str) -> bool:
        """Stop the run if this process executes it (or is about to); False if it does not."""
        entry = self._running.get(run_id)
        ctx = entry[1] if entry is not None else self._claimed.get(run_id)
        if ctx is None:
            return False
        ctx.request_cancel()
        return True

    # --- claiming ------------------------------------------------------------------------------

    def _room(self) -> int:
        return self.max_concurrent - len(self._running) - len(self._claimed)

    async def _claim_loop(self) -> None:
        interval = POLL_INTERVAL_SQLITE if self.store.db.is_sqlite else POLL_INTERVAL
        while True:
            # Cleared before claiming, so a run queued while we claim is not missed.
            self._wake.clear()
            try:
                while (room := self._room()) > 0:
                    async with self.store.writing() as writes:
                        runs = await self.queue.claim(writes, min(room, CLAIM_BATCH))
                    for run in runs:
                        self._launch(RunContext(run))
                    if len(runs) < min(room, CLAIM_BATCH):
                        break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming runs failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    def _launch(self, ctx: RunContext) -> None:
        run_id = ctx.run.id
        task = asyncio.create_task(self.executor.execute(ctx), name=f"run-{run_id}")
        self._running[run_id] = (task, ctx)
        task.add_done_callback(lambda _t: self._finished(run_id))

    def _finished(self, run_id: str) -> None:
        self._running.pop(run_id, None)
        self.store.bus.release(run_id)
        if self._room() == 1:  # it was full: runs may be waiting in the queue
            self._wake.set()

    async def send_first(self, writes: Writes, run: Run) -> bool:
        """Send the first model request of a run about to be inserted (``queued``) in ``writes``'
        transaction, when this process has room to claim it there (:meth:`claim_created`): its
        prompt is known, so the model's wait overlaps the run's insert, claim and commit. Returns
        whether the run is held for that claim: the caller then calls :meth:`claim_created`, or
        :meth:`release_claimed` if the transaction fails."""
        if self._stopping or self._room() <= 0:
            return False
        ctx = self._claimed[run.id] = RunContext(run)
        try:
            await self._send(writes, ctx)
        except BaseException:
            self.release_claimed(run)
            raise
        return True

    async def _send(self, writes: Writes, ctx: RunContext) -> None:
        ctx.prompt = await self.executor.prompt_or_none(writes.session, ctx)
        if self.executor.send_early(ctx):
            # Two turns of the loop, so that the request is on the wire before the commit: in
            # the first the request task builds it, and aiohttp writes its body in a task of
            # its own (on Python 3.11; 3.12+ starts that task eagerly), which runs in the
            # second. With one turn the request left after the response had started, ~1.1 ms
            # later (traced with aiohttp's on_request_chunk_sent).
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def claim_created(self, writes: Writes, run: Run) -> bool:
        """Claim a run in the transaction that queued it, when this process has room for it.

        The claim is the queue's, written in the request's transaction, and the run's first
        prompt is read there too: the run costs two transactions fewer and starts without waiting
        for the claim loop; its first model request is sent at once, before the commit (before
        the run's insert, when :meth:`send_first` sent it). The caller must then call
        :meth:`start_claimed` after its commit, or :meth:`release_claimed` if the transaction
        fails. Without room the run stays queued for whichever process claims it.
        """
        ctx = self._claimed.get(run.id)
        if ctx is None:
            if self._stopping or self._room() <= 0:
                return False
            ctx = self._claimed[run.id] = RunContext(run)
        try:
            if not await self.queue.claim_run(writes, run):
                self._claimed.pop(run.id).drop_answer()  # (it stays queued, its streams subscribed)
                return False
            # Queued and claimed in this transaction: its streams (if any) subscribed here.
            self.store.bus.only_here(run.id)
            if ctx.prompt is None:  # (not sent by send_first)
                await self._send(writes, ctx)
            if ctx.answer is not None:
                await self.executor.open_early(writes, ctx)  # (written while the model prepares its answer)
        except BaseException:
            self.release_claimed(run)
            raise
        return True

    def start_claimed(self, run: Run) -> None:
        self._launch(self._claimed.pop(run.id))

    def release_claimed(self, run: Run) -> None:
        ctx = self._claimed.pop(run.id, None)
        if ctx is not None:
            ctx.drop_answer()
        self.store.bus.release(run.id)

    # --- maintenance: leases, orphans, expiry ---------------------------------------------------

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                if self._running:
                    cancelling, lost = await self.queue.renew(list(self._running))
                    for run_id in cancelling:
                        self.cancel_here(run_id)
                    for run_id in lost:  # another process resumes it: stop without a write
                        log.warning("run %s: its lease lapsed and another process took it over", run_id)
                        if (entry := self._running.get(run_id)) is not None:
                            entry[0].cancel()
                await self._recover_orphans(startup=False)
                await self._expire()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("run maintenance failed")

    async def _recover_orphans(self, startup: bool) -> None:
        """Take over the runs whose executor is gone and resume them, each in a transaction of
        its own, while this process has room (the others wait for a later pass, or another
        process); a run being cancelled ends."""
        async with self.store.writing() as writes:
            orphans = await self.queue.orphans(writes, startup)
        for run in orphans:
            if run.status != RunStatus.CANCELLING and self._room() <= 0:
                continue
            held_by = run.worker
            try:
                async with self.store.writing() as writes:
                    ctx = await resume.take_over(writes, self.queue, run, self.executor)
            except asyncio.CancelledError:
                raise
            except Exception:  # not resumable (a bug): it must not come back at every pass
                log.exception("run %s could not be resumed", run.id)
                async with self.store.writing() as writes:
                    run = await writes.fresh(run)
                    if run is not None and run.status in EXECUTING and run.worker == held_by:
                        await writes.end_unfinished(run, "The server executing the run stopped, and resuming "
                                                         "it failed (see the server log).")
                continue
            if ctx is not None:
                # A stream of the run in another process saw the dead executor's events up to a
                # point the rows do not keep (the resumed turn streams its answer again): it ends,
                # saying why, before the resumed run's first event.
                self.store.bus.publish(run.id, stream_error(RESUMED))
                self._launch(ctx)

    async def _expire(self) -> None:
        expired = []
        async with self.store.writing() as writes:
            for run in await self.queue.expired(writes):
                if await writes.end(run, RunStatus.EXPIRED, expect=(run.status,)):
                    expired.append(run.id)
        for run_id in expired:  # once committed: of several processes, one expires each run
            log.info("run %s expired", run_id)
