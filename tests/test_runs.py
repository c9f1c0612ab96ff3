"""Runs, driven with the SDK's helpers against the scripted fake model: a text answer
(create_and_poll, create_and_run_poll), list/retrieve/update, run steps, and function calling
(requires_action → submit_tool_outputs), including what the server sends upstream."""

from __future__ import annotations

import json
import time

import openai
import pytest

from tests.support.fake import marker
from tests.support.runs import (
    POLL_MS,
    TIME_TOOL,
    WEATHER_TOOL,
    assistant,
    error_of,
    messages,
    text_of,
    thread,
    wait_run,
)

CODE_INTERPRETER_PARAMS = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}
FILE_SEARCH_PARAMS = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}


# --- a text answer -------------------------------------------------------------------------------

def test_the_sdk_polls_a_run_as_often_as_the_server_says(client, http, fake_upstream):
    """``openai-poll-after-ms`` on a run's retrieval (ASSISTANTD_POLL_AFTER_MS, 100): the SDK's
    create_and_poll waits that long between polls instead of its own 1 s."""
    slow = {"chunks": ["Soon", "."], "first_delay": 0.3}
    tag = fake_upstream.script(slow, slow)  # one for each run
    a = assistant(client)
    t = thread(client, tag, "Answer when you can.")
    created = http.post(f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id})
    retrieved = http.get(f"/v1/threads/{t.id}/runs/{created.json()['id']}")
    assert retrieved.headers["openai-poll-after-ms"] == "100"
    wait_run(http, t.id, created.json()["id"])

    started = time.monotonic()
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id)  # no poll_interval_ms
    took = time.monotonic() - started
    assert run.status == "completed"
    # Its answer takes 0.3 s: with the SDK's own 1 s between polls it could not be seen before 1 s.
    assert took < 0.9, took


def test_create_and_poll_text_answer(client, http, fake_upstream):
    tag = fake_upstream.script({"chunks": ["The answer", " is", " 1."],
                                "usage": {"prompt_tokens": 31, "completion_tokens": 5}})
    a = assistant(client, instructions="Answer in one line.", tools=[WEATHER_TOOL])
    t = thread(client, tag, "Solve 3x + 11 = 14.")

    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)

    assert run.status == "completed"
    assert run.thread_id == t.id and run.assistant_id == a.id
    assert run.model == "gpt-4o"
    assert run.instructions == "Answer in one line."
    assert [tool.model_dump(exclude_none=True) for tool in run.tools] == [WEATHER_TOOL]
    assert run.usage.prompt_tokens == 31 and run.usage.completion_tokens == 5 and run.usage.total_tokens == 36
    assert run.started_at is not None and run.completed_at is not None
    assert run.created_at <= run.started_at <= run.completed_at
    assert run.expires_at is None
    assert run.last_error is None and run.required_action is None and run.incomplete_details is None
    assert run.failed_at is None and run.cancelled_at is None

    user, answer = messages(http, t.id)
    assert user["role"] == "user" and user["run_id"] is None
    assert answer["role"] == "assistant"
    assert text_of(answer) == "The answer is 1."
    assert answer["content"] == [{"type": "text", "text": {"value": "The answer is 1.", "annotations": []}}]
    assert answer["status"] == "completed" and answer["completed_at"] is not None
    assert answer["run_id"] == run.id and answer["assistant_id"] == a.id and answer["thread_id"] == t.id

    (request,) = fake_upstream.requests(tag)
    assert request["model"] == "gpt-4o"
    assert request["messages"] == [
        {"role": "system", "content": "Answer in one line."},
        {"role": "user", "content": f"Solve 3x + 11 = 14. {marker(tag)}"},
    ]


def test_run_options_override_the_assistant(client, fake_upstream):
    tag = fake_upstream.script({"text": "ok"})
    a = assistant(client, instructions="Assistant instructions.", tools=[WEATHER_TOOL], temperature=0.3)
    t = thread(client, tag)

    run = client.beta.threads.runs.create_and_poll(
        thread_id=t.id, assistant_id=a.id, model="gpt-4o-mini", instructions="Run instructions.",
        tools=[TIME_TOOL], metadata={"purpose": "override"}, poll_interval_ms=POLL_MS)

    assert run.status == "completed"
    assert run.model == "gpt-4o-mini"
    assert run.instructions == "Run instructions."
    assert [tool.model_dump(exclude_none=True) for tool in run.tools] == [TIME_TOOL]
    assert run.temperature == pytest.approx(0.3)  # not overridden: the assistant's
    assert run.metadata == {"purpose": "override"}
    (request,) = fake_upstream.requests(tag)
    assert request["model"] == "gpt-4o-mini"
    assert request["messages"][0] == {"role": "system", "content": "Run instructions."}
    assert [tool["function"]["name"] for tool in request["tools"]] == ["get_time"]
    assert request["temperature"] == pytest.approx(0.3)


def test_create_and_run_poll(client, http, fake_upstream):
    tag = fake_upstream.script({"chunks": ["Hi", " Jane"]})
    a = assistant(client)

    run = client.beta.threads.create_and_run_poll(
        assistant_id=a.id, poll_interval_ms=POLL_MS,
        thread={"messages": [{"role": "user", "content": f"Greet me {marker(tag)}"}],
                "metadata": {"origin": "create_and_run"}})

    assert run.status == "completed"
    t = client.beta.threads.retrieve(run.thread_id)
    assert t.metadata == {"origin": "create_and_run"}
    user, answer = messages(http, t.id)
    assert text_of(user) == f"Greet me {marker(tag)}"
    assert text_of(answer) == "Hi Jane" and answer["run_id"] == run.id
    assert len(fake_upstream.requests(tag)) == 1


def test_runs_list_retrieve_update(client, http, fake_upstream):
    tag = fake_upstream.script({"text": "first"}, {"text": "second"})
    a = assistant(client)
    t = thread(client, tag)
    first = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    second = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                                      metadata={"n": "2"}, poll_interval_ms=POLL_MS)
    assert first.status == second.status == "completed"

    assert [r.id for r in client.beta.threads.runs.list(t.id)] == [second.id, first.id]
    assert [r.id for r in client.beta.threads.runs.list(t.id, order="asc")] == [first.id, second.id]
    page = client.beta.threads.runs.list(t.id, order="asc", limit=1)
    assert [r.id for r in page.data] == [first.id] and page.has_more
    assert [r.id for r in client.beta.threads.runs.list(t.id, order="asc", after=first.id)] == [second.id]

    got = client.beta.threads.runs.retrieve(first.id, thread_id=t.id)
    assert got.model_dump() == first.model_dump()

    updated = client.beta.threads.runs.update(second.id, thread_id=t.id, metadata={"k": "v"})
    assert updated.metadata == {"k": "v"}  # the whole map is replaced
    assert updated.status == "completed" and updated.usage == second.usage
    assert client.beta.threads.runs.retrieve(second.id, thread_id=t.id).metadata == {"k": "v"}

    r = http.get(f"/v1/threads/{t.id}/runs/run_doesnotexist")
    assert r.status_code == 404 and error_of(r)["type"] == "invalid_request_error"
    other = client.beta.threads.create()
    assert http.get(f"/v1/threads/{other.id}/runs/{first.id}").status_code == 404
    assert http.get("/v1/threads/thread_nope/runs").status_code == 404


def test_message_creation_step(client, http, fake_upstream):
    tag = fake_upstream.script({"chunks": ["Step", " by", " step"],
                                "usage": {"prompt_tokens": 12, "completion_tokens": 3}})
    a = assistant(client)
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    answer = messages(http, t.id)[-1]

    steps = client.beta.threads.runs.steps.list(run.id, thread_id=t.id).data
    assert len(steps) == 1
    (step,) = steps
    assert step.type == "message_creation" and step.status == "completed"
    assert step.step_details.message_creation.message_id == answer["id"]
    assert step.run_id == run.id and step.thread_id == t.id and step.assistant_id == a.id
    assert step.completed_at is not None and step.last_error is None
    assert step.usage.prompt_tokens == 12 and step.usage.completion_tokens == 3 and step.usage.total_tokens == 15

    got = client.beta.threads.runs.steps.retrieve(step.id, thread_id=t.id, run_id=run.id)
    assert got.model_dump() == step.model_dump()
    assert http.get(f"/v1/threads/{t.id}/runs/{run.id}/steps/step_nope").status_code == 404

    # messages.list(run_id=) finds the run's message.
    assert [m.id for m in client.beta.threads.messages.list(t.id, run_id=run.id)] == [answer["id"]]


# --- function calling ----------------------------------------------------------------------------

TWO_CALLS = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                            {"name": "get_time", "arguments": {"city": "Tokyo"}}]}


def _requires_action(client, fake_upstream, *more_turns, **run_kwargs):
    """A run that stopped for two parallel function calls; returns (tag, thread, run)."""
    tag = fake_upstream.script(TWO_CALLS, *more_turns)
    a = assistant(client, tools=[WEATHER_TOOL, TIME_TOOL])
    t = thread(client, tag, "Weather in Paris and time in Tokyo?")
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id,
                                                   poll_interval_ms=POLL_MS, **run_kwargs)
    return tag, t, run


def test_parallel_function_calls_round_trip(client, http, fake_upstream):
    tag, t, run = _requires_action(client, fake_upstream, {"chunks": ["Sunny", " and", " 9am."]})

    assert run.status == "requires_action"
    assert run.required_action.type == "submit_tool_outputs"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("function", "get_weather", {"city": "Paris"}), ("function", "get_time", {"city": "Tokyo"})]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)
    assert run.expires_at is not None and run.completed_at is None

    (step,) = client.beta.threads.runs.steps.list(run.id, thread_id=t.id).data
    assert step.type == "tool_calls" and step.status == "in_progress"
    details = step.step_details.tool_calls
    assert [(d.id, d.type, d.function.name, d.function.arguments, d.function.output) for d in details] == [
        (c.id, "function", c.function.name, c.function.arguments, None) for c in calls]

    outputs = [{"tool_call_id": calls[0].id, "output": "18C and sunny"},
               {"tool_call_id": calls[1].id, "output": "09:00"}]
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        tool_outputs=outputs, run_id=run.id, thread_id=t.id, poll_interval_ms=POLL_MS)
    assert done.status == "completed" and done.required_action is None and done.expires_at is None
    assert text_of(messages(http, t.id)[-1]) == "Sunny and 9am."

    steps = client.beta.threads.runs.steps.list(run.id, thread_id=t.id, order="asc").data
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    tool_step = steps[0]
    assert tool_step.status == "completed" and tool_step.completed_at is not None
    assert [(d.id, d.function.output) for d in tool_step.step_details.tool_calls] == [
        (calls[0].id, "18C and sunny"), (calls[1].id, "09:00")]
    assert tool_step.usage is not None and tool_step.usage.total_tokens > 0
    # The run's usage adds up both model turns.
    assert done.usage.total_tokens == tool_step.usage.total_tokens + steps[1].usage.total_tokens

    first, second = fake_upstream.requests(tag)
    assert second["messages"][:len(first["messages"])] == first["messages"]
    assert second["messages"][len(first["messages"]):] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": calls[0].id, "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}},
            {"id": calls[1].id, "type": "function",
             "function": {"name": "get_time", "arguments": json.dumps({"city": "Tokyo"})}},
        ]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "18C and sunny"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "09:00"},
    ]


def test_upstream_request_carries_run_options(client, fake_upstream):
    tag = fake_upstream.script({"text": "{}"})
    strict = {"type": "function", "function": {
        "name": "lookup", "description": "Look a word up.", "strict": True,
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"],
                       "additionalProperties": False}}}
    a = assistant(client, tools=[WEATHER_TOOL, strict, {"type": "code_interpreter"}, {"type": "file_search"}])
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(
        thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False, temperature=0.25, top_p=0.5,
        response_format={"type": "json_object"}, max_completion_tokens=300)
    assert run.status == "completed"
    assert run.tool_choice.type == "function" and run.tool_choice.function.name == "get_weather"
    assert run.parallel_tool_calls is False and run.max_completion_tokens == 300

    (request,) = fake_upstream.requests(tag)
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}
    by_name = {tool["function"]["name"]: tool for tool in request["tools"]}
    assert all(tool["type"] == "function" for tool in request["tools"])
    assert list(by_name) == ["get_weather", "lookup", "code_interpreter", "file_search"]
    assert by_name["get_weather"] == WEATHER_TOOL
    assert by_name["lookup"] == strict
    assert by_name["code_interpreter"]["function"]["parameters"] == CODE_INTERPRETER_PARAMS
    assert by_name["file_search"]["function"]["parameters"] == FILE_SEARCH_PARAMS
    assert request["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert request["parallel_tool_calls"] is False
    assert request["temperature"] == pytest.approx(0.25)
    assert request["top_p"] == pytest.approx(0.5)
    assert request["response_format"] == {"type": "json_object"}
    assert request["max_completion_tokens"] == 300

def test_a_run_cancelled_before_its_first_turn_drops_the_request_sent_early(client, http, fake_upstream):
    # The first turn's request leaves from the transaction that creates the run (its prompt is
    # known there); a run that ends before its turn reads the answer must not leave it open.
    tag = fake_upstream.script({"text": "never read", "first_delay": 5})
    a = assistant(client)
    t = thread(client, tag)
    run = http.post(f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id}).json()
    cancel = http.post(f"/v1/threads/{t.id}/runs/{run['id']}/cancel")
    assert cancel.status_code == 200, cancel.text
    asked = time.time()
    final = wait_run(http, t.id, run["id"])
    assert final["status"] == "cancelled"
    deadline = time.monotonic() + 3
    while not fake_upstream.ends(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    (end,) = fake_upstream.ends(tag)
    assert end["how"] == "closed" and end["at"] - asked < 2, end
    assert len(fake_upstream.requests(tag)) == 1
    assert [m["role"] for m in messages(http, t.id)] == ["user"]  # nothing of the answer was kept


def test_model_turns_reuse_the_upstream_connection(client, fake_upstream):
    # Each turn reads its answer to the end, so the connection goes back to the pool: a new TCP
    # (for a real upstream, TLS) connection per turn would add its handshake to every answer.
    tag = fake_upstream.script({"text": "one"}, {"text": "two"}, {"text": "three"})
    a = assistant(client)
    t = thread(client, tag)
    for _ in range(3):
        run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
        assert run.status == "completed"

    seen: set[int] = set()
    reused = []
    for request in fake_upstream.ports():
        if request["tag"] == tag:
            reused.append(request["port"] in seen)
        seen.add(request["port"])
    assert len(reused) == 3
    assert reused[1:] == [True, True]  # the second and third turns came over a connection already used


def test_connection_dropped_after_done_still_completes_the_run(client, http, fake_upstream):
    # Reading past [DONE] (to keep the connection) must not turn a finished answer into a failure
    # when the upstream breaks the connection instead of ending its body.
    tag = fake_upstream.script({"text": "All of it arrived.", "drop_after_done": True}, {"text": "next"})
    a = assistant(client)
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    assert run.status == "completed", run.last_error
    assert text_of(messages(http, t.id)[-1]) == "All of it arrived."
    # The broken connection was not pooled: the next turn gets an answer.
    again = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    assert again.status == "completed" and text_of(messages(http, t.id)[-1]) == "next"



def test_tool_choice_strings_and_json_schema_are_forwarded(client, fake_upstream):
    schema = {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
              "strict": True}
    tag = fake_upstream.script({"text": "{\"a\": \"b\"}"})
    a = assistant(client, tools=[WEATHER_TOOL])
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(
        thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS, tool_choice="required",
        response_format={"type": "json_schema", "json_schema": schema})
    assert run.status == "completed"
    (request,) = fake_upstream.requests(tag)
    assert request["tool_choice"] == "required"
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"]["name"] == "answer"
    assert request["response_format"]["json_schema"]["schema"] == schema["schema"]


def test_user_function_may_not_shadow_a_builtin_tool(client, http):
    a = assistant(client)
    t = client.beta.threads.create()
    shadow = {"type": "function", "function": {"name": "code_interpreter", "parameters": {"type": "object"}}}
    r = http.post(f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id, "tools": [shadow]})
    assert r.status_code == 400, r.text
    assert http.get(f"/v1/threads/{t.id}/runs").json()["data"] == []


@pytest.mark.parametrize("case", ["missing", "unknown", "duplicate", "no_id"])
def test_bad_tool_outputs_are_refused_and_change_nothing(client, http, fake_upstream, case):
    _, t, run = _requires_action(client, fake_upstream)
    assert run.status == "requires_action"
    a_id, b_id = [c.id for c in run.required_action.submit_tool_outputs.tool_calls]
    outputs = {
        "missing": [{"tool_call_id": a_id, "output": "x"}],
        "unknown": [{"tool_call_id": a_id, "output": "x"}, {"tool_call_id": "call_unknown", "output": "y"}],
        "duplicate": [{"tool_call_id": a_id, "output": "x"}, {"tool_call_id": a_id, "output": "y"},
                      {"tool_call_id": b_id, "output": "z"}],
        "no_id": [{"output": "x"}, {"tool_call_id": b_id, "output": "z"}],
    }[case]
    before_run = http.get(f"/v1/threads/{t.id}/runs/{run.id}").json()
    before_steps = http.get(f"/v1/threads/{t.id}/runs/{run.id}/steps").json()

    r = http.post(f"/v1/threads/{t.id}/runs/{run.id}/submit_tool_outputs", json={"tool_outputs": outputs})
    assert r.status_code == 400, r.text
    assert error_of(r)["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.submit_tool_outputs(tool_outputs=outputs, run_id=run.id, thread_id=t.id)

    assert http.get(f"/v1/threads/{t.id}/runs/{run.id}").json() == before_run
    assert http.get(f"/v1/threads/{t.id}/runs/{run.id}/steps").json() == before_steps

    # The run still takes a correct answer afterwards.
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        tool_outputs=[{"tool_call_id": a_id, "output": "1"}, {"tool_call_id": b_id, "output": "2"}],
        run_id=run.id, thread_id=t.id, poll_interval_ms=POLL_MS)
    assert done.status == "completed"


def test_tool_outputs_to_a_finished_run_are_refused(client, http, fake_upstream):
    tag = fake_upstream.script({"text": "done"})
    a = assistant(client, tools=[WEATHER_TOOL])
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    assert run.status == "completed"
    r = http.post(f"/v1/threads/{t.id}/runs/{run.id}/submit_tool_outputs",
                  json={"tool_outputs": [{"tool_call_id": "call_x", "output": "x"}]})
    assert r.status_code == 400, r.text
    assert wait_run(http, t.id, run.id)["status"] == "completed"


def test_function_call_with_text_before_it(client, http, fake_upstream):
    """Text the model says before calling a tool is a message of its own, completed before the
    tool-call step."""
    tag = fake_upstream.script(
        {"chunks": ["Let me check."], "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
        {"text": "It is cold."})
    a = assistant(client, tools=[WEATHER_TOOL])
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    assert run.status == "requires_action"
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=t.id, order="asc").data
    assert [(s.type, s.status) for s in steps] == [("message_creation", "completed"), ("tool_calls", "in_progress")]
    assert text_of(messages(http, t.id)[-1]) == "Let me check."

    (call,) = run.required_action.submit_tool_outputs.tool_calls
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        tool_outputs=[{"tool_call_id": call.id, "output": "-5C"}], run_id=run.id, thread_id=t.id,
        poll_interval_ms=POLL_MS)
    assert done.status == "completed"
    assert [text_of(m) for m in messages(http, t.id)[1:]] == ["Let me check.", "It is cold."]
    _, second = fake_upstream.requests(tag)
    assert second["messages"][-3:] == [
        {"role": "assistant", "content": "Let me check."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "-5C"},
    ]


def test_rejected_run_writes_nothing(client, http):
    a = assistant(client, tools=[WEATHER_TOOL])
    t = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    bad = [
        ({"assistant_id": "asst_nope"}, 404),
        ({"assistant_id": a.id, "tool_choice": {"type": "function", "function": {"name": "absent"}}}, 400),
        ({"assistant_id": a.id, "max_completion_tokens": 10}, 400),
        ({"assistant_id": a.id, "truncation_strategy": {"type": "sometimes"}}, 400),
        ({"assistant_id": a.id, "additional_messages": [
            {"role": "user", "content": "kept?"},
            {"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": "file_nope"}}]},
        ]}, 400),
    ]
    for body, status in bad:
        r = http.post(f"/v1/threads/{t.id}/runs", json=body)
        assert r.status_code == status, (body, r.text)
    assert http.get(f"/v1/threads/{t.id}/runs").json()["data"] == []
    assert [text_of(m) for m in messages(http, t.id)] == ["hi"]
