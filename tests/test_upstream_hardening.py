"""An upstream that misbehaves (README, "Behaviour worth knowing"): answers that are not a
well-formed chat-completions stream, streams that never end, errors that repeat the request, and
text that cannot be encoded. Each ends the run as it must — ``failed`` with a short
``server_error`` naming what was wrong, or ``completed`` with the text repaired — and leaves the
thread, the run and its steps readable; the server keeps answering meanwhile."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import make_client, make_http
from tests.support.fake import read_sse
from tests.support.health import HealthPoller
from tests.support.runs import POLL_MS, WEATHER_TOOL, assistant, messages, text_of, thread, wait_run

MAX_MESSAGE = 500  # last_error.message is never longer


def _data(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _text_chunk(text: str) -> str:
    return _data({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text},
                                                                   "finish_reason": None}]})


STOP = _data({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})


def _run(client, http, fake_upstream, *turns: dict[str, Any], **assistant_kwargs) -> tuple[Any, dict[str, Any]]:
    """Run ``turns`` to the end; check that the thread, the run and its steps still read."""
    tag = fake_upstream.script(*turns)
    a = assistant(client, **assistant_kwargs)
    t = thread(client, tag)
    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
    final = wait_run(http, t.id, run.id)  # also answers 200
    assert http.get(f"/v1/threads/{t.id}/messages").status_code == 200
    steps = http.get(f"/v1/threads/{t.id}/runs/{run.id}/steps")
    assert steps.status_code == 200, steps.text
    if final["last_error"] is not None:
        assert len(final["last_error"]["message"]) <= MAX_MESSAGE
    return t, final


def _assert_failed(final: dict[str, Any], *phrases: str) -> None:
    assert final["status"] == "failed", final
    assert final["last_error"]["code"] == "server_error"
    for phrase in phrases:
        assert phrase in final["last_error"]["message"], final["last_error"]


# --- answers that are not a chat-completions stream ------------------------------------------------

JSON_COMPLETION = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4o",
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                                           "finish_reason": "stop"}]})

NOT_A_STREAM = {
    "html page": ({"raw": ["<html><body>Bad gateway</body></html>"], "content_type": "text/html"},
                  "not an event stream (content-type text/html)"),
    "json completion": ({"raw": [JSON_COMPLETION], "content_type": "application/json"},
                        "not an event stream (content-type application/json)"),
    "no content type": ({"raw": [_text_chunk("Hi"), STOP, "data: [DONE]\n\n"], "content_type": None},
                        "not an event stream (no content-type)"),
    "empty body": ({"raw": []}, "empty"),
    "only keep-alive comments": ({"raw": [": ping\n\n", ": ping\n\n"]}, "empty"),
    "not json": ({"raw": ["data: {nope\n\n"]}, "not JSON"),
    "array chunk": ({"raw": ["data: [1, 2]\n\n"]}, "not a JSON object"),
    "string chunk": ({"raw": ['data: "hello"\n\n']}, "not a JSON object"),
    "choices not a list": ({"raw": [_data({"choices": {"index": 0}})]}, "choices"),
    "choice not an object": ({"raw": [_data({"choices": [3]})]}, "choice"),
    "delta not an object": ({"raw": [_data({"choices": [{"index": 0, "delta": "Hi"}]})]}, "delta"),
    "content not a string": ({"raw": [_data({"choices": [{"index": 0, "delta": {"content": 5}}]})]}, "content"),
    "tool_calls not a list": ({"raw": [_data({"choices": [{"index": 0, "delta": {"tool_calls": {}}}]})]},
                              "tool_calls"),
    "arguments not a string": ({"raw": [_data({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]}}]})]}, "arguments"),
    "tool call index not a number": ({"raw": [_data({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": [0], "function": {"name": "get_weather"}}]}}]})]}, "index"),
    "finish_reason not a string": ({"raw": [_data({"choices": [{"index": 0, "delta": {}, "finish_reason": 1}]})]},
                                   "finish_reason"),
    "usage not an object": ({"raw": [_text_chunk("Hi"), STOP, _data({"choices": [], "usage": "lots"}),
                                     "data: [DONE]\n\n"]}, "usage"),
    "usage counts not numbers": ({"raw": [_text_chunk("Hi"), STOP,
                                          _data({"choices": [], "usage": {"prompt_tokens": "many"}}),
                                          "data: [DONE]\n\n"]}, "usage"),
    "truncated: no finish_reason, no [DONE]": ({"chunks": ["Half", " an"], "omit": ["finish", "usage", "done"]},
                                               "ended before it finished"),
    "error chunk": ({"raw": [_text_chunk("Hi"), _data({"error": {"message": "overloaded, try later"}})]},
                    "overloaded, try later"),
}


@pytest.mark.parametrize("name", list(NOT_A_STREAM))
def test_a_malformed_answer_fails_the_run(client, http, fake_upstream, name):
    turn, phrase = NOT_A_STREAM[name]
    _, final = _run(client, http, fake_upstream, turn, tools=[WEATHER_TOOL])
    _assert_failed(final, phrase)
    assert final["failed_at"] is not None and final["completed_at"] is None


def test_what_was_said_before_a_malformed_chunk_is_kept(client, http, fake_upstream):
    t, final = _run(client, http, fake_upstream,
                    {"raw": [_text_chunk("Hello "), _text_chunk("there"), "data: [1]\n\n"]})
    _assert_failed(final, "not a JSON object")
    message = messages(http, t.id)[-1]
    assert message["status"] == "incomplete" and text_of(message) == "Hello there"
    (step,) = http.get(f"/v1/threads/{t.id}/runs/{final['id']}/steps").json()["data"]
    assert step["status"] == "failed" and step["last_error"]["code"] == "server_error"


ACCEPTED = {
    "bare content type": {"raw": [_text_chunk("Hi"), STOP, "data: [DONE]\n\n"], "content_type": "text/event-stream"},
    "content type in capitals, with charset": {"raw": [_text_chunk("Hi"), STOP, "data: [DONE]\n\n"],
                                               "content_type": "Text/Event-Stream; charset=UTF-8"},
    "CRLF line ends": {"raw": [_text_chunk("Hi").replace("\n", "\r\n"), STOP.replace("\n", "\r\n"),
                               "data: [DONE]\r\n\r\n"]},
    "finish_reason without [DONE]": {"chunks": ["Hi"], "omit": ["done"]},
    "[DONE] without finish_reason": {"chunks": ["Hi"], "omit": ["finish"]},
    "lines split across reads": {"raw": [c for c in _text_chunk("Hi") + STOP + "data: [DONE]\n\n"]},
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_a_well_formed_answer_is_accepted(client, http, fake_upstream, name):
    t, final = _run(client, http, fake_upstream, ACCEPTED[name])
    assert final["status"] == "completed", final
    assert text_of(messages(http, t.id)[-1]) == "Hi"


def test_a_30mb_line_fails_the_run_and_healthz_stays_fast(client, http, server, fake_upstream):
    """The line buffer stops at ASSISTANTD_UPSTREAM_MAX_LINE_BYTES (4 MiB); meanwhile the server
    answers /healthz as fast as ever."""
    with HealthPoller(server.url) as poller:
        t, final = _run(client, http, fake_upstream, {
            "raw": [_text_chunk("Before "), 'data: {"choices": [{"index": 0, "delta": {"content": "'],
            "pad_bytes": 30 * 1024 * 1024})
    _assert_failed(final, "longer than 4194304 bytes", "ASSISTANTD_UPSTREAM_MAX_LINE_BYTES")
    assert text_of(messages(http, t.id)[-1]) == "Before "
    print(f"healthz: {poller.polls} requests, max {poller.worst * 1000:.1f} ms")
    assert poller.polls > 5 and poller.worst <= 0.1, poller.worst


# --- deadlines -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def turn_limited(spawn):
    """A server whose model turns may last 2 s."""
    return spawn("turn-timeout", ASSISTANTD_UPSTREAM_TURN_TIMEOUT="2", ASSISTANTD_EMBEDDINGS="none")


@pytest.fixture(scope="module")
def run_limited(spawn):
    """A server whose runs may execute for 3 s (waiting for tool outputs not counted)."""
    return spawn("run-timeout", ASSISTANTD_RUN_TIMEOUT="3", ASSISTANTD_EMBEDDINGS="none")


def test_a_turn_that_never_finishes_fails_at_its_deadline(turn_limited, fake_upstream):
    with make_client(turn_limited.base_url) as client, make_http(turn_limited.url) as http:
        started = time.monotonic()
        t, final = _run(client, http, fake_upstream, {"chunks": ["Thinking"], "keepalive_forever": True})
        assert time.monotonic() - started < 8
        _assert_failed(final, "within 2 s", "ASSISTANTD_UPSTREAM_TURN_TIMEOUT")
        message = messages(http, t.id)[-1]
        assert message["status"] == "incomplete" and text_of(message) == "Thinking"


def test_a_run_that_never_finishes_fails_at_its_deadline(run_limited, fake_upstream):
    with make_client(run_limited.base_url) as client, make_http(run_limited.url) as http:
        started = time.monotonic()
        _, final = _run(client, http, fake_upstream, {"keepalive_forever": True, "keepalive_interval": 0.2})
        assert time.monotonic() - started < 9
        _assert_failed(final, "within 3 s", "ASSISTANTD_RUN_TIMEOUT")


def test_waiting_for_tool_outputs_does_not_count_towards_the_run_deadline(run_limited, fake_upstream):
    tag = fake_upstream.script({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]},
                               {"chunks": ["Sunny", " in", " Rome."], "delay": 0.3})
    with make_client(run_limited.base_url) as client, make_http(run_limited.url) as http:
        a = assistant(client, tools=[WEATHER_TOOL])
        t = thread(client, tag)
        run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=POLL_MS)
        assert run.status == "requires_action"
        time.sleep(3.5)  # longer than the run may execute
        (call,) = run.required_action.submit_tool_outputs.tool_calls
        done = client.beta.threads.runs.submit_tool_outputs_and_poll(
            tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}], run_id=run.id, thread_id=t.id,
            poll_interval_ms=POLL_MS)
        assert done.status == "completed", done.last_error
        assert text_of(messages(http, t.id)[-1]) == "Sunny in Rome."


# --- last_error never repeats the request ----------------------------------------------------------

SECRET = "Confidential system prompt: the launch code is 0000-TANGO-7. " * 20


@pytest.mark.parametrize("status", [400, 500])
def test_last_error_never_repeats_the_request(client, http, fake_upstream, status):
    _, final = _run(client, http, fake_upstream, {"status": status, "echo_request_in_error": True},
                    instructions=SECRET, tools=[WEATHER_TOOL])
    _assert_failed(final, f"HTTP {status}")
    message = final["last_error"]["message"]
    assert "TANGO" not in message and "launch code" not in message
    assert "get_weather" not in message and "The weather in a city" not in message
    assert len(message) <= MAX_MESSAGE


def test_a_long_upstream_error_is_cut_short(client, http, fake_upstream):
    _, final = _run(client, http, fake_upstream, {"status": 503, "message": "Overloaded. " + "x" * 20000})
    _assert_failed(final, "HTTP 503", "Overloaded.")
    assert len(final["last_error"]["message"]) <= MAX_MESSAGE


# --- text that cannot be encoded --------------------------------------------------------------------

def test_lone_surrogates_from_the_model_are_repaired(client, http, fake_upstream):
    tag = fake_upstream.script_escaped({"chunks": ["bad-\ud800-text", " and \udfff"]})
    a = assistant(client)
    t = thread(client, tag)
    events = read_sse(http, "POST", f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id, "stream": True})
    names = [name for name, _ in events]
    assert names[-2:] == ["thread.run.completed", "done"], names
    deltas = "".join(d["delta"]["content"][0]["text"]["value"] for n, d in events if n == "thread.message.delta")
    assert deltas == "bad-\ufffd-text and \ufffd"

    answer = messages(http, t.id)[-1]
    assert text_of(answer) == "bad-\ufffd-text and \ufffd" and answer["status"] == "completed"
    run_id = answer["run_id"]
    assert http.get(f"/v1/threads/{t.id}/runs/{run_id}/steps").status_code == 200
    assert http.get(f"/v1/threads/{t.id}/runs/{run_id}").json()["status"] == "completed"


def test_lone_surrogates_in_a_tool_call_are_repaired(client, http, fake_upstream):
    tag = fake_upstream.script_escaped({"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Ro\udc00me"}'}]})
    a = assistant(client, tools=[WEATHER_TOOL])
    t = thread(client, tag)
    events = read_sse(http, "POST", f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id, "stream": True})
    assert [name for name, _ in events][-2:] == ["thread.run.requires_action", "done"]
    run = events[-2][1]
    (call,) = run["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Ro\ufffdme"}
    steps = http.get(f"/v1/threads/{t.id}/runs/{run['id']}/steps")
    assert steps.status_code == 200
    assert steps.json()["data"][0]["step_details"]["tool_calls"][0]["function"]["arguments"] == \
        call["function"]["arguments"]


# --- the stream reader alone (no server) ------------------------------------------------------------

def _read_with(pieces: list[bytes], **options) -> list[Any]:
    """The chunks the upstream client's reader yields for a 200 answer whose body arrives as
    ``pieces`` (the same reader reads every real answer in the tests above)."""
    from assistantd.upstream.client import ChunkReader

    reader = ChunkReader(options.get("max_line_bytes", 4 * 1024 * 1024))
    out: list[Any] = []
    for piece in pieces:
        out += reader.feed(piece)
        if reader.done:
            return out
    reader.check_end()
    return out


def test_reader_joins_lines_split_anywhere_and_bounds_them():
    from assistantd.upstream.client import UpstreamError

    stream = (_text_chunk("a\ud800b") + STOP + "data: [DONE]\n\n").encode()
    for size in (1, 7, 64, len(stream)):
        chunks = _read_with([stream[i:i + size] for i in range(0, len(stream), size)])
        assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["a\ufffdb", None]
    with pytest.raises(UpstreamError, match="longer than 1000 bytes"):
        _read_with([b"data: " + b"x" * 100] * 20, max_line_bytes=1000)
    with pytest.raises(UpstreamError, match="longer than 1000 bytes"):
        _read_with([b"data: " + b"x" * 2000 + b"\n\n"], max_line_bytes=1000)


def test_an_error_message_quoting_the_request_is_not_shown():
    from assistantd.upstream.client import _error_for

    request = {"messages": [{"role": "system", "content": "Never reveal the word swordfish, it is secret."}]}
    quoted = json.dumps({"error": {"message": "bad value: 'Never reveal the word swordfish, it is se..."}}).encode()
    assert "swordfish" not in _error_for(400, quoted, request).message
    structure = json.dumps({"detail": "1 validation error: input_value={'role': 'user', 'content': 'x'}"}).encode()
    assert "input_value" not in _error_for(422, structure, request).message
    plain = json.dumps({"object": "error", "message": "max context length is 4096 tokens"}).encode()
    assert _error_for(400, plain, request).message == "The model returned HTTP 400: max context length is 4096 tokens"
    assert _error_for(502, b"<html><h1>502 Bad Gateway</h1></html>", request).message == "The model returned HTTP 502."
    assert _error_for(429, b"slow down", request).code == "rate_limit_exceeded"
