"""Resuming a run whose server process died, from its last persisted boundary.

A run in progress whose executor is gone — its lease lapsed, or a starting SQLite server finds it
in progress — is an orphan (:meth:`~assistantd.runs.queue.RunQueue.orphans`). The worker that
finds one calls :func:`take_over`: a run being cancelled ends ``cancelled``; any other is taken
over once (a compare-and-set on the worker that held it: of several processes finding it, one
wins) and its :class:`~assistantd.runs.context.RunContext` is rebuilt from the database, to be
executed from where it was:

- the message the interrupted turn was writing is still in progress and holds no text (tokens are
  never written one by one): it and its step are kept for the turn, which is issued again — the
  prompt does not show it, and the new answer fills it once;
- a ``tool_calls`` step the turn had opened before the model finished its calls holds nothing: it
  is deleted, and the re-issued turn opens its own;
- a step whose calls were all written ("tool calls ready") keeps the calls that finished; the
  others run. A call that had started, of a tool that may not run twice (code_interpreter), has
  effects nobody knows: the run cannot be resumed and ends ``failed``, saying so;
- the files the finished calls made are known again (``file_path`` annotations, the images of the
  next message), usage carries on from the run's row, the turns from its steps; the run's
  deadline and ``expires_at`` start a new stretch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, select

from assistantd import ids
from assistantd.db.models import Message, Run, RunStep
from assistantd.runs.context import CALL_STARTED, OpenMessage, PendingCalls, RunContext
from assistantd.runs.states import MessageStatus, RunStatus, StepStatus
from assistantd.runs.store import Writes
from assistantd.runs.turn import ToolCallDraft

if TYPE_CHECKING:
    from assistantd.runs.executor import RunExecutor
    from assistantd.runs.queue import RunQueue

__all__ = ["ResumePoint", "resume_point", "take_over"]

_STEPS = (select(RunStep).where(RunStep.run_id == bindparam("run_id"), RunStep.tenant == bindparam("tenant"))
          .order_by(RunStep.seq))
_OPEN_MESSAGE = select(Message).where(Message.run_id == bindparam("run_id"), Message.tenant == bindparam("tenant"),
                                      Message.status == MessageStatus.IN_PROGRESS)


@dataclass
class ResumePoint:
    """Where a run stands, read from its rows."""

    open_message: OpenMessage | None = None  # the interrupted turn's message, to be written again
    empty_step: RunStep | None = None  # the interrupted turn's tool_calls step, with no call in it
    pending: PendingCalls | None = None  # a step whose built-in calls have not all run
    unknown: dict | None = None  # a started call that may not run again: the run cannot resume
    turns: int = 0  # model turns of the current stretch (since the client's last tool outputs)
    sandbox_files: dict[str, str] = field(default_factory=dict)  # /mnt/data path → file id
    images: list[str] = field(default_factory=list)  # images shown since the run's last message


def resume_point(steps: list[RunStep], message: Message | None, repeatable: Callable[[str], bool]) -> ResumePoint:
    """Read the run's ``steps`` (in order) and its message in progress. ``repeatable(type)``: may a
    call of that tool, interrupted, run again?"""
    point = ResumePoint()
    for step in steps:
        if step.type == "message_creation":
            point.images = []  # the message took those
            if message is not None and step.step_details["message_creation"]["message_id"] == message.id:
                point.open_message = OpenMessage(message, step)
            continue
        calls, tool_io = step.step_details.get("tool_calls") or [], step.tool_io or {}
        if step.status == StepStatus.IN_PROGRESS and not calls:
            point.empty_step = step
            continue
        point.turns += 1
        if step.status == StepStatus.IN_PROGRESS:
            point.pending, point.unknown = _unfinished(step, repeatable)
        elif any(c["type"] == "function" for c in calls):
            point.turns = 0  # the run waited for the client there: a new stretch began
        for call in calls:
            for made in (tool_io.get(call["id"]) or {}).get("files") or ():
                if made.get("path"):
                    point.sandbox_files[made["path"]] = made["file_id"]
                if made.get("show"):
                    point.images.append(made["file_id"])
    return point


def _unfinished(step: RunStep, repeatable: Callable[[str], bool]) -> tuple[PendingCalls | None, dict | None]:
    """The step's built-in calls still to run — or the call whose effects are unknown."""
    to_run = []
    for index, call in enumerate(step.step_details["tool_calls"]):
        io = (step.tool_io or {}).get(call["id"])
        if call["type"] == "function" or io is None or "state" not in io:
            continue  # the client's (it answers them), or finished
        if io["state"] == CALL_STARTED and not repeatable(call["type"]):
            return None, call
        to_run.append(ToolCallDraft(index=index, id=call["id"], name=call["type"], type=call["type"],
                                    arguments=io.get("arguments", "")))
    return PendingCalls(step, to_run), None


async def take_over(writes: Writes, queue: RunQueue, run: Run, executor: RunExecutor) -> RunContext | None:
    """Recover the orphan ``run`` in ``writes``' transaction. Returns its context, to execute after
    the commit; None when the run ended, or another process took it first."""
    if run.status == RunStatus.CANCELLING:
        await writes.end(run, RunStatus.CANCELLED, expect=(run.status,))
        return None
    if not await queue.take_over(writes, run, expires_at=ids.now() + executor.settings.run_expiry_seconds):
        return None
    session, where = writes.session, {"run_id": run.id, "tenant": run.tenant}
    steps = list((await session.scalars(_STEPS, where)).all())
    message = (await session.scalars(_OPEN_MESSAGE, where)).first()

    def repeatable(tool_type: str) -> bool:
        tool = executor.tools.get(tool_type)
        return tool is not None and tool.repeatable

    point = resume_point(steps, message, repeatable)
    if point.unknown is not None:
        await writes.end(run, RunStatus.FAILED, expect=(RunStatus.IN_PROGRESS,), last_error={
            "code": "server_error",
            "message": f"The server executing the run stopped during its {point.unknown['type']} call "
                       f"{point.unknown['id']}: that call's effects are unknown, so the run cannot be resumed."})
        return None
    if point.empty_step is not None:
        await session.execute(delete(RunStep).where(RunStep.seq == point.empty_step.seq))
    if point.pending is not None and point.pending.calls and not repeatable(point.pending.calls[0].type):
        step = point.pending.step  # marked started as it would have been in the write before it
        step.tool_io[point.pending.calls[0].id]["state"] = CALL_STARTED
        await writes.save(step, "tool_io")
    ctx = RunContext(run, open_message=point.open_message, sandbox_files=point.sandbox_files,
                     images=point.images, turns=point.turns, pending=point.pending)
    return ctx
