"""A run's life beyond the happy path: one active run per thread, cancel, expiry, upstream
failures, token limits, what the prompt holds (truncation, additional instructions/messages,
images, model map), and durability across a SIGKILL and a client that goes away mid-stream."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.conftest import make_client, make_http
from tests.support.fake import marker
from tests.support.runs import (
    POLL_MS,
    WEATHER_TOOL,
    assistant,
    error_of,
    messages,
    text_of,
    thread,
    wait_for,
    wait_run,
)

# A 1×1 transparent PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def start_run(http, thread_id: str, assistant_id: str, **body) -> dict:
    r = http.post(f"/v1/threads/{thread_id}/runs", json={"assistant_id": assistant_id, **body})
    assert r.status_code == 200, r.text
    return r.json()


def open_message(http, thread_id: str, run_id: str):
    """The run's assistant message once it exists (None before): a run without tools writes it as
    its model request goes out, any other with its first text."""
    for m in messages(http, thread_id):
        if m["run_id"] == run_id:
            return m
    return None


# --- one active run per thread -------------------------------------------------------------------

def test_one_active_run_per_thread(client, http, fake_upstream):
    tag = fake_upstream.script({"first_delay": 1.5, "text": "slow answer"})
    a = assistant(client)
    t = thread(client, tag)
    run = start_run(http, t.id, a.id)

    r = http.post(f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id})
    assert r.status_code == 400, r.text
    assert run["id"] in error_of(r)["message"]
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.messages.create(thread_id=t.id, role="user", content="more")
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.runs.create(thread_id=t.id, assistant_id=a.id)

    assert wait_run(http, t.id, run["id"])["status"] == "completed"
    assert [r["id"] for r in http.get(f"/v1/threads/{t.id}/runs").json()["data"]] == [run["id"]]
    assert [m["role"] for m in messages(http, t.id)] == ["user", "assistant"]
    # Once it is done the thread takes messages and runs again.
    client.beta.threads.messages.create(thread_id=t.id, role="user", content=f"again {marker(tag)}")
    second = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    assert second.status == "completed"


def test_requires_action_blocks_the_thread_too(client, http, fake_upstream):
    tag = fake_upstream.script({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]})
    a = assistant(client, tools=[WEATHER_TOOL])
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    assert run.status == "requires_action"
    assert http.post(f"/v1/threads/{t.id}/messages", json={"role": "user", "content": "x"}).status_code == 400
    assert http.post(f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id}).status_code == 400
    client.beta.threads.runs.cancel(run.id, thread_id=t.id)
    assert http.post(f"/v1/threads/{t.id}/messages", json={"role": "user", "content": "x"}).status_code == 200


# --- cancel --------------------------------------------------------------------------------------

def test_cancel_while_streaming_text(client, http, fake_upstream):
    chunks = [f"word{i} " for i in range(40)]
    tag = fake_upstream.script({"chunks": chunks, "delay": 0.1})
    a = assistant(client)
    t = thread(client, tag)
    run = start_run(http, t.id, a.id)
    wait_run(http, t.id, run["id"], until={"in_progress"})
    wait_for(lambda: open_message(http, t.id, run["id"]), what="the run's message")
    time.sleep(0.3)

    cancelled = client.beta.threads.runs.cancel(run["id"], thread_id=t.id)
    assert cancelled.status in ("cancelling", "cancelled")
    final = wait_run(http, t.id, run["id"], timeout=5)
    assert final["status"] == "cancelled"
    assert final["cancelled_at"] is not None and final["completed_at"] is None and final["failed_at"] is None
    assert final["expires_at"] is None

    message = open_message(http, t.id, run["id"])
    assert message["status"] == "incomplete"
    assert message["incomplete_details"] == {"reason": "run_cancelled"}
    assert message["incomplete_at"] is not None
    said = text_of(message)
    assert said and "".join(chunks).startswith(said) and said != "".join(chunks)
    steps = http.get(f"/v1/threads/{t.id}/runs/{run['id']}/steps").json()["data"]
    assert [(s["type"], s["status"]) for s in steps] == [("message_creation", "cancelled")]
    assert steps[0]["cancelled_at"] is not None
    # The upstream read was aborted: the run did not wait for the rest of the answer.
    assert final["cancelled_at"] - final["started_at"] < 3


def test_cancel_while_waiting_for_the_model(client, http, fake_upstream):
    tag = fake_upstream.script({"hang": True})
    a = assistant(client)
    t = thread(client, tag)
    run = start_run(http, t.id, a.id)
    wait_run(http, t.id, run["id"], until={"in_progress"})
    wait_for(lambda: fake_upstream.requests(tag), what="the upstream request")

    r = http.post(f"/v1/threads/{t.id}/runs/{run['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] in ("cancelling", "cancelled")
    final = wait_run(http, t.id, run["id"], timeout=5)
    assert final["status"] == "cancelled" and final["cancelled_at"] is not None
    assert messages(http, t.id)[-1]["role"] == "user"  # nothing was said


def test_cancel_while_requires_action(client, http, fake_upstream):
    tag = fake_upstream.script({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]})
    a = assistant(client, tools=[WEATHER_TOOL])
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    assert run.status == "requires_action"

    cancelled = client.beta.threads.runs.cancel(run.id, thread_id=t.id)
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_at is not None and cancelled.required_action is None
    assert client.beta.threads.runs.retrieve(run.id, thread_id=t.id).model_dump() == cancelled.model_dump()
    (step,) = client.beta.threads.runs.steps.list(run.id, thread_id=t.id).data
    assert step.status == "cancelled" and step.cancelled_at is not None

    (call,) = run.required_action.submit_tool_outputs.tool_calls
    r = http.post(f"/v1/threads/{t.id}/runs/{run.id}/submit_tool_outputs",
                  json={"tool_outputs": [{"tool_call_id": call.id, "output": "late"}]})
    assert r.status_code == 400


def test_cancel_a_finished_run_is_refused(client, http, fake_upstream):
    tag = fake_upstream.script({"text": "done"})
    a = assistant(client)
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    assert run.status == "completed"
    r = http.post(f"/v1/threads/{t.id}/runs/{run.id}/cancel")
    assert r.status_code == 400, r.text
    assert error_of(r)["type"] == "invalid_request_error"
    assert http.get(f"/v1/threads/{t.id}/runs/{run.id}").json()["status"] == "completed"
    assert http.post(f"/v1/threads/{t.id}/runs/run_nope/cancel").status_code == 404


# --- expiry --------------------------------------------------------------------------------------

def test_run_waiting_for_tool_outputs_expires(spawn, fake_upstream):
    server = spawn("expiry", ASSISTANTD_RUN_EXPIRY_SECONDS="2")
    tag = fake_upstream.script({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]})
    with make_client(server.base_url) as client, make_http(server.url) as http:
        a = assistant(client, tools=[WEATHER_TOOL])
        t = thread(client, tag)
        run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
        assert run.status == "requires_action"
        assert run.expires_at is not None and run.expires_at <= int(time.time()) + 3

        final = wait_run(http, t.id, run.id, until={"expired", "completed", "failed", "cancelled"}, timeout=15)
        assert final["status"] == "expired"
        assert final["required_action"] is None
        (step,) = http.get(f"/v1/threads/{t.id}/runs/{run.id}/steps").json()["data"]
        assert step["status"] == "expired" and step["expired_at"] is not None
        (call,) = run.required_action.submit_tool_outputs.tool_calls
        r = http.post(f"/v1/threads/{t.id}/runs/{run.id}/submit_tool_outputs",
                      json={"tool_outputs": [{"tool_call_id": call.id, "output": "late"}]})
        assert r.status_code == 400
        # An expired run no longer holds the thread.
        assert http.post(f"/v1/threads/{t.id}/messages", json={"role": "user", "content": "x"}).status_code == 200


# --- upstream failures and limits ----------------------------------------------------------------

@pytest.mark.parametrize("status, code", [(500, "server_error"), (429, "rate_limit_exceeded")])
def test_upstream_http_error_fails_the_run(client, http, fake_upstream, status, code):
    tag = fake_upstream.script({"status": status, "message": "scripted upstream trouble"})
    a = assistant(client)
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    assert run.status == "failed"
    assert run.last_error.code == code
    assert "scripted upstream trouble" in run.last_error.message
    assert run.failed_at is not None and run.completed_at is None and run.expires_at is None
    assert client.beta.threads.runs.steps.list(run.id, thread_id=t.id).data == []
    assert [m["role"] for m in messages(http, t.id)] == ["user"]
    # The thread is free again.
    assert http.post(f"/v1/threads/{t.id}/messages", json={"role": "user", "content": "x"}).status_code == 200


def test_dropped_upstream_stream_keeps_what_was_said(client, http, fake_upstream):
    # Deltas: the role opener, then "Partial ", "answer " — and the connection drops.
    tag = fake_upstream.script({"chunks": ["Partial ", "answer ", "never", " sent"], "fail_after": 3})
    a = assistant(client)
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    assert run.status == "failed"
    assert run.last_error.code == "server_error" and run.last_error.message

    message = messages(http, t.id)[-1]
    assert message["run_id"] == run.id and message["status"] == "incomplete"
    assert text_of(message) == "Partial answer "
    assert message["incomplete_details"] == {"reason": "run_failed"}
    (step,) = client.beta.threads.runs.steps.list(run.id, thread_id=t.id).data
    assert step.status == "failed" and step.failed_at is not None
    assert step.last_error.code == "server_error"


def test_length_finish_ends_the_run_incomplete(client, http, fake_upstream):
    tag = fake_upstream.script({"chunks": ["This is cut", " off"], "finish_reason": "length",
                                "usage": {"prompt_tokens": 10, "completion_tokens": 256}})
    a = assistant(client)
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, max_completion_tokens=256,
                                                   poll_interval_ms=POLL_MS)
    assert run.status == "incomplete"
    assert run.incomplete_details.reason == "max_completion_tokens"
    assert run.usage.completion_tokens == 256
    assert run.completed_at is None and run.failed_at is None
    message = messages(http, t.id)[-1]
    assert message["status"] == "incomplete" and message["incomplete_details"] == {"reason": "max_tokens"}
    assert text_of(message) == "This is cut off"
    (request,) = fake_upstream.requests(tag)
    assert request["max_completion_tokens"] == 256


# --- what the prompt holds -----------------------------------------------------------------------

def test_truncation_last_messages(client, fake_upstream):
    tag = fake_upstream.script({"text": "ok"})
    a = assistant(client, instructions="Sys.")
    t = client.beta.threads.create(messages=[
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": f"five {marker(tag)}"},
    ])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=t.id, assistant_id=a.id, truncation_strategy={"type": "last_messages", "last_messages": 2},
        poll_interval_ms=POLL_MS)
    assert run.status == "completed"
    assert run.truncation_strategy.type == "last_messages" and run.truncation_strategy.last_messages == 2
    (request,) = fake_upstream.requests(tag)
    assert request["messages"] == [
        {"role": "system", "content": "Sys."},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": f"five {marker(tag)}"},
    ]


def test_additional_instructions_and_messages(client, http, fake_upstream):
    tag = fake_upstream.script({"text": "ok"})
    a = assistant(client, instructions="Base instructions.")
    t = client.beta.threads.create(messages=[{"role": "user", "content": "earlier"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS,
        additional_instructions="Also be polite.",
        additional_messages=[{"role": "assistant", "content": "Noted."},
                             {"role": "user", "content": f"Now answer {marker(tag)}"}])
    assert run.status == "completed"
    (request,) = fake_upstream.requests(tag)
    assert request["messages"] == [
        {"role": "system", "content": "Base instructions.\n\nAlso be polite."},
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": f"Now answer {marker(tag)}"},
    ]
    # The additional messages are part of the thread now, before the run's answer.
    assert [text_of(m) for m in messages(http, t.id)] == [
        "earlier", "Noted.", f"Now answer {marker(tag)}", "ok"]


def test_image_file_goes_upstream_as_a_data_url(client, fake_upstream):
    tag = fake_upstream.script({"text": "A pixel."})
    image = client.files.create(file=("pixel.png", PNG, "image/png"), purpose="vision")
    a = assistant(client)
    t = client.beta.threads.create(messages=[{"role": "user", "content": [
        {"type": "text", "text": f"What is this? {marker(tag)}"},
        {"type": "image_file", "image_file": {"file_id": image.id, "detail": "low"}},
    ]}])
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    assert run.status == "completed"
    (request,) = fake_upstream.requests(tag)
    user = request["messages"][1]
    assert user["role"] == "user"
    text, picture = user["content"]
    assert text == {"type": "text", "text": f"What is this? {marker(tag)}"}
    assert picture["type"] == "image_url" and picture["image_url"]["detail"] == "low"
    prefix = "data:image/png;base64,"
    assert picture["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(picture["image_url"]["url"][len(prefix):]) == PNG


def test_model_map_renames_the_upstream_model_only(spawn, fake_upstream):
    server = spawn("modelmap", ASSISTANTD_MODEL_MAP="gpt-4o=local-llama, other=x")
    tag = fake_upstream.script({"text": "mapped"}, {"text": "unmapped"})
    with make_client(server.base_url) as client:
        a = assistant(client, model="gpt-4o")
        t = thread(client, tag)
        run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
        assert run.status == "completed" and run.model == "gpt-4o"
        second = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, model="gpt-4.1",
                                                          poll_interval_ms=POLL_MS)
        assert second.status == "completed" and second.model == "gpt-4.1"
    first_request, second_request = fake_upstream.requests(tag)
    assert first_request["model"] == "local-llama"
    assert second_request["model"] == "gpt-4.1"


# --- durability ----------------------------------------------------------------------------------

def test_sigkill_mid_run_resumes_it_and_the_queue_goes_on(spawn, fake_upstream):
    # One run at a time, so a second run waits in the queue while the first executes.
    server = spawn("sigkill", ASSISTANTD_MAX_CONCURRENT_RUNS="1")
    words = [f"w{i} " for i in range(20)]
    slow = fake_upstream.script({"chunks": words, "delay": 1.0}, {"chunks": words})
    quick = fake_upstream.script({"text": "after the restart"})
    with make_client(server.base_url) as client, make_http(server.url) as http:
        a = assistant(client)
        t = thread(client, slow)
        run = start_run(http, t.id, a.id)
        wait_run(http, t.id, run["id"], until={"in_progress"})
        opened = wait_for(lambda: open_message(http, t.id, run["id"]), what="the run's message")
        waiting_thread = thread(client, quick)
        waiting = start_run(http, waiting_thread.id, a.id)
        time.sleep(0.3)
        assert http.get(f"/v1/threads/{waiting_thread.id}/runs/{waiting['id']}").json()["status"] == "queued"
    server.kill()
    server.start()
    with make_http(server.url) as http:
        # The restarted server finds the run in progress (SQLite), or the dead process's run
        # (PostgreSQL: a pid of this host that is gone), and resumes it: the turn is issued again
        # into the message it had opened (tests/test_resume.py has the details).
        final = wait_run(http, t.id, run["id"], timeout=60)
        assert final["status"] == "completed", final
        message = open_message(http, t.id, run["id"])
        assert message["id"] == opened["id"] and message["status"] == "completed"
        assert text_of(message) == "".join(words)
        steps = http.get(f"/v1/threads/{t.id}/runs/{run['id']}/steps").json()["data"]
        assert [s["status"] for s in steps] == ["completed"]
        # The run that was still queued is picked up by the new process and runs to the end.
        assert wait_run(http, waiting_thread.id, waiting["id"], timeout=30)["status"] == "completed"
        assert text_of(messages(http, waiting_thread.id)[-1]) == "after the restart"


def test_client_leaving_the_stream_does_not_stop_the_run(client, http, fake_upstream):
    chunks = [f"c{i} " for i in range(10)]
    tag = fake_upstream.script({"chunks": chunks, "delay": 0.1})
    a = assistant(client)
    t = thread(client, tag)
    run_id = None
    with http.stream("POST", f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id, "stream": True}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:") and run_id is None:
                run_id = json.loads(line[5:])["id"]  # thread.run.created
            if line == "event: thread.message.delta":
                break  # hang up mid-answer
    final = wait_run(http, t.id, run_id, timeout=10)
    assert final["status"] == "completed"
    assert text_of(messages(http, t.id)[-1]) == "".join(chunks)


def test_concurrent_creates_start_one_run(client, server, fake_upstream):
    """Racing requests on one thread: exactly one run starts, the rest are refused."""
    tag = fake_upstream.script({"first_delay": 2.0, "text": "only one"})
    a = assistant(client)
    t = thread(client, tag)

    def create(_: int) -> int:
        with make_http(server.url) as h:
            return h.post(f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(create, range(8)))
    assert codes == [200] + [400] * 7
    with make_http(server.url) as h:
        (run,) = h.get(f"/v1/threads/{t.id}/runs").json()["data"]
        assert wait_run(h, t.id, run["id"])["status"] == "completed"
