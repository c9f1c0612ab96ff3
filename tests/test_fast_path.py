"""Run creation's fast path (``runs/fast.py``): a run created with a good request is answered
without FastAPI's route; every refused request is handed to the route, rolled back first, and
answered exactly as the route answers it, with nothing written and no model request left behind.

The server logs at DEBUG which of the two answered ("<path>: answered here", "<path>: to the route
(<why>)"): that is how these tests tell."""

from __future__ import annotations

import pytest

from tests.support.fake import marker
from tests.support.runs import assistant, error_of, thread, wait_run


@pytest.fixture(scope="module")
def server(spawn):
    """This module's server (conftest's ``client`` and ``http`` talk to it), logging at DEBUG."""
    return spawn("fast-path", ASSISTANTD_LOG_LEVEL="debug")


def answers(server, thread_id: str) -> list[str]:
    """Who answered each run creation on ``thread_id``, as logged: ``answered here`` or
    ``to the route (<why>)``."""
    prefix = f"/v1/threads/{thread_id}/runs: "
    text = server.log_path.read_text(errors="replace")
    return [line.split(prefix, 1)[1] for line in text.splitlines() if prefix in line]


def runs_of(http, thread_id: str) -> list[dict]:
    return http.get(f"/v1/threads/{thread_id}/runs").json()["data"]


def test_a_good_request_is_answered_by_the_fast_path(server, client, http, fake_upstream):
    tag = fake_upstream.script({"chunks": ["Fast", "."]}, {"chunks": ["Again", "."]})
    a = assistant(client)
    t = thread(client, tag, "Hello")

    run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=a.id, poll_interval_ms=50)
    assert run.status == "completed"
    with client.beta.threads.runs.stream(thread_id=t.id, assistant_id=a.id) as stream:
        events = [event.event for event in stream]
    assert events[:2] == ["thread.run.created", "thread.run.queued"] and events[-1] == "thread.run.completed"
    assert [r["status"] for r in runs_of(http, t.id)] == ["completed", "completed"]
    assert answers(server, t.id) == ["answered here", "answered here"]


@pytest.mark.parametrize("case", ["no such thread", "bad body", "bad include", "no such assistant",
                                  "bad tool_choice", "not json", "a run is active"])
def test_a_refused_request_is_answered_by_the_route_and_writes_nothing(server, client, http, fake_upstream,
                                                                        case):
    tag = fake_upstream.script({"chunks": ["Slow", "."], "first_delay": 1.0})
    a = assistant(client)
    t = thread(client, tag, "Hello")
    thread_id, params, body = t.id, {}, {"assistant_id": a.id}
    expected = 400
    if case == "no such thread":
        thread_id, expected = "thread_missing", 404
    elif case == "bad body":
        body["temperature"] = "hot"
    elif case == "bad include":
        params["include[]"] = "everything"
    elif case == "no such assistant":
        body["assistant_id"], expected = "asst_missing", 404
    elif case == "bad tool_choice":
        body["tool_choice"] = {"type": "function", "function": {"name": "absent"}}
    active = None
    if case == "a run is active":
        active = http.post(f"/v1/threads/{thread_id}/runs", json=body).json()["id"]
    if case == "not json":
        response = http.post(f"/v1/threads/{thread_id}/runs", content=b"assistant_id=" + a.id.encode(),
                             headers={"content-type": "application/json"})
    else:
        response = http.post(f"/v1/threads/{thread_id}/runs", params=params, json=body)

    assert response.status_code == expected, response.text
    error = error_of(response)
    assert error["message"] and error["type"] == "invalid_request_error"
    if case == "bad body":
        assert error["param"] == "temperature"
    if case == "bad include":
        assert error["param"] == "include[0]" and error["code"] == "invalid_value"
    assert answers(server, thread_id)[-1].startswith("to the route (")
    if thread_id == t.id:  # nothing written by the refused request, and no model request of its own
        assert [r["id"] for r in runs_of(http, t.id)] == ([active] if active else [])
        if active:
            wait_run(http, t.id, active)
        assert len(fake_upstream.requests(tag)) == (1 if active else 0)


def test_a_large_body_goes_to_the_route(server, client, http, fake_upstream):
    tag = fake_upstream.script({"chunks": ["Read", "."]})
    a = assistant(client)
    t = thread(client, tag, "Hello")
    extra = "Take care. " * 7000  # 77 kB: past what the fast path parses itself
    created = http.post(f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id, "additional_instructions": extra})

    assert created.status_code == 200, created.text
    assert wait_run(http, t.id, created.json()["id"])["status"] == "completed"
    assert answers(server, t.id) == ["to the route (an empty, large or not JSON body)"]
    assert fake_upstream.requests(tag)[0]["messages"][0]["content"].endswith(extra)
    assert marker(tag) in fake_upstream.requests(tag)[0]["messages"][1]["content"]
