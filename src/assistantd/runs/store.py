"""The one way a run, its steps and its messages are written — and their events emitted.

Everything a run does to the database goes through a :class:`Writes`: one transaction, plus the
stream events that announce what it wrote. The events are published only once the transaction
has committed ("persist, then emit"); a transaction that fails publishes nothing. A run's status
changes only through :meth:`Writes.move`, which checks the transition against
:mod:`assistantd.runs.states`, writes it as a compare-and-set (a run moved meanwhile by another
request or process is left alone) and emits ``thread.run.<status>``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd import ids
from assistantd.db import Database
from assistantd.db.models import Message, Run, RunStep
from assistantd.db.rows import insert_objects, new_row, update_object, update_object_where
from assistantd.runs import states
from assistantd.runs.events import Event, EventBus
from assistantd.runs.failures import short_message
from assistantd.runs.schemas import RunObject, RunStepObject
from assistantd.runs.states import MessageStatus, RunStatus, StepStatus
from assistantd.threads.schemas import MessageObject

__all__ = ["RunStore", "Writes"]

MESSAGE_END = ("content", "status", "completed_at", "incomplete_at", "incomplete_details")
STEP_END = ("status", "completed_at", "usage")
# The time each end is stamped with (statuses are strings: a run's and a step's "expired" are equal keys).
RUN_STAMPS = {RunStatus.FAILED: "failed_at", RunStatus.CANCELLED: "cancelled_at", RunStatus.COMPLETED: "completed_at"}
STEP_STAMPS = {StepStatus.FAILED: "failed_at", StepStatus.CANCELLED: "cancelled_at", StepStatus.EXPIRED: "expired_at"}
_STEP_ERROR_CODES = ("server_error", "rate_limit_exceeded")  # a step's last_error allows only these


class Writes:
    """One transaction's writes to runs, steps and messages, and the events they make."""

    def __init__(self, session: AsyncSession, bus: EventBus) -> None:
        self.session, self.bus = session, bus
        self._events: list[tuple[str, Event]] = []

    # --- events ---------------------------------------------------------------------------------

    def emit(self, run_id: str, names: str | tuple[str, ...], obj: Any) -> None:
        """Announce ``obj`` (a wire object) as each event of ``names`` after the commit; nothing is
        serialised when no stream watches the run. It is serialised now: it shows this moment."""
        if not self.bus.watched(run_id):
            return
        events = Event.each((names,) if isinstance(names, str) else names, obj)
        self._events.extend((run_id, event) for event in events)

    def emit_step(self, run: Run, names: str | tuple[str, ...], step: RunStep) -> None:
        if self.bus.watched(run.id):
            self.emit(run.id, names, RunStepObject.from_row(step, run.include_search_content))

    def emit_message(self, run_id: str, names: str | tuple[str, ...], message: Message) -> None:
        if self.bus.watched(run_id):
            self.emit(run_id, names, MessageObject.from_row(message))

    def emit_opening(self, run: Run, step: RunStep, message: Message) -> None:
        """The four events that open a message and its ``message_creation`` step."""
        self.emit_step(run, ("thread.run.step.created", "thread.run.step.in_progress"), step)
        self.emit_message(run.id, ("thread.message.created", "thread.message.in_progress"), message)

    def held_opening(self, run: Run, step: RunStep, message: Message) -> list[tuple[str, Event]]:
        """:meth:`emit_opening`'s events, built now but kept out of this transaction's: the caller
        publishes them later (they announce rows this transaction writes, so only once it has
        committed), or never."""
        start = len(self._events)
        self.emit_opening(run, step, message)
        held = self._events[start:]
        del self._events[start:]
        return held

    def publish(self) -> None:
        for run_id, event in self._events:
            self.bus.publish(run_id, event)
        self._events.clear()

    # --- the run's status -------------------------------------------------------------------------

    async def move(self, run: Run, to: RunStatus, *, expect: Iterable[str] | None = None, announce: bool = True,
                   **values: Any) -> bool:
        """Move ``run`` to ``to`` (with ``values`` for its other columns) if it is still in one of
        ``expect`` (default: the status it has here); emit ``thread.run.<to>`` after the commit.
        Returns False, writing nothing, when the run has moved on meanwhile. An ``expect`` the
        transition table does not allow raises :class:`~assistantd.runs.states.IllegalTransition`."""
        expected = (run.status,) if expect is None else tuple(expect)
        for source in expected:
            states.check(source, to)
        if to in states.TERMINAL:
            values.setdefault("required_action", None)
            values.setdefault("worker", None)
            values.setdefault("lease_until", None)
        if not await update_object_where(self.session, run, {"status": str(to), **values},
                                         {"status": tuple(str(s) for s in expected)}):
            return False
        if announce:
            self.announce(run)
        return True

    def announce(self, run: Run) -> None:
        """Emit the run's status event (``thread.run.<status>``) after the commit."""
        if self.bus.watched(run.id):
            self.emit(run.id, RunStatus(run.status).event, RunObject.from_row(run))

    async def end(self, run: Run, to: RunStatus, *, expect: Iterable[str] = states.EXECUTING,
                  **values: Any) -> bool:
        """End ``run`` (a terminal ``to``) and every step and message of it still in progress."""
        now = ids.now()
        if to in RUN_STAMPS:
            values.setdefault(RUN_STAMPS[to], now)
        if not await self.move(run, to, expect=expect, announce=False, **values):
            return False
        # The steps and messages end first: the run's own end is the last event a stream sees.
        if to is RunStatus.FAILED:
            await self.close_open(run, StepStatus.FAILED, "run_failed", run.last_error)
        elif to is RunStatus.CANCELLED:
            await self.close_open(run, StepStatus.CANCELLED, "run_cancelled")
        elif to is RunStatus.EXPIRED:
            await self.close_open(run, StepStatus.EXPIRED, "run_expired")
        elif to is RunStatus.INCOMPLETE:
            await self.close_open(run, StepStatus.CANCELLED, "max_tokens")
        self.announce(run)
        return True

    async def end_unfinished(self, run: Run, message: str) -> bool:
        """End a run whose execution cannot go on: cancelled if a cancel was asked for, else
        failed with ``message`` as its ``last_error``."""
        if run.status == RunStatus.CANCELLING:
            return await self.end(run, RunStatus.CANCELLED, expect=(run.status,))
        return await self.end(run, RunStatus.FAILED, expect=(run.status,),
                              last_error={"code": "server_error", "message": short_message(message)})

    async def close_open(self, run: Run, step_status: StepStatus, message_reason: str,
                         last_error: dict[str, Any] | None = None) -> None:
        """End the run's steps and messages still in progress (the stream sees them end)."""
        now = ids.now()
        values: dict[str, Any] = {"status": step_status, STEP_STAMPS[step_status]: now}
        if step_status is StepStatus.FAILED:
            code = (last_error or {}).get("code")
            values["last_error"] = {"code": code if code in _STEP_ERROR_CODES else "server_error",
                                    "message": (last_error or {}).get("message", "")}
        messages = (await self.session.scalars(
            update(Message).where(Message.run_id == run.id, Message.tenant == run.tenant,
                                  Message.status == MessageStatus.IN_PROGRESS)
            .values(status=MessageStatus.INCOMPLETE, incomplete_at=now,
                    incomplete_details={"reason": message_reason})
            .returning(Message)
        )).all()
        steps = (await self.session.scalars(
            update(RunStep).where(RunStep.run_id == run.id, RunStep.tenant == run.tenant,
                                  RunStep.status == StepStatus.IN_PROGRESS)
            .values(**values).returning(RunStep)
        )).all()
        for message in messages:
            self.emit_message(run.id, "thread.message.incomplete", message)
        for step in steps:
            self.emit_step(run, f"thread.run.step.{step_status}", step)

    # --- steps and messages -----------------------------------------------------------------------

    async def insert(self, *rows: Run | Message | RunStep) -> None:
        await insert_objects(self.session, *rows)

    async def delete_opened(self, message: Message, step: RunStep) -> None:
        """Delete a message and its step that no event announced (opened early, never written to)."""
        await self.session.execute(delete(Message).where(Message.id == message.id, Message.tenant == message.tenant))
        await self.session.execute(delete(RunStep).where(RunStep.id == step.id, RunStep.tenant == step.tenant))

    async def save(self, row: Any, *attributes: str) -> None:
        await update_object(self.session, row, *attributes)

    async def end_message(self, run: Run, message: Message, step: RunStep | None) -> None:
        """Write a message's end (content, status) and its creation step's completion."""
        await update_object(self.session, message, *MESSAGE_END)
        event = "thread.message.completed" if message.status == MessageStatus.COMPLETED else "thread.message.incomplete"
        self.emit_message(run.id, event, message)
        if step is not None:
            step.status, step.completed_at = StepStatus.COMPLETED, ids.now()
            await update_object(self.session, step, *STEP_END)
            self.emit_step(run, "thread.run.step.completed", step)

    async def citation_sources(self, run: Run) -> dict[str, str]:
        """Every marker ``i:j`` the run's file searches handed out → the cited file's id."""
        sources: dict[str, str] = {}
        for tool_io in await self.session.scalars(select(RunStep.tool_io).where(
                RunStep.run_id == run.id, RunStep.tenant == run.tenant, RunStep.type == "tool_calls")):
            for io in (tool_io or {}).values():
                sources.update(io.get("sources") or {})
        return sources

    async def fresh(self, run: Run) -> Run | None:
        """The run as the database has it now."""
        return await self.session.scalar(select(Run).where(Run.seq == run.seq).execution_options(
            populate_existing=True))

    async def last_open_tool_step(self, run: Run) -> RunStep | None:
        return await self.session.scalar(
            select(RunStep).where(RunStep.run_id == run.id, RunStep.tenant == run.tenant,
                                  RunStep.type == "tool_calls", RunStep.status == StepStatus.IN_PROGRESS)
            .order_by(RunStep.seq.desc()).limit(1))


class RunStore:
    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db, self.bus = db, bus

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[Writes]:
        """A transaction of run writes; its events go out once it has committed."""
        async with self.db.write() as session:
            writes = Writes(session, self.bus)
            yield writes
        writes.publish()

    def emit_now(self, run_id: str, name: str, obj: Any) -> None:
        """An event that nothing persists (a token delta): published at once."""
        if self.bus.watched(run_id):
            self.bus.publish(run_id, Event.of(name, obj))


def new_step(run: Run, kind: str, details: dict[str, Any]) -> RunStep:
    return new_row(RunStep, id=ids.new_id("step_"), tenant=run.tenant, created_at=ids.now(), run_id=run.id,
                   thread_id=run.thread_id, assistant_id=run.assistant_id, type=kind,
                   status=StepStatus.IN_PROGRESS, step_details=details, last_error=None, expired_at=None,
                   cancelled_at=None, failed_at=None, completed_at=None, metadata_={}, usage=None, tool_io=None)


def new_message(run: Run, content: list[dict[str, Any]]) -> Message:
    return new_row(Message, id=ids.new_id("msg_"), tenant=run.tenant, created_at=ids.now(), thread_id=run.thread_id,
                   status=MessageStatus.IN_PROGRESS, incomplete_details=None, completed_at=None,
                   incomplete_at=None, role="assistant", content=content, assistant_id=run.assistant_id,
                   run_id=run.id, attachments=[], metadata_={})
