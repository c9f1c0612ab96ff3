"""A run's life as a state machine: the statuses, and the transitions allowed between them.

    queued → in_progress → (requires_action → queued → in_progress)* → completed | failed
                                                                        | cancelled | expired
                                                                        | incomplete

with ``cancelling`` between ``in_progress`` and the end when a cancel arrives while the run
executes. This module is the table only (pure, unit-tested); :meth:`assistantd.runs.store.Writes.move`
is the one function that applies a transition — it checks it here, persists it, and emits its
``thread.run.<status>`` event once the transaction commits. Steps and messages have statuses of
their own, named here too so that no status is a bare string anywhere else.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ACTIVE", "IllegalTransition", "MessageStatus", "RunStatus", "StepStatus", "TERMINAL",
           "TRANSITIONS", "check", "sources"]


class RunStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    EXPIRED = "expired"

    @property
    def event(self) -> str:
        """The stream event that announces this status."""
        return f"thread.run.{self.value}"


class StepStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    CANCELLED = "cancelled"
    FAILED = "failed"
    COMPLETED = "completed"
    EXPIRED = "expired"


class MessageStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    INCOMPLETE = "incomplete"
    COMPLETED = "completed"


S = RunStatus
# Where each status may go. A run waiting for tool outputs goes back to the queue (any process may
# pick it up); a cancel of a run nobody executes ends it at once, of an executing one marks it
# ``cancelling`` for its executor, which may still finish the turn it is in.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    S.QUEUED: frozenset({S.IN_PROGRESS, S.CANCELLED, S.EXPIRED}),
    S.IN_PROGRESS: frozenset({S.REQUIRES_ACTION, S.CANCELLING, S.COMPLETED, S.FAILED, S.CANCELLED,
                              S.INCOMPLETE}),
    S.REQUIRES_ACTION: frozenset({S.QUEUED, S.CANCELLED, S.EXPIRED}),
    S.CANCELLING: frozenset({S.CANCELLED, S.COMPLETED, S.FAILED, S.INCOMPLETE}),
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
    S.COMPLETED: frozenset(),
    S.INCOMPLETE: frozenset(),
    S.EXPIRED: frozenset(),
}

TERMINAL = frozenset(s for s, nexts in TRANSITIONS.items() if not nexts)
ACTIVE = frozenset(TRANSITIONS) - TERMINAL
# A run that some process is executing: it holds a lease on it.
EXECUTING = frozenset({S.IN_PROGRESS, S.CANCELLING})


class IllegalTransition(Exception):
    """A move the table does not allow: a bug in the caller, never a client's error."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(f"a run cannot go from {old!r} to {new!r}")
        self.old, self.new = old, new


def check(old: str, new: str) -> RunStatus:
    """``new`` as a :class:`RunStatus`, when ``old → new`` is allowed; else IllegalTransition."""
    try:
        source, target = RunStatus(old), RunStatus(new)
    except ValueError:
        raise IllegalTransition(old, new) from None
    if target not in TRANSITIONS[source]:
        raise IllegalTransition(old, new)
    return target


def sources(new: RunStatus) -> frozenset[RunStatus]:
    """The statuses from which a run may move to ``new``."""
    return frozenset(s for s, nexts in TRANSITIONS.items() if new in nexts)
