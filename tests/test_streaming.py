"""Run event streams (ENDPOINTS.md §2): the SDK's AssistantEventHandler as the quickstart uses it,
and the raw SSE frames — their order, the deltas as the model streamed them, and final snapshots
that agree with what polling reads afterwards."""

from __future__ import annotations

import json
import threading
import time

from openai import AssistantEventHandler
from typing_extensions import override

from tests.conftest import make_http
from tests.support.fake import marker, read_sse
from tests.support.runs import TIME_TOOL, WEATHER_TOOL, assistant, messages, text_of, thread, wait_for

TEXT_EVENTS_HEAD = ["thread.run.created", "thread.run.queued", "thread.run.in_progress",
                    "thread.run.step.created", "thread.run.step.in_progress",
                    "thread.message.created", "thread.message.in_progress"]
TEXT_EVENTS_TAIL = ["thread.message.completed", "thread.run.step.completed", "thread.run.completed", "done"]


class Recorder(AssistantEventHandler):
    """Collects what the quickstart's handler would print."""

    def __init__(self) -> None:
        super().__init__()
        self.text_created = 0
        self.deltas: list[str] = []
        self.tool_calls: list[str] = []
        self.argument_pieces: dict[int, list[str]] = {}
        self.events: list[str] = []

    @override
    def on_event(self, event) -> None:
        self.events.append(event.event)

    @override
    def on_text_created(self, text) -> None:
        self.text_created += 1

    @override
    def on_text_delta(self, delta, snapshot) -> None:
        self.deltas.append(delta.value)

    @override
    def on_tool_call_created(self, tool_call) -> None:
        self.tool_calls.append(tool_call.function.name)

    @override
    def on_tool_call_delta(self, delta, snapshot) -> None:
        if delta.type == "function" and delta.function and delta.function.arguments:
            self.argument_pieces.setdefault(delta.index, []).append(delta.function.arguments)


def names(events) -> list[str]:
    return [name for name, _ in events]


def data_of(events, name: str) -> list:
    return [data for n, data in events if n == name]


# --- the SDK -------------------------------------------------------------------------------------

def test_sdk_stream_like_the_quickstart(client, http, fake_upstream):
    chunks = ["x ", "= ", "(14 - 11) / 3 ", "= 1"]
    tag = fake_upstream.script({"chunks": chunks})
    a = assistant(client, name="Math Tutor", instructions="You are a personal math tutor.")
    t = client.beta.threads.create()
    client.beta.threads.messages.create(thread_id=t.id, role="user",
                                        content=f"I need to solve `3x + 11 = 14`. {marker(tag)}")
    handler = Recorder()
    with client.beta.threads.runs.stream(thread_id=t.id, assistant_id=a.id,
                                         instructions="Please address the user as Jane Doe.",
                                         event_handler=handler) as stream:
        stream.until_done()

    assert handler.text_created == 1
    assert handler.deltas == chunks
    final = handler.get_final_messages()
    assert len(final) == 1 and final[0].content[0].text.value == "".join(chunks)
    run = handler.get_final_run()
    assert run.status == "completed" and run.instructions == "Please address the user as Jane Doe."
    assert text_of(messages(http, t.id)[-1]) == "".join(chunks)
    assert client.beta.threads.runs.retrieve(run.id, thread_id=t.id).model_dump() == run.model_dump()


def test_sdk_function_call_stream_then_submit_stream(client, http, fake_upstream):
    tag = fake_upstream.script(
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                        {"name": "get_time", "arguments": {"city": "Tokyo"}}]},
        {"chunks": ["Sunny", " at 9."]})
    a = assistant(client, tools=[WEATHER_TOOL, TIME_TOOL])
    t = thread(client, tag)

    handler = Recorder()
    with client.beta.threads.runs.stream(thread_id=t.id, assistant_id=a.id, event_handler=handler) as stream:
        stream.until_done()
    run = handler.current_run
    assert run.status == "requires_action"
    assert handler.tool_calls == ["get_weather", "get_time"]
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert {i: "".join(p) for i, p in handler.argument_pieces.items()} == {
        0: calls[0].function.arguments, 1: calls[1].function.arguments}
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert handler.events[-1] == "thread.run.requires_action"

    after = Recorder()
    with client.beta.threads.runs.submit_tool_outputs_stream(
            tool_outputs=[{"tool_call_id": calls[0].id, "output": "sunny"},
                          {"tool_call_id": calls[1].id, "output": "9am"}],
            run_id=run.id, thread_id=t.id, event_handler=after) as stream:
        stream.until_done()
    assert after.deltas == ["Sunny", " at 9."]
    assert after.get_final_run().status == "completed"
    assert text_of(messages(http, t.id)[-1]) == "Sunny at 9."


def test_sdk_create_and_run_stream(client, fake_upstream):
    tag = fake_upstream.script({"chunks": ["one", " two"]})
    a = assistant(client)
    handler = Recorder()
    with client.beta.threads.create_and_run_stream(
            assistant_id=a.id, thread={"messages": [{"role": "user", "content": marker(tag)}]},
            event_handler=handler) as stream:
        stream.until_done()
    assert handler.events[0] == "thread.created"
    assert handler.deltas == ["one", " two"]
    assert handler.get_final_run().status == "completed"


# --- raw SSE -------------------------------------------------------------------------------------

def test_raw_stream_of_a_text_run(client, http, fake_upstream):
    chunks = ["Alpha", " beta", " gamma", "."]
    tag = fake_upstream.script({"chunks": chunks, "usage": {"prompt_tokens": 20, "completion_tokens": 4}})
    a = assistant(client)
    t = thread(client, tag)

    events = read_sse(http, "POST", f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id, "stream": True})

    assert names(events) == TEXT_EVENTS_HEAD + ["thread.message.delta"] * len(chunks) + TEXT_EVENTS_TAIL
    assert events[-1] == ("done", "[DONE]")
    created, queued, in_progress = (data_of(events, n)[0] for n in TEXT_EVENTS_HEAD[:3])
    run_id = created["id"]
    assert created["status"] == queued["status"] == "queued" and created["thread_id"] == t.id
    assert in_progress["status"] == "in_progress" and in_progress["started_at"] is not None

    message_id = data_of(events, "thread.message.created")[0]["id"]
    deltas = data_of(events, "thread.message.delta")
    assert all(d["id"] == message_id and d["object"] == "thread.message.delta" for d in deltas)
    assert [d["delta"]["content"][0]["index"] for d in deltas] == [0] * len(chunks)
    assert [d["delta"]["content"][0]["text"]["value"] for d in deltas] == chunks
    step_created = data_of(events, "thread.run.step.created")[0]
    assert step_created["step_details"] == {"type": "message_creation",
                                            "message_creation": {"message_id": message_id}}

    # The last snapshots are what polling reads afterwards.
    final_run = data_of(events, "thread.run.completed")[0]
    assert final_run["status"] == "completed"
    assert final_run["usage"] == {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}
    assert http.get(f"/v1/threads/{t.id}/runs/{run_id}").json() == final_run
    final_message = data_of(events, "thread.message.completed")[0]
    assert text_of(final_message) == "".join(chunks)
    assert http.get(f"/v1/threads/{t.id}/messages/{message_id}").json() == final_message
    final_step = data_of(events, "thread.run.step.completed")[0]
    assert http.get(f"/v1/threads/{t.id}/runs/{run_id}/steps/{final_step['id']}").json() == final_step


def test_raw_stream_of_create_and_run(client, http, fake_upstream):
    tag = fake_upstream.script({"chunks": ["Hi", "!"]})
    a = assistant(client)
    events = read_sse(http, "POST", "/v1/threads/runs", json={
        "assistant_id": a.id, "stream": True,
        "thread": {"messages": [{"role": "user", "content": f"hello {marker(tag)}"}]}})

    assert names(events) == (["thread.created"] + TEXT_EVENTS_HEAD + ["thread.message.delta"] * 2
                             + TEXT_EVENTS_TAIL)
    new_thread = events[0][1]
    run = events[1][1]
    assert new_thread["object"] == "thread" and run["thread_id"] == new_thread["id"]
    assert http.get(f"/v1/threads/{new_thread['id']}").json() == new_thread
    assert http.get(f"/v1/threads/{new_thread['id']}/runs/{run['id']}").json() == \
        data_of(events, "thread.run.completed")[0]


def test_raw_stream_of_a_function_call_then_submit(client, http, fake_upstream):
    tag = fake_upstream.script(
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
                        {"name": "get_time", "arguments": {"city": "Tokyo"}}]},
        {"chunks": ["Paris", " is", " mild."]})
    a = assistant(client, tools=[WEATHER_TOOL, TIME_TOOL])
    t = thread(client, tag)

    events = read_sse(http, "POST", f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id, "stream": True})
    n = names(events)
    assert n[:5] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress",
                     "thread.run.step.created", "thread.run.step.in_progress"]
    assert n[-2:] == ["thread.run.requires_action", "done"]
    assert set(n[5:-2]) == {"thread.run.step.delta"}
    step = events[3][1]
    assert step["type"] == "tool_calls" and step["status"] == "in_progress"
    run = events[-2][1]
    assert run["status"] == "requires_action"
    calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]

    # Each call opens with its id, type and name; its arguments follow in pieces, merged by index.
    pieces: dict[int, list[str]] = {0: [], 1: []}
    seen_ids: dict[int, str] = {}
    for delta in data_of(events, "thread.run.step.delta"):
        assert delta["id"] == step["id"] and delta["object"] == "thread.run.step.delta"
        (entry,) = delta["delta"]["step_details"]["tool_calls"]
        assert entry["type"] == "function"
        if "id" in entry:
            assert entry["index"] not in seen_ids
            seen_ids[entry["index"]] = entry["id"]
            assert entry["function"]["name"] == calls[entry["index"]]["function"]["name"]
        pieces[entry["index"]].append(entry["function"].get("arguments") or "")
    assert seen_ids == {0: calls[0]["id"], 1: calls[1]["id"]}
    assert ["".join(p) for p in pieces.values()] == [c["function"]["arguments"] for c in calls]
    assert all(len([p for p in ps if p]) > 1 for ps in pieces.values())  # streamed, not in one piece
    assert http.get(f"/v1/threads/{t.id}/runs/{run['id']}").json() == run

    after = read_sse(http, "POST", f"/v1/threads/{t.id}/runs/{run['id']}/submit_tool_outputs", json={
        "stream": True,
        "tool_outputs": [{"tool_call_id": calls[0]["id"], "output": "14C"},
                         {"tool_call_id": calls[1]["id"], "output": "10:00"}]})
    m = names(after)
    assert m[0] == "thread.run.step.completed"
    tool_step = after[0][1]
    assert tool_step["id"] == step["id"] and tool_step["status"] == "completed"
    assert [c["function"]["output"] for c in tool_step["step_details"]["tool_calls"]] == ["14C", "10:00"]
    assert m[1:4] == ["thread.run.queued", "thread.run.in_progress", "thread.run.step.created"]
    assert m[-4:] == TEXT_EVENTS_TAIL
    assert [d["delta"]["content"][0]["text"]["value"] for d in data_of(after, "thread.message.delta")] == \
        ["Paris", " is", " mild."]
    final_run = data_of(after, "thread.run.completed")[0]
    assert http.get(f"/v1/threads/{t.id}/runs/{run['id']}").json() == final_run
    message = data_of(after, "thread.message.completed")[0]
    assert http.get(f"/v1/threads/{t.id}/messages/{message['id']}").json() == message
    assert http.get(f"/v1/threads/{t.id}/runs/{run['id']}/steps/{step['id']}").json() == tool_step


def test_raw_stream_of_a_failed_run(client, http, fake_upstream):
    tag = fake_upstream.script({"status": 503, "message": "overloaded"})
    a = assistant(client)
    t = thread(client, tag)
    events = read_sse(http, "POST", f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id, "stream": True})
    assert names(events) == ["thread.run.created", "thread.run.queued", "thread.run.in_progress",
                             "thread.run.failed", "done"]
    failed = events[-2][1]
    assert failed["last_error"]["code"] == "server_error" and "overloaded" in failed["last_error"]["message"]
    assert http.get(f"/v1/threads/{t.id}/runs/{failed['id']}").json() == failed


def test_raw_stream_of_a_cancelled_run(client, http, server, fake_upstream):
    """Cancelling mid-answer: the stream says so, closes the open message and step, and its last
    snapshots are what polling reads."""
    chunks = [f"w{i} " for i in range(40)]
    tag = fake_upstream.script({"chunks": chunks, "delay": 0.1})
    a = assistant(client)
    t = thread(client, tag)
    cancelled: list[int] = []

    def cancel_soon() -> None:
        with make_http(server.url) as other:
            run = wait_for(lambda: other.get(f"/v1/threads/{t.id}/runs").json()["data"], what="the run")[0]
            wait_for(lambda: [m for m in messages(other, t.id) if m["run_id"] == run["id"]], what="its message")
            time.sleep(0.3)
            cancelled.append(other.post(f"/v1/threads/{t.id}/runs/{run['id']}/cancel").status_code)

    canceller = threading.Thread(target=cancel_soon)
    canceller.start()
    try:
        events = read_sse(http, "POST", f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id, "stream": True})
    finally:
        canceller.join()
    assert cancelled == [200]
    n = names(events)
    assert n[:7] == TEXT_EVENTS_HEAD
    assert "thread.run.cancelling" in n
    assert n[-4:] == ["thread.message.incomplete", "thread.run.step.cancelled", "thread.run.cancelled", "done"]
    run = data_of(events, "thread.run.cancelled")[0]
    message = data_of(events, "thread.message.incomplete")[0]
    step = data_of(events, "thread.run.step.cancelled")[0]
    said = "".join(d["delta"]["content"][0]["text"]["value"] for d in data_of(events, "thread.message.delta"))
    assert text_of(message) == said and message["incomplete_details"] == {"reason": "run_cancelled"}
    assert http.get(f"/v1/threads/{t.id}/runs/{run['id']}").json() == run
    assert http.get(f"/v1/threads/{t.id}/messages/{message['id']}").json() == message
    assert http.get(f"/v1/threads/{t.id}/runs/{run['id']}/steps/{step['id']}").json() == step


def test_raw_stream_of_a_dropped_upstream(client, http, fake_upstream):
    tag = fake_upstream.script({"chunks": ["Half ", "an ", "answer"], "fail_after": 3})
    a = assistant(client)
    t = thread(client, tag)
    events = read_sse(http, "POST", f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id, "stream": True})
    n = names(events)
    assert n == TEXT_EVENTS_HEAD + ["thread.message.delta"] * 2 + [
        "thread.message.incomplete", "thread.run.step.failed", "thread.run.failed", "done"]
    run = data_of(events, "thread.run.failed")[0]
    message = data_of(events, "thread.message.incomplete")[0]
    step = data_of(events, "thread.run.step.failed")[0]
    assert text_of(message) == "Half an " and message["incomplete_details"] == {"reason": "run_failed"}
    assert step["last_error"]["code"] == "server_error"
    assert http.get(f"/v1/threads/{t.id}/runs/{run['id']}").json() == run
    assert http.get(f"/v1/threads/{t.id}/messages/{message['id']}").json() == message
    assert http.get(f"/v1/threads/{t.id}/runs/{run['id']}/steps/{step['id']}").json() == step


def test_raw_stream_of_an_incomplete_run(client, http, fake_upstream):
    tag = fake_upstream.script({"chunks": ["Too", " long"], "finish_reason": "length"})
    a = assistant(client)
    t = thread(client, tag)
    events = read_sse(http, "POST", f"/v1/threads/{t.id}/runs",
                      json={"assistant_id": a.id, "stream": True, "max_completion_tokens": 256})
    assert names(events) == TEXT_EVENTS_HEAD + ["thread.message.delta"] * 2 + [
        "thread.message.incomplete", "thread.run.step.completed", "thread.run.incomplete", "done"]
    run = data_of(events, "thread.run.incomplete")[0]
    assert run["incomplete_details"] == {"reason": "max_completion_tokens"}
    message = data_of(events, "thread.message.incomplete")[0]
    assert text_of(message) == "Too long"
    assert http.get(f"/v1/threads/{t.id}/runs/{run['id']}").json() == run
    assert http.get(f"/v1/threads/{t.id}/messages/{message['id']}").json() == message


# --- a message opened while the model prepares its answer ------------------------------------------

def _stream_in_background(server_url: str, path: str, body: dict) -> tuple[threading.Thread, list[str]]:
    """Read a run's SSE stream in a thread: the event names, as they arrive."""
    seen: list[str] = []

    def read() -> None:
        with make_http(server_url) as other, other.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("event:"):
                    seen.append(line[6:].strip())

    reader = threading.Thread(target=read)
    reader.start()
    return reader, seen


def test_a_run_without_tools_writes_its_message_before_the_model_answers(client, http, server, fake_upstream):
    """A run without tools can only answer text: its message and step are written in the run's
    first transaction, while the model prepares its answer, and announced with its first text —
    the stream's events are those of any text run, in the same order."""
    chunks = ["Early", " bird"]
    tag = fake_upstream.script({"first_delay": 1.5, "chunks": chunks})
    a = assistant(client)
    t = thread(client, tag)
    reader, seen = _stream_in_background(server.url, f"/v1/threads/{t.id}/runs", {"assistant_id": a.id, "stream": True})
    try:
        waiting = wait_for(lambda: [m for m in messages(http, t.id) if m["role"] == "assistant"],
                           what="the run's message, written early")
        (message,) = waiting
        assert message["status"] == "in_progress" and message["content"] == []
        steps = http.get(f"/v1/threads/{t.id}/runs/{message['run_id']}/steps").json()["data"]
        assert [(s["type"], s["status"]) for s in steps] == [("message_creation", "in_progress")]
        wait_for(lambda: len(seen) >= 3, what="the stream's first events")
        assert not fake_upstream.ends(tag)  # the model has not answered yet
        assert seen == TEXT_EVENTS_HEAD[:3]  # its events wait for its text
    finally:
        reader.join(10)
    assert seen == TEXT_EVENTS_HEAD + ["thread.message.delta"] * len(chunks) + TEXT_EVENTS_TAIL
    final = http.get(f"/v1/threads/{t.id}/messages/{message['id']}").json()
    assert final["status"] == "completed" and text_of(final) == "Early bird"


def test_a_run_with_tools_opens_its_message_with_its_text(client, http, fake_upstream):
    """A run with tools may answer with calls: no message is written before the model's text."""
    tag = fake_upstream.script({"first_delay": 1.0, "text": "No call needed."})
    a = assistant(client, tools=[WEATHER_TOOL])
    t = thread(client, tag)
    run = http.post(f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id}).json()
    wait_for(lambda: fake_upstream.requests(tag), what="the model request")
    assert [m["role"] for m in messages(http, t.id)] == ["user"]
    assert http.get(f"/v1/threads/{t.id}/runs/{run['id']}/steps").json()["data"] == []
    wait_for(lambda: http.get(f"/v1/threads/{t.id}/runs/{run['id']}").json()["status"] == "completed",
             what="the run's end")
    assert text_of(messages(http, t.id)[-1]) == "No call needed."


def test_an_answer_without_text_leaves_no_message(client, http, fake_upstream):
    """The message written early is deleted, never announced, when the model says nothing."""
    tag = fake_upstream.script({"chunks": []})
    a = assistant(client)
    t = thread(client, tag)
    events = read_sse(http, "POST", f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id, "stream": True})
    assert names(events) == ["thread.run.created", "thread.run.queued", "thread.run.in_progress",
                             "thread.run.completed", "done"]
    run = data_of(events, "thread.run.completed")[0]
    assert [m["role"] for m in messages(http, t.id)] == ["user"]
    assert http.get(f"/v1/threads/{t.id}/runs/{run['id']}/steps").json()["data"] == []
