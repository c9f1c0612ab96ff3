"""runs/resume.py's reading of a run's rows (pure), and what the built-in tools say about running
a call again."""

from __future__ import annotations

from types import SimpleNamespace

from assistantd.runs.context import CALL_PENDING, CALL_STARTED
from assistantd.runs.resume import resume_point
from assistantd.runs.states import StepStatus
from assistantd.runs.store import new_message, new_step
from assistantd.tools import schemas as wire
from assistantd.tools.code_interpreter import CodeInterpreter
from assistantd.tools.file_search import FileSearch

RUN = SimpleNamespace(id="run_1", tenant="t", thread_id="thread_1", assistant_id="asst_1")
REPEATABLE = {"file_search": True, "code_interpreter": False}.__getitem__


def message_step(message_id: str, status: StepStatus = StepStatus.COMPLETED):
    step = new_step(RUN, "message_creation", {"type": "message_creation", "message_creation": {"message_id": message_id}})
    step.status = status
    return step


def tool_step(calls: list[dict], tool_io: dict | None = None, status: StepStatus = StepStatus.COMPLETED):
    step = new_step(RUN, "tool_calls", {"type": "tool_calls", "tool_calls": calls})
    step.status, step.tool_io = status, tool_io
    return step


def code(call_id: str) -> dict:
    return {"id": call_id, "type": "code_interpreter", "code_interpreter": {"input": "1", "outputs": []}}


def search(call_id: str) -> dict:
    return {"id": call_id, "type": "file_search", "file_search": {}}


def function(call_id: str, output: str | None = "ok") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}", "output": output}}


def done(**extra) -> dict:
    return {"arguments": "{}", "output": "out", **extra}


def test_a_turn_cut_off_mid_answer_keeps_its_message_and_step_for_the_turn_issued_again():
    message = new_message(RUN, [{"type": "image_file", "image_file": {"file_id": "file-img"}}])
    opened = message_step(message.id, StepStatus.IN_PROGRESS)
    earlier = tool_step([code("call_a")], {"call_a": done(files=[{"file_id": "file-img", "path": None, "show": True}])})
    point = resume_point([earlier, opened], message, REPEATABLE)
    assert point.open_message.message is message and point.open_message.step is opened
    assert point.open_message.text == []
    assert point.images == []  # the open message shows it already
    assert (point.pending, point.empty_step, point.unknown, point.turns) == (None, None, None, 1)


def test_between_turns_the_files_finished_calls_made_are_known_again():
    made = [{"file_id": "file-csv", "path": "/mnt/data/out.csv", "show": False},
            {"file_id": "file-png", "path": "/mnt/data/plot.png", "show": True}]
    first = tool_step([code("call_a")], {"call_a": done(files=[{"file_id": "file-old", "path": "/mnt/data/old.png",
                                                               "show": True}])})
    said = message_step("msg_1")
    second = tool_step([code("call_b"), search("call_c")], {"call_b": done(files=made), "call_c": done()})
    point = resume_point([first, said, second], None, REPEATABLE)
    assert point.open_message is None and point.pending is None
    assert point.sandbox_files == {"/mnt/data/old.png": "file-old", "/mnt/data/out.csv": "file-csv",
                                   "/mnt/data/plot.png": "file-png"}
    assert point.images == ["file-png"]  # file-old went into msg_1
    assert point.turns == 2


def test_a_tool_step_opened_before_the_model_finished_its_calls_is_dropped():
    empty = tool_step([], None, StepStatus.IN_PROGRESS)
    point = resume_point([message_step("msg_1"), empty], None, REPEATABLE)
    assert point.empty_step is empty and point.pending is None and point.turns == 0


def test_unfinished_calls_run_and_finished_ones_stay():
    calls = [code("call_a"), search("call_b"), function("call_c", output=None), search("call_d")]
    io = {"call_a": done(), "call_b": {"arguments": '{"query": "q"}', "state": CALL_STARTED},
          "call_d": {"arguments": '{"query": "r"}', "state": CALL_PENDING}}
    step = tool_step(calls, io, StepStatus.IN_PROGRESS)
    point = resume_point([step], None, REPEATABLE)
    assert point.unknown is None and point.pending.step is step
    assert [(c.index, c.id, c.type, c.arguments) for c in point.pending.calls] == [
        (1, "call_b", "file_search", '{"query": "q"}'), (3, "call_d", "file_search", '{"query": "r"}')]
    assert point.turns == 1


def test_a_started_call_of_a_tool_that_may_not_run_twice_makes_the_run_unresumable():
    step = tool_step([search("call_a"), code("call_b"), code("call_c")],
                     {"call_a": done(), "call_b": {"arguments": "{}", "state": CALL_STARTED},
                      "call_c": {"arguments": "{}", "state": CALL_PENDING}}, StepStatus.IN_PROGRESS)
    point = resume_point([step], None, REPEATABLE)
    assert point.unknown["id"] == "call_b" and point.pending is None
    # Not started yet: it simply runs.
    step.tool_io["call_b"] = {"arguments": "{}", "state": CALL_PENDING}
    point = resume_point([step], None, REPEATABLE)
    assert point.unknown is None and [c.id for c in point.pending.calls] == ["call_b", "call_c"]


def test_the_turn_count_starts_again_after_the_client_answered_its_calls():
    steps = [tool_step([search("call_a")], {"call_a": done()}),
             tool_step([function("call_b")]),  # the run waited for the client here
             tool_step([search("call_c")], {"call_c": done()}),
             tool_step([search("call_d")], {"call_d": done()})]
    assert resume_point(steps, None, REPEATABLE).turns == 2
    assert resume_point(steps[:2], None, REPEATABLE).turns == 0


def test_builtin_tools_say_whether_a_call_may_run_again_and_show_a_written_call_as_the_wire_does():
    assert (CodeInterpreter.repeatable, FileSearch.repeatable) == (False, True)
    body = CodeInterpreter(sandboxes=None).pending('{"code": "print(1)"}')
    assert body == {"input": "print(1)", "outputs": []}
    wire.CodeInterpreter.model_validate(body)
    assert FileSearch(searcher=None).pending('{"query": "q"}') == {}
