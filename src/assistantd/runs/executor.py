"""The run executor: one state machine, read top to bottom.

    queued → in_progress → (requires_action ↔ in_progress)* → completed | failed | cancelled
                                                               | expired | incomplete

The queue lives in the database. A process *claims* a queued run with one conditional UPDATE
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL), holds a lease on it while it executes, and every
transition is one function that persists the new state and then emits its event ("persist, then
emit"). Token deltas go to the event bus only; the message and step are written at their
boundaries. A run whose executor died is found by its lapsed lease and ended ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from assistantd import ids
from assistantd.api.text import repair
from assistantd.db import Database
from assistantd.db.models import Message, Run, RunStep
from assistantd.db.rows import insert_objects, update_object
from assistantd.files.storage import FileStore
from assistantd.runs import prompt as prompts
from assistantd.runs import tokens
from assistantd.runs.events import Event, EventBus
from assistantd.runs.failures import RunFailure, short_message
from assistantd.runs.schemas import RunObject, RunStepObject
from assistantd.sandbox.pool import SandboxPool
from assistantd.settings import Settings
from assistantd.threads.schemas import MessageObject
from assistantd.tools import code_interpreter, file_search
from assistantd.tools.partial_json import StreamingStringField
from assistantd.tools.presentation import string_argument, tool_type_of
from assistantd.upstream.client import UpstreamClient, UpstreamError
from assistantd.vector_stores.search import Searcher

log = logging.getLogger("assistantd.executor")

# What the boundaries change, written with one UPDATE each (assistantd.db.rows).
MESSAGE_END = ("content", "status", "completed_at", "incomplete_at", "incomplete_details")
STEP_END = ("status", "completed_at", "usage")
RUN_END = ("status", "completed_at", "failed_at", "cancelled_at", "last_error", "required_action",
           "incomplete_details", "usage", "worker", "lease_until")

LEASE_SECONDS = 10.0  # a run whose executor stops renewing this is orphaned
MAINTENANCE_INTERVAL = 3.0
POLL_INTERVAL = 1.0
CLAIM_BATCH = 32
MAX_TURNS = 50  # model turns in one run before it is failed (a model stuck calling tools)


class _Cancel:
    """Put on a run's chunk queue to stop reading the upstream."""


CANCEL = _Cancel()
_END = object()


@dataclass
class Turn:
    """What one upstream completion produced so far."""

    message: Message | None = None
    message_step: RunStep | None = None
    images: list[str] = field(default_factory=list)  # image_file parts that open the message
    text: list[str] = field(default_factory=list)
    tool_step: RunStep | None = None
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)  # upstream index → call
    usage: dict[str, int] | None = None
    finish_reason: str | None = None


@dataclass
class RunContext:
    run: Run
    turn: Turn | None = None
    queue: asyncio.Queue | None = None
    cancel_requested: bool = False
    images: list[str] = field(default_factory=list)  # files the tools made, not yet in a message
    sandbox_files: dict[str, str] = field(default_factory=dict)  # /mnt/data path → file id
    prompt_tokens: int = 0  # used by the run so far, across its turns
    completion_tokens: int = 0
    prompt: prompts.Prompt | None = None  # the next turn's, when it was built in the claiming transaction
    deadline: float = math.inf  # time.monotonic() by which this stretch of execution must end

    def __post_init__(self) -> None:
        usage = self.run.usage or {}
        self.prompt_tokens = usage.get("prompt_tokens", 0)
        self.completion_tokens = usage.get("completion_tokens", 0)

    @property
    def completion_budget(self) -> int | None:
        """Completion tokens the run may still use (None: no limit)."""
        limit = self.run.max_completion_tokens
        return None if limit is None else limit - self.completion_tokens


class RunCancelled(Exception):
    pass


class RunExecutor:
    def __init__(self, db: Database, bus: EventBus, upstream: UpstreamClient, files: FileStore,
                 settings: Settings, sandboxes: SandboxPool, searcher: Searcher | None = None) -> None:
        self.db, self.bus, self.upstream, self.files, self.settings = db, bus, upstream, files, settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.max_concurrent = settings.max_concurrent_runs
        self._wake = asyncio.Event()
        self._running: dict[str, tuple[asyncio.Task, RunContext]] = {}
        self._background: list[asyncio.Task] = []
        self._claimed: dict[str, RunContext] = {}  # claimed in transactions not yet committed
        self._stopping = False
        self.sandboxes = sandboxes
        self.searcher = searcher or Searcher(None)
        self.tool_runners: dict[str, Callable] = {"code_interpreter": code_interpreter.run,
                                                  "file_search": file_search.run}

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.recover(startup=True)
        self._background = [
            asyncio.create_task(self._claim_loop(), name="run-claims"),
            asyncio.create_task(self._maintenance_loop(), name="run-maintenance"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._background:
            task.cancel()
        for task, ctx in list(self._running.values()):
            self._signal_cancel(ctx)
            task.cancel()
        await asyncio.gather(*self._background, *(t for t, _ in self._running.values()),
                             return_exceptions=True)
        # Runs this process was executing are not left in progress for a later start to find.
        await self._fail_orphans(Run.worker == self.worker_id,
                                 "The server shut down while the run was in progress.")

    def wake(self) -> None:
        self._wake.set()

    def request_cancel(self, run_id: str) -> None:
        entry = self._running.get(run_id)
        if entry is not None:
            self._signal_cancel(entry[1])

    @staticmethod
    def _signal_cancel(ctx: RunContext) -> None:
        ctx.cancel_requested = True
        if ctx.queue is not None:
            ctx.queue.put_nowait(CANCEL)

    # --- claiming ------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            # Cleared before claiming, so a run queued while we claim is not missed.
            self._wake.clear()
            try:
                while (room := self._room()) > 0:
                    runs = await self._claim(min(room, CLAIM_BATCH))
                    for run in runs:
                        self._launch(RunContext(run))
                    if len(runs) < min(room, CLAIM_BATCH):
                        break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming runs failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)

    def _room(self) -> int:
        return self.max_concurrent - len(self._running) - len(self._claimed)

    def _launch(self, ctx: RunContext) -> None:
        run_id = ctx.run.id
        task = asyncio.create_task(self._execute(ctx), name=f"run-{run_id}")
        self._running[run_id] = (task, ctx)
        task.add_done_callback(lambda _t: self._running.pop(run_id, None))

    async def claim_created(self, session: AsyncSession, run: Run) -> bool:
        """Claim a run in the transaction that queued it, when this process has room for it.

        The claim is the same conditional move from ``queued`` as :meth:`_claim`'s, written in
        the request's transaction, and the run's next prompt is read there too: the run costs
        two transactions fewer and starts without waiting for the claim loop. The caller must
        then call :meth:`start_claimed` after its commit, or :meth:`release_claimed` if the
        transaction fails. Without room the run stays queued for whichever process claims it.
        """
        if self._stopping or self._room() <= 0:
            return False
        ctx = self._claimed[run.id] = RunContext(run)
        try:
            run.status, run.worker, run.lease_until = "in_progress", self.worker_id, time.time() + LEASE_SECONDS
            run.started_at = run.started_at or ids.now()
            await update_object(session, run, "status", "worker", "lease_until", "started_at")
            try:
                ctx.prompt = await self._prompt(session, ctx)
            except Exception:  # the run's own turn builds it again, and ends the run as it must
                ctx.prompt = None
        except BaseException:
            del self._claimed[run.id]
            raise
        return True

    def start_claimed(self, run: Run) -> None:
        self._launch(self._claimed.pop(run.id))

    def release_claimed(self, run: Run) -> None:
        self._claimed.pop(run.id, None)

    async def _claim(self, limit: int) -> list[Run]:
        """Take up to ``limit`` queued runs, oldest first, in one statement."""
        async with self.db.write() as session:
            result = await session.scalars(self._claim_statement, {
                "limit": limit, "worker": self.worker_id, "lease_until": time.time() + LEASE_SECONDS,
                "now": ids.now(),
            })
            return list(result)

    @functools.cached_property
    def _claim_statement(self):
        # Built once with bound parameters; SKIP LOCKED lets PostgreSQL processes claim side by side.
        candidates = select(Run.id).where(Run.status == "queued").order_by(Run.seq).limit(bindparam("limit"))
        if not self.db.is_sqlite:
            candidates = candidates.with_for_update(skip_locked=True)
        return (
            update(Run)
            .where(Run.id.in_(candidates.scalar_subquery()), Run.status == "queued")
            .values(status="in_progress", worker=bindparam("worker"), lease_until=bindparam("lease_until"),
                    started_at=func.coalesce(Run.started_at, bindparam("now")))
            .returning(Run)
            # No session objects to keep in step: skip the ORM's pre-select of matched rows.
            .execution_options(synchronize_session=False)
        )

    # --- maintenance: leases, orphans, expiry ---------------------------------------------------

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                await self._renew_leases()
                await self.recover(startup=False)
                await self._expire_waiting()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("run maintenance failed")

    async def _renew_leases(self) -> None:
        if not self._running:
            return
        async with self.db.write() as session:
            await session.execute(
                update(Run).where(Run.worker == self.worker_id, Run.id.in_(list(self._running)))
                .values(lease_until=time.time() + LEASE_SECONDS)
            )
            # A cancel made through another process shows up as a durable 'cancelling' flag.
            cancelling = await session.scalars(
                select(Run.id).where(Run.id.in_(list(self._running)), Run.status == "cancelling")
            )
        for run_id in cancelling:
            self.request_cancel(run_id)

    async def recover(self, startup: bool) -> None:
        """End runs whose executor is gone. On SQLite (one process) every run in progress at
        start-up is such a run; elsewhere a run is orphaned when its lease has lapsed, or at
        start-up when it was held by a process of this host that no longer exists."""
        if startup and self.db.is_sqlite:
            orphaned = Run.worker.is_not(None)
        else:
            orphaned = (Run.lease_until < time.time()) & (Run.worker != self.worker_id)
            if startup:
                async with self.db.read() as session:
                    workers = set((await session.scalars(
                        select(Run.worker).where(Run.status.in_(("in_progress", "cancelling")))
                    )).all())
                dead = [w for w in workers if w and self._is_dead_local_worker(w)]
                if dead:
                    orphaned = orphaned | Run.worker.in_(dead)
        await self._fail_orphans(orphaned, "The run was interrupted: the server executing it stopped.")

    def _is_dead_local_worker(self, worker: str) -> bool:
        """A worker id is ``host:pid:token``. On this host, a pid that is gone — or that is this
        very process under another token (a restarted container is pid 1 again) — is dead."""
        host, _, rest = worker.partition(":")
        pid_text, _, token = rest.partition(":")
        if host != socket.gethostname() or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        if pid == os.getpid():
            return worker != self.worker_id
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    async def _fail_orphans(self, condition, message: str) -> None:
        async with self.db.write() as session:
            runs = (await session.scalars(
                select(Run).where(Run.status.in_(("in_progress", "cancelling")), condition)
            )).all()
            closed = {}
            for run in runs:
                if run.status == "cancelling":
                    closed[run.id] = await self._persist_cancelled(session, run)
                else:
                    closed[run.id] = await self._persist_failed(session, run, "server_error", message)
        for run in runs:
            self._emit_all(run.id, closed[run.id])
            self._emit_final(run)

    async def _expire_waiting(self) -> None:
        now = ids.now()
        async with self.db.write() as session:
            runs = (await session.scalars(
                select(Run).where(Run.status.in_(("queued", "requires_action")), Run.expires_at < now)
            )).all()
            closed = {}
            for run in runs:
                run.status, run.required_action = "expired", None
                closed[run.id] = await self._close_open(session, run, step_status="expired",
                                                        message_reason="run_expired")
        for run in runs:
            self._emit_all(run.id, closed[run.id])
            self._emit_final(run)

    # --- executing one run ----------------------------------------------------------------------

    async def _execute(self, ctx: RunContext) -> None:
        """Execute the run until it ends or waits for tool outputs: one stretch of execution,
        which ``run_timeout`` bounds (a run re-queued by submit_tool_outputs starts a new one,
        so the time spent waiting for outputs is not counted)."""
        run = ctx.run
        ctx.deadline = time.monotonic() + self.settings.run_timeout
        self.emit(run.id, "thread.run.in_progress", RunObject.from_row, run)
        try:
            for _ in range(MAX_TURNS):
                if ctx.cancel_requested:
                    raise RunCancelled()
                if time.monotonic() >= ctx.deadline:
                    raise RunFailure("server_error", self._run_timeout_message())
                if not await self._turn(ctx):
                    return
            await self._finish_failed(ctx, "server_error",
                                      f"The run made more than {MAX_TURNS} model turns without answering.")
        except RunCancelled:
            await self._finish_cancelled(ctx)
        except RunFailure as exc:  # the upstream's failure, or a tool's
            await self._fail_safely(ctx, exc.code, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The exception's text can hold anything (the request, a tool's output): it goes
            # to the log, and the run says only what kind of error it was.
            log.exception("run %s failed", run.id)
            await self._fail_safely(ctx, "server_error", f"Internal error while executing the run "
                                                         f"({type(exc).__name__}); see the server log.")

    async def _fail_safely(self, ctx: RunContext, code: str, message: str) -> None:
        """End the run failed, keeping what it had said; if even that fails, end it without."""
        try:
            await self._finish_failed(ctx, code, message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run %s: keeping its partial answer failed", ctx.run.id)
            await self._fail_orphans(Run.id == ctx.run.id, short_message(message))

    def _run_timeout_message(self) -> str:
        return f"The run did not finish within {self.settings.run_timeout:g} s (ASSISTANTD_RUN_TIMEOUT)."

    async def _turn(self, ctx: RunContext) -> bool:
        """One model turn. Returns True when the run goes on with another turn."""
        run = ctx.run
        budget = ctx.completion_budget
        if budget is not None and budget <= 0:
            await self._finish_incomplete(ctx, Turn(), "max_completion_tokens")
            return False
        if run.max_prompt_tokens is not None and ctx.prompt_tokens >= run.max_prompt_tokens:
            await self._finish_incomplete(ctx, Turn(), "max_prompt_tokens")
            return False
        prompt, ctx.prompt = ctx.prompt, None
        try:
            if prompt is None:
                async with self.db.read() as session:
                    prompt = await self._prompt(session, ctx)
        except prompts.PromptTooLong:
            await self._finish_incomplete(ctx, Turn(), "max_prompt_tokens")
            return False

        turn = ctx.turn = Turn()
        ctx.queue = asyncio.Queue()
        # The turn's deadline, or the run's when that comes first: an upstream that keeps its
        # stream alive (SSE comments, a token an hour) never trips the read timeout.
        limit = self.settings.upstream_turn_timeout
        expired = (f"The model did not finish its answer within {limit:g} s "
                   "(ASSISTANTD_UPSTREAM_TURN_TIMEOUT).")
        if ctx.deadline - time.monotonic() < limit:
            limit, expired = max(0.0, ctx.deadline - time.monotonic()), self._run_timeout_message()
        pump = asyncio.create_task(self._pump(prompt.body, ctx.queue, limit, expired))
        try:
            while True:
                item = await ctx.queue.get()
                if item is _END:
                    break
                if item is CANCEL:
                    raise RunCancelled()
                if isinstance(item, BaseException):
                    raise item
                await self._on_chunk(ctx, turn, item)
        finally:
            ctx.queue = None
            if not pump.done():
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump

        usage = turn.usage or {
            "prompt_tokens": prompt.prompt_tokens,
            "completion_tokens": tokens.count("".join(turn.text))
            + sum(tokens.count(c["arguments"]) for c in turn.calls.values()),
        }
        usage = {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                 "completion_tokens": int(usage.get("completion_tokens") or 0)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        turn.usage = usage
        ctx.prompt_tokens += usage["prompt_tokens"]
        ctx.completion_tokens += usage["completion_tokens"]

        if turn.finish_reason == "length":
            await self._finish_incomplete(ctx, turn, "max_completion_tokens")
            return False
        if turn.calls:
            return await self._after_tool_calls(ctx, turn)
        await self._finish_completed(ctx, turn)
        return False

    async def _prompt(self, session: AsyncSession, ctx: RunContext) -> prompts.Prompt:
        run = ctx.run
        return await prompts.build(session, self.files, run, self.upstream_model(run.model),
                                   self.settings.context_windows, ctx.completion_budget,
                                   first_turn=run.usage is None)

    async def _pump(self, body: dict[str, Any], queue: asyncio.Queue, limit: float, expired: str) -> None:
        """Read the upstream stream into ``queue`` within ``limit`` seconds, else fail with
        ``expired`` (network only: cancelling it is always safe)."""
        try:
            async with asyncio.timeout(limit):
                async for chunk in self.upstream.stream_chat(body):
                    queue.put_nowait(chunk)
            queue.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            queue.put_nowait(UpstreamError("server_error", expired))
        except UpstreamError as exc:
            queue.put_nowait(exc)
        except Exception as exc:
            log.exception("reading the model's answer failed")
            queue.put_nowait(UpstreamError("server_error", f"Reading the model's answer failed "
                                                           f"({type(exc).__name__}); see the server log."))

    def upstream_model(self, model: str) -> str:
        return self.settings.model_map.get(model, model)

    # --- chunks → boundaries and deltas ---------------------------------------------------------

    async def _on_chunk(self, ctx: RunContext, turn: Turn, chunk: dict[str, Any]) -> None:
        if chunk.get("usage"):
            turn.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                if turn.message is None:
                    await self._open_message(ctx, turn)
                turn.text.append(content)
                self.emit_raw(ctx.run.id, "thread.message.delta", {
                    "id": turn.message.id, "object": "thread.message.delta",
                    "delta": {"content": [{"index": len(turn.images), "type": "text",
                                           "text": {"value": content, "annotations": []}}]},
                })
            for call_delta in delta.get("tool_calls") or ():
                await self._on_tool_call_delta(ctx, turn, call_delta)
            if choice.get("finish_reason"):
                turn.finish_reason = choice["finish_reason"]

    async def _on_tool_call_delta(self, ctx: RunContext, turn: Turn, call_delta: dict[str, Any]) -> None:
        upstream_index = call_delta.get("index", 0)
        function = call_delta.get("function") or {}
        call = turn.calls.get(upstream_index)
        if call is None:
            if turn.tool_step is None:
                await self._open_tool_step(ctx, turn)
            name = function.get("name") or ""
            kind = tool_type_of(name, ctx.run.tools)
            call = {"index": len(turn.calls), "id": ids.new_id("call_"), "name": name, "type": kind,
                    "arguments": "", "code": StreamingStringField("code") if kind == "code_interpreter" else None}
            turn.calls[upstream_index] = call
            self.emit_raw(ctx.run.id, "thread.run.step.delta", _step_delta(turn.tool_step.id, call, first=True))
        elif function.get("name"):
            call["name"] += function["name"]
        piece = function.get("arguments") or ""
        if not piece:
            return
        call["arguments"] += piece
        if call["type"] == "function":
            self.emit_raw(ctx.run.id, "thread.run.step.delta", _step_delta(turn.tool_step.id, call, piece=piece))
        elif call["code"] is not None:
            # The code, not its JSON wrapping, streams out as code_interpreter.input.
            code = repair(call["code"].feed(piece))  # its JSON may escape a lone surrogate
            if code:
                self.emit_raw(ctx.run.id, "thread.run.step.delta", _step_delta(turn.tool_step.id, call, piece=code))

    # --- boundaries (persist, then emit) --------------------------------------------------------

    def _new_step(self, run: Run, kind: str, details: dict[str, Any]) -> RunStep:
        return RunStep(id=ids.new_id("step_"), tenant=run.tenant, created_at=ids.now(), run_id=run.id,
                       thread_id=run.thread_id, assistant_id=run.assistant_id, type=kind,
                       status="in_progress", step_details=details, last_error=None, expired_at=None,
                       cancelled_at=None, failed_at=None, completed_at=None, metadata_={}, usage=None)

    async def _open_message(self, ctx: RunContext, turn: Turn) -> None:
        run = ctx.run
        # Images the run's tools made since its last message open this one.
        turn.images, ctx.images = ctx.images, []
        message = Message(id=ids.new_id("msg_"), tenant=run.tenant, created_at=ids.now(),
                          thread_id=run.thread_id, status="in_progress", incomplete_details=None,
                          completed_at=None, incomplete_at=None, role="assistant",
                          content=_image_parts(turn.images),
                          assistant_id=run.assistant_id, run_id=run.id, attachments=[], metadata_={})
        step = self._new_step(run, "message_creation",
                              {"type": "message_creation", "message_creation": {"message_id": message.id}})
        async with self.db.write() as session:
            await insert_objects(session, message, step)
        turn.message, turn.message_step = message, step
        self.emit(run.id, ("thread.run.step.created", "thread.run.step.in_progress"), RunStepObject.from_row, step)
        self.emit(run.id, ("thread.message.created", "thread.message.in_progress"), MessageObject.from_row, message)

    async def _open_tool_step(self, ctx: RunContext, turn: Turn) -> None:
        step = self._new_step(ctx.run, "tool_calls", {"type": "tool_calls", "tool_calls": []})
        # Text before the tool calls is a finished message of its own.
        await self._close_message(ctx, turn, status="completed")
        async with self.db.write() as session:
            session.add(step)
        turn.tool_step = step
        self.emit(ctx.run.id, ("thread.run.step.created", "thread.run.step.in_progress"),
                  RunStepObject.from_row, step)

    async def _finalize_message(self, ctx: RunContext, turn: Turn, status: str, reason: str | None = None) -> None:
        message, now = turn.message, ids.now()
        text = "".join(turn.text)
        content = _image_parts(turn.images)
        if text:
            found = annotations(text, ctx.sandbox_files)
            if "【" in text:
                found += file_search.citations(text, await file_search.citation_sources(self, ctx.run.id))
            found.sort(key=lambda a: a["start_index"])
            content.append({"type": "text", "text": {"value": text, "annotations": found}})
        message.content = content
        message.status = status
        if status == "completed":
            message.completed_at = now
        else:
            message.incomplete_at, message.incomplete_details = now, {"reason": reason}

    async def _close_message(self, ctx: RunContext, turn: Turn, status: str) -> None:
        """Persist the turn's message (if one is open and not yet closed) and its step."""
        if turn.message is None or turn.message.status != "in_progress":
            return
        await self._finalize_message(ctx, turn, status)
        step = turn.message_step
        step.status, step.completed_at = "completed", ids.now()
        async with self.db.write() as session:
            await update_object(session, turn.message, *MESSAGE_END)
            await update_object(session, step, *STEP_END)
        self.emit(ctx.run.id, "thread.message.completed", MessageObject.from_row, turn.message)
        self.emit(ctx.run.id, "thread.run.step.completed", RunStepObject.from_row, step)

    def _tool_calls_details(self, turn: Turn) -> list[dict[str, Any]]:
        details = []
        for call in sorted(turn.calls.values(), key=lambda c: c["index"]):
            if call["type"] == "function":
                details.append({"id": call["id"], "type": "function",
                                "function": {"name": call["name"], "arguments": call["arguments"],
                                             "output": None}})
            elif call["type"] == "code_interpreter":
                details.append({"id": call["id"], "type": "code_interpreter",
                                "code_interpreter": {"input": repair(string_argument(call["arguments"], "code")),
                                                     "outputs": []},
                                "_arguments": call["arguments"], "_index": call["index"]})
            else:
                details.append({"id": call["id"], "type": call["type"], call["type"]: {},
                                "_arguments": call["arguments"], "_index": call["index"]})
        return details

    async def _after_tool_calls(self, ctx: RunContext, turn: Turn) -> bool:
        run = ctx.run
        await self._close_message(ctx, turn, status="completed")
        calls = self._tool_calls_details(turn)
        # Built-in tools run here; their results are persisted before the next turn.
        for i, call in enumerate(calls):
            if call["type"] != "function":
                if ctx.cancel_requested:
                    raise RunCancelled()
                calls[i] = await self._run_builtin(ctx, turn, call)
        functions = [c for c in calls if c["type"] == "function"]
        if functions and ctx.cancel_requested:  # do not hand a cancelled run back to the client
            raise RunCancelled()
        step = turn.tool_step
        step.step_details = {"type": "tool_calls", "tool_calls": calls}
        step.usage = turn.usage
        self._add_usage(run, turn.usage)
        async with self.db.write() as session:
            if functions:
                required = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [
                    {"id": c["id"], "type": "function",
                     "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}}
                    for c in functions
                ]}}
                values = {"status": "requires_action", "required_action": required, "usage": run.usage,
                          "expires_at": ids.now() + self.settings.run_expiry_seconds,
                          "worker": None, "lease_until": None}
                # Only a run still in progress waits for outputs: a cancel that came in meanwhile
                # (status 'cancelling', maybe from another process) must not be overwritten.
                moved = await session.execute(
                    update(Run).where(Run.id == run.id, Run.status == "in_progress").values(**values)
                )
                if not moved.rowcount:
                    raise RunCancelled()
                session.add(step)
                for key, value in values.items():
                    set_committed_value(run, key, value)
            else:
                step.status, step.completed_at = "completed", ids.now()
                session.add_all([step, run])
        if functions:
            self.emit(run.id, "thread.run.requires_action", RunObject.from_row, run)
            return False
        self.emit(run.id, "thread.run.step.completed",
                  functools.partial(RunStepObject.from_row, include_search_content=run.include_search_content), step)
        return True

    async def _run_builtin(self, ctx: RunContext, turn: Turn, call: dict[str, Any]) -> dict[str, Any]:
        runner = self.tool_runners.get(call["type"])
        if runner is None:
            output = f"The {call['type']} tool is not available on this server."
            return {**call, "_output": output}
        return await runner(self, ctx, turn, call)

    @staticmethod
    def _add_usage(run: Run, usage: dict[str, int] | None) -> None:
        if not usage:
            return
        total = dict(run.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            total[key] = total.get(key, 0) + usage.get(key, 0)
        run.usage = total

    # --- terminal transitions -------------------------------------------------------------------

    async def _finish_completed(self, ctx: RunContext, turn: Turn) -> None:
        run, now = ctx.run, ids.now()
        if turn.message is not None:
            await self._finalize_message(ctx, turn, "completed")
            turn.message_step.status, turn.message_step.completed_at = "completed", now
            turn.message_step.usage = turn.usage
        run.status, run.completed_at = "completed", now
        self._add_usage(run, turn.usage)
        async with self.db.write() as session:
            if turn.message is not None:
                await update_object(session, turn.message, *MESSAGE_END)
                await update_object(session, turn.message_step, *STEP_END)
            await self._end_run(session, run)
        if turn.message is not None:
            self.emit(run.id, "thread.message.completed", MessageObject.from_row, turn.message)
            self.emit(run.id, "thread.run.step.completed", RunStepObject.from_row, turn.message_step)
        self._emit_final(run)

    async def _finish_incomplete(self, ctx: RunContext, turn: Turn, reason: str) -> None:
        run, now = ctx.run, ids.now()
        run.status, run.incomplete_details = "incomplete", {"reason": reason}
        self._add_usage(run, turn.usage)
        cut_short = turn.message is not None and turn.message.status == "in_progress"
        async with self.db.write() as session:
            if cut_short:
                await self._finalize_message(ctx, turn, "incomplete", "max_tokens")
                turn.message_step.status, turn.message_step.completed_at = "completed", now
                turn.message_step.usage = turn.usage
                session.add(turn.message)
                session.add(turn.message_step)
            closed = await self._close_open(session, run, step_status="cancelled", message_reason="max_tokens")
            await self._end_run(session, run)
        if cut_short:
            self.emit(run.id, "thread.message.incomplete", MessageObject.from_row, turn.message)
            self.emit(run.id, "thread.run.step.completed", RunStepObject.from_row, turn.message_step)
        self._emit_all(run.id, closed)
        self._emit_final(run)

    async def _finish_failed(self, ctx: RunContext, code: str, message: str) -> None:
        run = ctx.run
        async with self.db.write() as session:
            closed = await self._persist_partial(session, ctx, "run_failed")
            closed += await self._persist_failed(session, run, code, message)
        self._emit_all(run.id, closed)
        self._emit_final(run)

    async def _finish_cancelled(self, ctx: RunContext) -> None:
        run = ctx.run
        async with self.db.write() as session:
            closed = await self._persist_partial(session, ctx, "run_cancelled")
            closed += await self._persist_cancelled(session, run)
        self._emit_all(run.id, closed)
        self._emit_final(run)

    async def _persist_partial(self, session: AsyncSession, ctx: RunContext, reason: str) -> list[Event]:
        """Keep what the model had said when the run ended early: an incomplete message."""
        turn = ctx.turn
        if turn is None or turn.message is None or turn.message.status != "in_progress":
            return []
        await self._finalize_message(ctx, turn, "incomplete", reason)
        session.add(turn.message)
        return [Event.of("thread.message.incomplete", MessageObject.from_row(turn.message))]

    async def _persist_failed(self, session: AsyncSession, run: Run, code: str, message: str) -> list[Event]:
        run.status, run.failed_at = "failed", ids.now()
        run.last_error = {"code": code, "message": short_message(message)}
        run.required_action = None
        closed = await self._close_open(session, run, step_status="failed", message_reason="run_failed",
                                        last_error=run.last_error)
        await self._end_run(session, run)
        return closed

    async def _persist_cancelled(self, session: AsyncSession, run: Run) -> list[Event]:
        run.status, run.cancelled_at, run.required_action = "cancelled", ids.now(), None
        closed = await self._close_open(session, run, step_status="cancelled", message_reason="run_cancelled")
        await self._end_run(session, run)
        return closed

    async def _close_open(self, session: AsyncSession, run: Run, step_status: str, message_reason: str,
                          last_error: dict[str, Any] | None = None) -> list[Event]:
        """End the run's steps and messages still in progress along with the run; return the
        events that say so, to emit once this is committed (a stream sees them end)."""
        now = ids.now()
        stamp = {"failed": "failed_at", "cancelled": "cancelled_at", "expired": "expired_at"}[step_status]
        values: dict[str, Any] = {"status": step_status, stamp: now}
        if step_status == "failed":
            code = (last_error or {}).get("code")
            values["last_error"] = {"code": code if code in ("server_error", "rate_limit_exceeded") else "server_error",
                                    "message": (last_error or {}).get("message", "")}
        messages = (await session.scalars(
            update(Message).where(Message.run_id == run.id, Message.status == "in_progress")
            .values(status="incomplete", incomplete_at=now, incomplete_details={"reason": message_reason})
            .returning(Message)
        )).all()
        steps = (await session.scalars(
            update(RunStep).where(RunStep.run_id == run.id, RunStep.status == "in_progress")
            .values(**values).returning(RunStep)
        )).all()
        return ([Event.of("thread.message.incomplete", MessageObject.from_row(m)) for m in messages]
                + [Event.of(f"thread.run.step.{step_status}", RunStepObject.from_row(s)) for s in steps])

    async def _end_run(self, session: AsyncSession, run: Run) -> None:
        run.worker, run.lease_until = None, None
        if run.status in ("completed", "failed", "cancelled", "expired", "incomplete"):
            run.required_action = None
        await update_object(session, run, *RUN_END)

    def _emit_all(self, run_id: str, events: list[Event]) -> None:
        if self.bus.watched(run_id):
            for event in events:
                self.bus.publish(run_id, event)

    def _emit_final(self, run: Run) -> None:
        self.emit(run.id, f"thread.run.{run.status}", RunObject.from_row, run)

    # --- events ---------------------------------------------------------------------------------

    def emit(self, run_id: str, names: str | tuple[str, ...], build: Callable[[Any], Any], row: Any) -> None:
        """Publish ``build(row)`` as each event of ``names`` (serialised once); nothing is built
        when no stream watches the run."""
        if not self.bus.watched(run_id):
            return
        data = build(row).model_dump_json(by_alias=True)
        for name in (names,) if isinstance(names, str) else names:
            self.bus.publish(run_id, Event(name, data))

    def emit_raw(self, run_id: str, name: str, payload: dict[str, Any]) -> None:
        if self.bus.watched(run_id):
            self.bus.publish(run_id, Event(name, json.dumps(payload, separators=(",", ":"))))


def _image_parts(file_ids: list[str]) -> list[dict[str, Any]]:
    return [{"type": "image_file", "image_file": {"file_id": f}} for f in file_ids]


SANDBOX_LINK = re.compile(r"sandbox:(/mnt/data/[^\s)\]\"'<>]+)")


def annotations(text: str, sandbox_files: dict[str, str]) -> list[dict[str, Any]]:
    """``sandbox:/mnt/data/<name>`` links to files the run wrote become ``file_path`` annotations."""
    found = []
    for match in SANDBOX_LINK.finditer(text):
        file_id = sandbox_files.get(match.group(1).rstrip(".,;:"))
        if file_id is None:
            continue
        end = match.start() + len("sandbox:") + len(match.group(1).rstrip(".,;:"))
        found.append({"type": "file_path", "text": text[match.start():end], "start_index": match.start(),
                      "end_index": end, "file_path": {"file_id": file_id}})
    return found


def _step_delta(step_id: str, call: dict[str, Any], *, first: bool = False, piece: str = "") -> dict[str, Any]:
    kind = call["type"]
    entry: dict[str, Any] = {"index": call["index"], "type": kind}
    if first:
        entry["id"] = call["id"]
    if kind == "function":
        entry["function"] = {"name": call["name"], "arguments": piece, "output": None} if first \
            else {"arguments": piece}
    elif kind == "code_interpreter":
        entry["code_interpreter"] = {"input": "", "outputs": []} if first else {"input": piece}
    else:
        entry[kind] = {}
    return {"id": step_id, "object": "thread.run.step.delta",
            "delta": {"step_details": {"type": "tool_calls", "tool_calls": [entry]}}}
