"""The run state machine's table (pure: no server, no database)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from assistantd.runs import states
from assistantd.runs.states import IllegalTransition, RunStatus

SRC = Path(__file__).resolve().parents[2] / "src" / "assistantd"
S = RunStatus

ALLOWED = {
    (S.QUEUED, S.IN_PROGRESS), (S.QUEUED, S.CANCELLED), (S.QUEUED, S.EXPIRED),
    (S.IN_PROGRESS, S.REQUIRES_ACTION), (S.IN_PROGRESS, S.CANCELLING), (S.IN_PROGRESS, S.COMPLETED),
    (S.IN_PROGRESS, S.FAILED), (S.IN_PROGRESS, S.CANCELLED), (S.IN_PROGRESS, S.INCOMPLETE),
    (S.REQUIRES_ACTION, S.QUEUED), (S.REQUIRES_ACTION, S.CANCELLED), (S.REQUIRES_ACTION, S.EXPIRED),
    (S.CANCELLING, S.CANCELLED), (S.CANCELLING, S.COMPLETED), (S.CANCELLING, S.FAILED),
    (S.CANCELLING, S.INCOMPLETE),
}


@pytest.mark.parametrize("old", list(S))
@pytest.mark.parametrize("new", list(S))
def test_every_pair_is_allowed_exactly_when_the_table_says(old, new):
    if (old, new) in ALLOWED:
        assert states.check(old, new) is new
    else:
        with pytest.raises(IllegalTransition):
            states.check(old, new)


def test_terminal_statuses_go_nowhere_and_every_active_status_can_end():
    assert states.TERMINAL == {S.CANCELLED, S.FAILED, S.COMPLETED, S.INCOMPLETE, S.EXPIRED}
    assert states.ACTIVE == {S.QUEUED, S.IN_PROGRESS, S.REQUIRES_ACTION, S.CANCELLING}
    for status in states.ACTIVE:
        # from every active status some path reaches an end
        seen, todo = set(), [status]
        while todo:
            s = todo.pop()
            seen.add(s)
            todo += [n for n in states.TRANSITIONS[s] if n not in seen]
        assert seen & states.TERMINAL


def test_unknown_statuses_are_illegal_and_sources_invert_the_table():
    with pytest.raises(IllegalTransition):
        states.check("running", "completed")
    with pytest.raises(IllegalTransition):
        states.check("in_progress", "done")
    assert states.sources(S.CANCELLED) == {S.QUEUED, S.IN_PROGRESS, S.REQUIRES_ACTION, S.CANCELLING}
    assert states.sources(S.QUEUED) == {S.REQUIRES_ACTION}
    assert S.REQUIRES_ACTION.event == "thread.run.requires_action"


# Statuses only runs have: no other object of the API uses these words.
RUN_ONLY = {"queued", "requires_action", "cancelling"}
# Words runs share with steps, messages and vector store files.
SHARED = {"in_progress", "completed", "failed", "cancelled", "incomplete", "expired"}
# Where status words may be written: the state machine and the wire types (Literal[...] fields).
OWNERS = {"runs/states.py", "runs/schemas.py", "threads/schemas.py", "tools/schemas.py"}


def _string_constants(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_no_status_string_outside_the_state_machine_and_the_wire_types():
    found = []
    for path in SRC.rglob("*.py"):
        name = path.relative_to(SRC).as_posix()
        if name in OWNERS or name.startswith("testing/"):
            continue
        # Runs, steps and messages are written by runs/, tools/ and threads/: there, every status is named.
        words = RUN_ONLY | (SHARED if name.split("/")[0] in ("runs", "tools", "threads") else set())
        found += [f"{name}:{line}: {value!r}" for line, value in _string_constants(path) if value in words]
    assert not found, "status strings outside runs/states.py:\n" + "\n".join(found)
