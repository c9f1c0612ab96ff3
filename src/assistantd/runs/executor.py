"""The run executor: one run's life, read top to bottom.

A claimed run (:mod:`assistantd.runs.worker`) executes turn after turn: the prompt is built from
the database (:mod:`assistantd.runs.prompt`), the model's answer streams in and is read by a
:class:`~assistantd.runs.turn.TurnReader`; text becomes an assistant message, tool calls a
``tool_calls`` step. Built-in tools run here (:mod:`assistantd.tools`) and the run takes another
turn; calls of the client's functions end the stretch in ``requires_action``. A turn without tool
calls completes the run. Token deltas go to the stream only; messages and steps are written at
their boundaries, through :mod:`assistantd.runs.store` ("persist, then emit"), and a run whose
process died is resumed from the last of them (:mod:`assistantd.runs.resume`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from assistantd import ids
from assistantd.db.models import RunStep
from assistantd.files.storage import FileStore
from assistantd.runs import prompt as prompts
from assistantd.runs.context import (CALL_PENDING, CALL_STARTED, OpenMessage, PendingCalls, RunCancelled, RunContext,
                                     Turn)
from assistantd.runs.events import Event
from assistantd.runs.failures import RunFailure, short_message
from assistantd.runs.schemas import RequiredAction, RunStepDeltaEvent
from assistantd.runs.states import MessageStatus, RunStatus, StepStatus
from assistantd.runs.store import RunStore, Writes, new_message, new_step
from assistantd.runs.turn import InputDelta, TextDelta, ToolCallDraft, ToolCallStarted, TurnReader
from assistantd.settings import Settings
from assistantd.tools.annotations import annotate
from assistantd.tools.base import ToolContext, ToolFailure
from assistantd.tools.presentation import tool_type_of
from assistantd.tools.registry import ToolRegistry
from assistantd.tools.schemas import Function, FunctionToolCall
from assistantd.upstream.client import END_OF_ANSWER, ChatStream, UpstreamClient

__all__ = ["RunContext", "RunExecutor"]

log = logging.getLogger("assistantd.executor")

MAX_TURNS = 50  # model turns in one run before it is failed (a model stuck calling tools)


class RunExecutor:
    def __init__(self, store: RunStore, upstream: UpstreamClient, files: FileStore, settings: Settings,
                 tools: ToolRegistry) -> None:
        self.store, self.upstream, self.files, self.settings, self.tools = store, upstream, files, settings, tools
        self._streamed = tools.streamed_arguments()

    # --- the run ----------------------------------------------------------------------------------

    async def execute(self, ctx: RunContext) -> None:
        """Execute the run until it ends or waits for tool outputs: one stretch of execution,
        which ``run_timeout`` bounds (a run re-queued by submit_tool_outputs, or resumed after its
        process died, starts a new one, so the time spent waiting for outputs is not counted)."""
        ctx.deadline = time.monotonic() + self.settings.run_timeout
        try:
            await self._execute(ctx)
        finally:
            ctx.drop_answer()  # a request sent early whose turn never came (the run ended first)

    async def _execute(self, ctx: RunContext) -> None:
        try:
            # A resumed run (runs/resume.py) first finishes the calls its last turn made.
            if ctx.pending is not None and not await self._run_calls(ctx, ctx.pending):
                return
            while ctx.turns < MAX_TURNS:
                if ctx.cancel_requested:
                    raise RunCancelled()
                if time.monotonic() >= ctx.deadline:
                    raise RunFailure("server_error", self._run_timeout_message())
                ctx.turns += 1
                if not await self._turn(ctx):
                    return
            raise RunFailure("server_error", f"The run made more than {MAX_TURNS} model turns without answering.")
        except RunCancelled:
            await self._end_early(ctx, RunStatus.CANCELLED, "run_cancelled")
        except (RunFailure, ToolFailure) as exc:  # the upstream's failure, or a tool's
            await self._fail_safely(ctx, exc.code, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The exception's text can hold anything (the request, a tool's output): it goes
            # to the log, and the run says only what kind of error it was.
            log.exception("run %s failed", ctx.run.id)
            await self._fail_safely(ctx, "server_error", f"Internal error while executing the run "
                                                         f"({type(exc).__name__}); see the server log.")

    async def _turn(self, ctx: RunContext) -> bool:
        """One model turn. Returns True when the run goes on with another turn."""
        run = ctx.run
        budget = ctx.completion_budget
        if budget is not None and budget <= 0:
            return await self._end_incomplete(ctx, "max_completion_tokens")
        if run.max_prompt_tokens is not None and ctx.prompt_tokens >= run.max_prompt_tokens:
            return await self._end_incomplete(ctx, "max_prompt_tokens")
        prompt, ctx.prompt = ctx.prompt, None
        try:
            if prompt is None:
                async with self.store.db.read() as session:
                    prompt = await self.prompt(session, ctx)
        except prompts.PromptTooLong:
            return await self._end_incomplete(ctx, "max_prompt_tokens")

        turn = Turn(TurnReader(lambda name: tool_type_of(name, run.tools), lambda: ids.new_id("call_"),
                               self._streamed))
        await self._read_answer(ctx, turn, prompt)
        turn.usage = turn.reader.final_usage(prompt.prompt_tokens)
        ctx.add_usage(turn.usage)
        if turn.reader.finish_reason == "length":
            return await self._end_incomplete(ctx, "max_completion_tokens", turn)
        if turn.reader.calls:
            return await self._tool_calls(ctx, turn)
        async with self.store.writing() as writes:
            await self._end_message(writes, ctx, MessageStatus.COMPLETED, usage=turn.usage)
            await writes.end(run, RunStatus.COMPLETED, usage=run.usage)
        return False

    async def prompt(self, session: AsyncSession, ctx: RunContext) -> prompts.Prompt:
        run = ctx.run
        return await prompts.build(session, self.files, run, self.settings.model_map.get(run.model, run.model),
                                   self.settings.context_windows, ctx.completion_budget,
                                   first_turn=run.usage is None)

    async def prompt_or_none(self, session: AsyncSession, ctx: RunContext) -> prompts.Prompt | None:
        """The first prompt, read in the claiming transaction; None when it cannot be built
        (the run's own turn builds it again, and ends the run as it must)."""
        try:
            return await self.prompt(session, ctx)
        except Exception:
            return None

    def send_early(self, ctx: RunContext) -> bool:
        """Send the first turn's request now, its prompt being known (built in the claiming
        transaction): the model's wait for its first token overlaps the commit, the client's
        first events and the run's start, instead of following them. Its chunks wait in the
        turn's stream; a run that ends before its turn reads them drops the request
        (:meth:`RunContext.drop_answer`). Only for a turn that will be taken: not when the
        run's budget is already spent (``_turn`` ends it without a request). Returns whether
        it was sent."""
        prompt, run = ctx.prompt, ctx.run
        budget = ctx.completion_budget
        if prompt is None or (budget is not None and budget <= 0) or \
                (run.max_prompt_tokens is not None and ctx.prompt_tokens >= run.max_prompt_tokens):
            return False
        ctx.answer = self._send(ctx, prompt, time.monotonic() + self.settings.run_timeout)
        return True

    # --- the model's answer, as it streams --------------------------------------------------------

    def _send(self, ctx: RunContext, prompt: prompts.Prompt, deadline: float) -> ChatStream:
        """Start the turn's request: its answer must end within the turn's deadline, or the
        run's when that comes first (an upstream that keeps its stream alive, SSE comments or a
        token an hour, never trips the read timeout). A cancel interrupts it
        (:meth:`RunContext.request_cancel`)."""
        limit = self.settings.upstream_turn_timeout
        expired = f"The model did not finish its answer within {limit:g} s (ASSISTANTD_UPSTREAM_TURN_TIMEOUT)."
        if deadline - time.monotonic() < limit:
            limit, expired = max(0.0, deadline - time.monotonic()), self._run_timeout_message()
        stream = ctx.stream = self.upstream.open_chat(prompt.body, limit, expired)
        if ctx.cancel_requested:
            stream.interrupt(RunCancelled())
        return stream

    async def _read_answer(self, ctx: RunContext, turn: Turn, prompt: prompts.Prompt) -> None:
        stream, ctx.answer = ctx.answer, None
        stream = stream or self._send(ctx, prompt, ctx.deadline)
        run_id, feed = ctx.run.id, turn.reader.feed

        def take(chunk: dict[str, Any]) -> bool:
            """A chunk as it arrives, while this task waits for the next (ChatStream.sink): the
            text of a message already announced goes on here, without waking this task; anything
            else (a tool call, a message to open or announce) is left to the loop below."""
            opened = ctx.open_message
            if opened is None or opened.held is not None:
                return False
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta")
                if delta and delta.get("tool_calls"):
                    return False
            for happening in feed(chunk):  # (text only, then)
                self._go_on(run_id, opened, happening.value)
            return True

        stream.take = take
        try:
            while (chunk := await stream.next()) is not END_OF_ANSWER:
                for happening in feed(chunk):
                    opened = ctx.open_message
                    if type(happening) is TextDelta and opened is not None and opened.held is None:
                        self._go_on(run_id, opened, happening.value)  # (_on's first branch, without its await)
                    else:
                        await self._on(ctx, turn, happening)
        finally:
            ctx.stream = None
            await stream.aclose()

    async def _on(self, ctx: RunContext, turn: Turn, happening: TextDelta | ToolCallStarted | InputDelta) -> None:
        run_id = ctx.run.id
        if isinstance(happening, TextDelta):
            if ctx.open_message is None:
                await self._open_message(ctx)
            elif ctx.open_message.held is not None:
                self._announce(run_id, ctx.open_message)
            self._go_on(run_id, ctx.open_message, happening.value)
        elif isinstance(happening, ToolCallStarted):
            if turn.tool_step is None:
                await self._open_tool_step(ctx, turn)
            call = happening.call
            tool = self.tools.get(call.type)
            body = {"name": call.name, "arguments": "", "output": None} if tool is None else tool.opening()
            self.store.emit_now(run_id, "thread.run.step.delta",
                                RunStepDeltaEvent.tool_call(turn.tool_step.id, call.index, call.type, body, call.id))
        else:
            call = happening.call
            tool = self.tools.get(call.type)
            body = {"arguments": happening.piece} if tool is None else tool.input_delta(happening.piece)
            self.store.emit_now(run_id, "thread.run.step.delta",
                                RunStepDeltaEvent.tool_call(turn.tool_step.id, call.index, call.type, body))

    def _go_on(self, run_id: str, opened: OpenMessage, value: str) -> None:
        """A token of the open message, announced: its text goes on, its delta to the stream
        (the per-token path: no model, one concatenation)."""
        opened.text.append(value)
        bus = self.store.bus
        if bus.watched(run_id):
            bus.publish(run_id, Event("thread.message.delta", opened.delta(value)))

    # --- messages and steps (persist, then emit) --------------------------------------------------

    def _new_message(self, ctx: RunContext) -> OpenMessage:
        run = ctx.run
        # Images the run's tools showed since its last message open this one.
        images, ctx.images = ctx.images, []
        message = new_message(run, [{"type": "image_file", "image_file": {"file_id": f}} for f in images])
        step = new_step(run, "message_creation", {"type": "message_creation",
                                                  "message_creation": {"message_id": message.id}})
        return OpenMessage(message, step)

    async def _open_message(self, ctx: RunContext) -> None:
        opened = self._new_message(ctx)
        async with self.store.writing() as writes:
            await writes.insert(opened.message, opened.step)
            writes.emit_opening(ctx.run, opened.step, opened.message)
        ctx.open_message = opened

    async def open_early(self, writes: Writes, ctx: RunContext) -> None:
        """Write the first turn's message and its step in ``writes`` (the claiming transaction),
        while the model prepares its answer, when that answer can only be text (the run has no
        tools): the run's first text then goes out without a transaction of its own. Their events
        are held until that text comes (:meth:`_announce`); an answer with no text deletes them
        unannounced (:meth:`_end_message`), as if never opened."""
        if ctx.run.tools or ctx.open_message is not None or ctx.images:
            return
        opened = self._new_message(ctx)
        await writes.insert(opened.message, opened.step)
        opened.held = writes.held_opening(ctx.run, opened.step, opened.message)
        ctx.open_message = opened

    def _announce(self, run_id: str, opened: OpenMessage) -> None:
        """Publish the held events of a message opened early (its rows are committed)."""
        held, opened.held = opened.held, None
        for watched_id, event in held or ():
            self.store.bus.publish(watched_id, event)

    async def _open_tool_step(self, ctx: RunContext, turn: Turn) -> None:
        step = turn.tool_step = new_step(ctx.run, "tool_calls", {"type": "tool_calls", "tool_calls": []})
        async with self.store.writing() as writes:
            # Text before the tool calls is a finished message of its own.
            await self._end_message(writes, ctx, MessageStatus.COMPLETED)
            await writes.insert(step)
            writes.emit_step(ctx.run, ("thread.run.step.created", "thread.run.step.in_progress"), step)

    async def _end_message(self, writes: Writes, ctx: RunContext, status: MessageStatus, reason: str | None = None,
                           *, usage: dict[str, int] | None = None, with_step: bool = True) -> None:
        """Write the open message's end: its text with annotations, and (``with_step``) its step's."""
        if ctx.open_message is None:
            return
        opened, ctx.open_message = ctx.open_message, None
        message, step, text = opened.message, opened.step, "".join(opened.text)
        content = [part for part in message.content if part.get("type") == "image_file"]
        if opened.held is not None:  # opened early, never announced
            if not text and not content:
                await writes.delete_opened(message, step)
                return
            self._announce(ctx.run.id, opened)
        if text:
            sources = await writes.citation_sources(ctx.run) if "【" in text else {}
            content.append({"type": "text", "text": {"value": text,
                                                     "annotations": annotate(text, ctx.sandbox_files, sources)}})
        now = ids.now()
        message.content, message.status = content, status
        if status == MessageStatus.COMPLETED:
            message.completed_at = now
        else:
            message.incomplete_at, message.incomplete_details = now, {"reason": reason}
        if with_step:
            step.usage = usage
        await writes.end_message(ctx.run, message, step if with_step else None)

    # --- tool calls -------------------------------------------------------------------------------

    async def _tool_calls(self, ctx: RunContext, turn: Turn) -> bool:
        """The model has written the turn's calls: persist them all ("tool calls ready"), then run
        the built-in ones. Returns True when the run goes on with another turn."""
        calls, step = turn.reader.ordered_calls(), turn.tool_step
        builtins = [c for c in calls if c.type != "function"]
        step.step_details = {"type": "tool_calls", "tool_calls": [
            {"id": c.id, "type": c.type, c.type: self.tools.get(c.type).pending(c.arguments)} if c.type != "function" else
            FunctionToolCall(id=c.id, function=Function(name=c.name, arguments=c.arguments, output=None)).model_dump()
            for c in calls]}
        step.tool_io = {c.id: {"arguments": c.arguments, "state": CALL_PENDING} for c in builtins} or None
        step.usage = turn.usage
        if builtins:  # (the client's calls alone are written as the run starts waiting for them)
            self._about_to_run(step, builtins[0])
            async with self.store.writing() as writes:
                await self._end_message(writes, ctx, MessageStatus.COMPLETED)
                await writes.save(step, "step_details", "tool_io", "usage")
                await writes.save(ctx.run, "usage")
        return await self._run_calls(ctx, PendingCalls(step, builtins))

    def _about_to_run(self, step: RunStep, call: ToolCallDraft) -> None:
        """Mark a call of a tool that may not run twice as started, in the write before it runs."""
        if not self.tools.get(call.type).repeatable:
            step.tool_io[call.id]["state"] = CALL_STARTED

    async def _run_calls(self, ctx: RunContext, pending: PendingCalls) -> bool:
        """Run the step's built-in calls still to run, persisting each one's result; then
        complete the step (another turn follows), or hand the client's calls to it."""
        step, calls = pending.step, pending.calls
        for i, call in enumerate(calls):
            if ctx.cancel_requested:
                raise RunCancelled()
            await self._run_tool(ctx, step, call)
            if i + 1 < len(calls):  # (the last result is written with the step's end)
                self._about_to_run(step, calls[i + 1])
                async with self.store.writing() as writes:
                    await writes.save(step, "step_details", "tool_io")
        run = ctx.run
        functions = [c for c in step.step_details["tool_calls"] if c["type"] == "function"]
        if functions and ctx.cancel_requested:  # do not hand a cancelled run back to the client
            raise RunCancelled()
        async with self.store.writing() as writes:
            await self._end_message(writes, ctx, MessageStatus.COMPLETED)  # text the model wrote after its calls
            if not functions:
                step.status, step.completed_at = StepStatus.COMPLETED, ids.now()
                await writes.save(step, "status", "completed_at", "step_details", "tool_io", "usage")
                writes.emit_step(run, "thread.run.step.completed", step)
                return True
            await writes.save(step, "step_details", "tool_io", "usage")
            required = RequiredAction.for_calls(functions).model_dump()
            # Only a run still in progress waits for outputs: a cancel that came in meanwhile
            # (status 'cancelling', maybe from another process) must not be overwritten.
            if not await writes.move(run, RunStatus.REQUIRES_ACTION, expect=(RunStatus.IN_PROGRESS,),
                                     required_action=required, usage=run.usage, worker=None, lease_until=None,
                                     expires_at=ids.now() + self.settings.run_expiry_seconds):
                raise RunCancelled()
        return False

    async def _run_tool(self, ctx: RunContext, step: RunStep, call: ToolCallDraft) -> None:
        """Run a built-in call: its body goes in the step, what the model wrote and is told in ``tool_io``."""
        tool = self.tools.get(call.type)
        details, run_id = step.step_details["tool_calls"], ctx.run.id

        def emit_delta(body: dict[str, Any]) -> None:
            self.store.emit_now(run_id, "thread.run.step.delta",
                                RunStepDeltaEvent.tool_call(step.id, call.index, call.type, body))

        result = await tool.run(call.arguments, ToolContext(
            run=ctx.run, db=self.store.db, files=self.files, step_id=step.id,
            earlier_in_step=[c["type"] for c in details[:call.index]], emit_delta=emit_delta,
            cancelled=lambda: ctx.cancel_requested))
        io: dict[str, Any] = {"arguments": call.arguments, "output": result.output}
        if result.sources:
            io["sources"] = result.sources
        if result.files:
            io["files"] = [{"file_id": f.file_id, "path": f.path, "show": f.show} for f in result.files]
            ctx.add_files(io["files"])
        details[call.index] = {"id": call.id, "type": call.type, call.type: result.call.model_dump()}
        step.tool_io[call.id] = io

    # --- ends -------------------------------------------------------------------------------------

    async def _end_incomplete(self, ctx: RunContext, reason: str, turn: Turn | None = None) -> bool:
        async with self.store.writing() as writes:
            await self._end_message(writes, ctx, MessageStatus.INCOMPLETE, "max_tokens",
                                    usage=turn.usage if turn else None)
            await writes.end(ctx.run, RunStatus.INCOMPLETE, incomplete_details={"reason": reason},
                             usage=ctx.run.usage)
        return False

    async def _end_early(self, ctx: RunContext, to: RunStatus, reason: str, **values: Any) -> None:
        """End the run failed or cancelled, keeping what the model had said: an incomplete message."""
        async with self.store.writing() as writes:
            await self._end_message(writes, ctx, MessageStatus.INCOMPLETE, reason, with_step=False)
            await writes.end(ctx.run, to, usage=ctx.run.usage, **values)

    async def _fail_safely(self, ctx: RunContext, code: str, message: str) -> None:
        """End the run failed, keeping what it had said; if even that fails, end it without."""
        last_error = {"code": code, "message": short_message(message)}
        try:
            await self._end_early(ctx, RunStatus.FAILED, "run_failed", last_error=last_error)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run %s: keeping its partial answer failed", ctx.run.id)
            async with self.store.writing() as writes:
                run = await writes.fresh(ctx.run)
                if run is not None:
                    await writes.end_unfinished(run, message)

    def _run_timeout_message(self) -> str:
        return f"The run did not finish within {self.settings.run_timeout:g} s (ASSISTANTD_RUN_TIMEOUT)."
