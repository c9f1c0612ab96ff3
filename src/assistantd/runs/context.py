"""What the executor keeps about a run while this process executes it, between its writes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from assistantd.db.models import Message, Run, RunStep
from assistantd.runs import prompt as prompts
from assistantd.runs.events import Event
from assistantd.runs.turn import ToolCallDraft, TurnReader
from assistantd.threads.schemas import TextDeltaJSON
from assistantd.upstream.client import ChatStream

__all__ = ["CALL_PENDING", "CALL_STARTED", "OpenMessage", "PendingCalls", "RunCancelled", "RunContext", "Turn"]

# A built-in call's ``state`` in its step's ``tool_io`` until it has run (a finished call has none):
# written when the model has finished the turn's calls, and — for a tool that may not run twice —
# ``started`` just before it runs, so that a run resumed after its process died knows what was done.
CALL_PENDING = "pending"
CALL_STARTED = "started"


class RunCancelled(Exception):
    pass


@dataclass
class OpenMessage:
    message: Message
    step: RunStep  # its message_creation step
    text: list[str] = field(default_factory=list)
    # Opened before the model's answer began (:meth:`RunExecutor.open_early`): the events that
    # announce it, published with its first text; None once announced (or opened announced).
    held: list[tuple[str, Event]] | None = None
    _delta: TextDeltaJSON | None = None

    def delta(self, value: str) -> str:
        """The ``thread.message.delta`` JSON that appends ``value`` to the message's text."""
        if self._delta is None:  # made when a stream first watches
            self._delta = TextDeltaJSON(self.message.id, len(self.message.content))
        return self._delta(value)


@dataclass
class PendingCalls:
    """A ``tool_calls`` step whose calls are all written, and its built-in calls still to run."""

    step: RunStep
    calls: list[ToolCallDraft]


@dataclass
class RunContext:
    """A run while this process executes it."""

    run: Run
    stream: ChatStream | None = None  # the current turn's answer, while it is read
    cancel_requested: bool = False
    open_message: OpenMessage | None = None  # the message the model is still writing
    images: list[str] = field(default_factory=list)  # files the tools showed, not yet in a message
    sandbox_files: dict[str, str] = field(default_factory=dict)  # /mnt/data path → file id
    completion_tokens: int = 0  # used by the run so far, across its turns
    prompt_tokens: int = 0
    prompt: prompts.Prompt | None = None  # the next turn's, when it was built in the claiming transaction
    deadline: float = math.inf  # time.monotonic() by which this stretch of execution must end
    turns: int = 0  # model turns taken in this stretch
    pending: PendingCalls | None = None  # a resumed run's calls to finish before its next turn
    answer: ChatStream | None = None  # the first turn's request, sent early

    def drop_answer(self) -> None:
        """Give up the request sent early, if its turn has not taken it."""
        if self.answer is not None:
            self.answer.drop()
            self.answer = self.stream = None

    def __post_init__(self) -> None:
        usage = self.run.usage or {}
        self.prompt_tokens = usage.get("prompt_tokens", 0)
        self.completion_tokens = usage.get("completion_tokens", 0)

    @property
    def completion_budget(self) -> int | None:
        """Completion tokens the run may still use (None: no limit)."""
        limit = self.run.max_completion_tokens
        return None if limit is None else limit - self.completion_tokens

    def request_cancel(self) -> None:
        """Stop the run: the read of its model's answer in progress (or the next) raises
        :class:`RunCancelled`; between turns, ``cancel_requested`` is looked at."""
        self.cancel_requested = True
        if self.stream is not None:
            self.stream.interrupt(RunCancelled())

    def add_files(self, made: Iterable[dict[str, Any]]) -> None:
        """Take note of files a tool call made (its ``tool_io`` ``files``): paths the answer may
        link to, images the run's next message shows."""
        for item in made:
            if item.get("path"):
                self.sandbox_files[item["path"]] = item["file_id"]
            if item.get("show"):
                self.images.append(item["file_id"])

    def add_usage(self, usage: dict[str, int]) -> None:
        self.prompt_tokens += usage["prompt_tokens"]
        self.completion_tokens += usage["completion_tokens"]
        total = dict(self.run.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            total[key] = total.get(key, 0) + usage.get(key, 0)
        self.run.usage = total


@dataclass
class Turn:
    reader: TurnReader
    tool_step: RunStep | None = None
    usage: dict[str, int] | None = None
