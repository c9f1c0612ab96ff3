"""Several server processes on one PostgreSQL (issue 13, item 3): each queued run executed once,
streams on one process of runs executing on another (the LISTEN/NOTIFY event bus), cancel and
wake-ups across processes, and a stream that lost its notifications.

Process ``front`` takes requests and executes nothing (``ASSISTANTD_MAX_CONCURRENT_RUNS=0``): a
run it queues is claimed by ``b`` or ``c``.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import threading
import time
from typing import Any

import asyncpg
import pytest

from tests.conftest import make_client, make_http
from tests.support.fake import marker, read_sse
from tests.support.runs import WEATHER_TOOL, assistant, messages, text_of, thread, wait_for, wait_run
from tests.support.server import ServerProcess

ID = re.compile(r"^(run|msg|step|thread|asst|call)_[A-Za-z0-9]+$")


@pytest.fixture(scope="module")
def replicas(backend, databases, fake_upstream):
    """``{"front", "b", "c"}``: three processes on one fresh PostgreSQL database."""
    if backend != "postgresql":
        pytest.skip("replicas share a PostgreSQL database")
    data_dir, url = databases.new("replicas")
    env = {"ASSISTANTD_UPSTREAM_BASE_URL": fake_upstream.base_url, "ASSISTANTD_SANDBOX_WARM_POOL": "0",
           "ASSISTANTD_EMBEDDINGS": "none"}
    servers = {
        "front": ServerProcess(data_dir / "front", url, ASSISTANTD_MAX_CONCURRENT_RUNS="0", **env),
        "b": ServerProcess(data_dir / "b", url, ASSISTANTD_MAX_CONCURRENT_RUNS="4", **env),
        "c": ServerProcess(data_dir / "c", url, ASSISTANTD_MAX_CONCURRENT_RUNS="4", **env),
    }
    try:
        for server in servers.values():  # one after the other: the first one migrates
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def front(replicas):
    with make_http(replicas["front"].url) as http:
        yield http


def _pg_url(server: ServerProcess) -> str:
    return server.env["ASSISTANTD_DATABASE_URL"]


def _normalised(events: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The events with their ids numbered by first appearance and their times blanked: two runs
    of one script compare equal."""
    names: dict[str, str] = {}

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and ID.match(value):
            return names.setdefault(value, f"{value.split('_')[0]}#{len(names)}")
        if key.endswith("_at") and value is not None:
            return "<time>"
        return value

    return [(name, walk(data)) for name, data in events]


def _stream_thread_and_run(http, assistant_id: str, tag: str, **body: Any) -> list[tuple[str, Any]]:
    return read_sse(http, "POST", "/v1/threads/runs", timeout=120, json={
        "assistant_id": assistant_id, "stream": True,
        "thread": {"messages": [{"role": "user", "content": f"Talk. {marker(tag)}"}]}, **body})


# --- exactly once --------------------------------------------------------------------------------

def test_each_queued_run_is_executed_exactly_once(replicas, front, fake_upstream):
    client = make_client(replicas["front"].base_url)
    a = assistant(client)
    runs = []
    for i in range(30):
        tag = fake_upstream.script({"chunks": [f"run{i} ", "says ", "hello"], "delay": 0.02})
        runs.append((tag, front.post("/v1/threads/runs", json={
            "assistant_id": a.id,
            "thread": {"messages": [{"role": "user", "content": f"Hi {marker(tag)}"}]}}).json()))
    # A few more queued on the executing processes themselves, while the others wait.
    for name in ("b", "c"):
        with make_http(replicas[name].url) as http:
            for i in range(3):
                tag = fake_upstream.script({"chunks": [f"{name}{i} ", "says ", "hello"], "delay": 0.02})
                runs.append((tag, http.post("/v1/threads/runs", json={
                    "assistant_id": a.id,
                    "thread": {"messages": [{"role": "user", "content": f"Hi {marker(tag)}"}]}}).json()))
    for tag, run in runs:
        final = wait_run(front, run["thread_id"], run["id"], timeout=60)
        assert final["status"] == "completed", final
        assert len(fake_upstream.requests(tag)) == 1, f"run {run['id']} went upstream more than once"
        said = text_of(messages(front, run["thread_id"])[-1])
        assert said.endswith("says hello")
        assert len(messages(front, run["thread_id"])) == 2  # the question, one answer
    client.close()


# --- streams across processes --------------------------------------------------------------------

def test_a_stream_on_one_process_of_a_run_executing_on_another_is_complete_and_in_order(
        replicas, front, fake_upstream):
    # Distinct pieces (a duplicate or a gap changes the text), multi-byte characters, and an
    # answer so long that its message's events are larger than a notification (8000 bytes).
    chunks = [f"wörd{i}€ " for i in range(1500)]
    text = "".join(chunks)
    assert len(text.encode()) > 2 * 8000
    client = make_client(replicas["front"].base_url)
    a = assistant(client)

    tag = fake_upstream.script({"chunks": chunks}, {"chunks": chunks})  # one prompt, twice the same answer
    with make_http(replicas["b"].url) as b:  # streamed by the process executing it
        alone = _stream_thread_and_run(b, a.id, tag)
    across = _stream_thread_and_run(front, a.id, tag)

    assert [n for n, _ in across] == [n for n, _ in alone]
    assert across[-2][0] == "thread.run.completed" and across[-1][0] == "done"
    deltas = [d["delta"]["content"][0]["text"]["value"] for n, d in across if n == "thread.message.delta"]
    assert "".join(deltas) == text
    completed = [d for n, d in across if n == "thread.message.completed"]
    assert len(completed) == 1 and text_of(completed[0]) == text
    assert _normalised(across) == _normalised(alone)
    client.close()


def test_submit_tool_outputs_on_one_process_resumes_a_run_another_left_waiting(replicas, front, fake_upstream):
    tag = fake_upstream.script({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
                               {"chunks": ["It ", "is ", "sunny ", "in ", "Oslo."]})
    with make_http(replicas["b"].url) as b:
        client = make_client(replicas["b"].base_url)
        a = assistant(client, tools=[WEATHER_TOOL])
        t = thread(client, tag)
        run = b.post(f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id}).json()  # claimed by b
        waiting = wait_run(b, t.id, run["id"], until={"requires_action"})
        client.close()
    call = waiting["required_action"]["submit_tool_outputs"]["tool_calls"][0]

    events = read_sse(front, "POST", f"/v1/threads/{t.id}/runs/{run['id']}/submit_tool_outputs", timeout=60,
                      json={"tool_outputs": [{"tool_call_id": call["id"], "output": "sunny"}], "stream": True})
    names = [n for n, _ in events]
    assert names[:3] == ["thread.run.step.completed", "thread.run.queued", "thread.run.in_progress"]
    assert names[-4:] == ["thread.message.completed", "thread.run.step.completed", "thread.run.completed", "done"]
    assert names.count("thread.run.queued") == 1 and names.count("thread.run.in_progress") == 1
    deltas = [d["delta"]["content"][0]["text"]["value"] for n, d in events if n == "thread.message.delta"]
    assert "".join(deltas) == "It is sunny in Oslo."
    assert text_of(messages(front, t.id)[-1]) == "It is sunny in Oslo."
    assert len(fake_upstream.requests(tag)) == 2


def test_a_run_the_front_cannot_take_is_claimed_at_once_by_another_process(replicas, front, fake_upstream):
    """The claim loops are woken by a notification, not by their 1 s poll."""
    client = make_client(replicas["front"].base_url)
    a = assistant(client)
    took = []
    for i in range(8):
        tag = fake_upstream.script({"text": f"quick {i}"})
        started = time.monotonic()
        run = front.post("/v1/threads/runs", json={
            "assistant_id": a.id, "thread": {"messages": [{"role": "user", "content": f"Hi {marker(tag)}"}]}}).json()
        wait_for(lambda: fake_upstream.requests(tag), timeout=10, what="the run's upstream request")
        took.append(time.monotonic() - started)
        wait_run(front, run["thread_id"], run["id"])
    print(f"queued on the front → upstream request: {[round(t, 3) for t in took]} s")
    # Polling alone would take 0.5 s on average (up to 1 s) to notice each run.
    assert statistics.median(took) < 0.4, took
    client.close()


# --- cancel across processes ---------------------------------------------------------------------

def test_cancel_on_one_process_stops_the_upstream_read_on_another_within_a_second(replicas, front, fake_upstream):
    tag = fake_upstream.script({"chunks": [f"word{i} " for i in range(600)], "delay": 0.05})
    client = make_client(replicas["front"].base_url)
    a = assistant(client)
    t = thread(client, tag)
    run = front.post(f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id}).json()
    wait_run(front, t.id, run["id"], until={"in_progress"})
    wait_for(lambda: fake_upstream.requests(tag), what="the upstream request")
    time.sleep(0.5)  # well into the answer

    asked = time.time()
    r = front.post(f"/v1/threads/{t.id}/runs/{run['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] in ("cancelling", "cancelled")
    ends = wait_for(lambda: fake_upstream.ends(tag), timeout=10, what="the upstream stream's end")
    assert ends[0]["how"] == "closed"
    print(f"cancel on the front → upstream read closed on the executing process: {ends[0]['at'] - asked:.3f} s")
    assert ends[0]["at"] - asked < 1.0, f"the upstream read stopped {ends[0]['at'] - asked:.2f} s after the cancel"
    final = wait_run(front, t.id, run["id"], timeout=10)
    assert final["status"] == "cancelled"
    said = text_of(messages(front, t.id)[-1])
    assert said.startswith("word0 word1") and len(said.split()) < 600
    client.close()


# --- losing the notifications --------------------------------------------------------------------

def _terminate_listener(server: ServerProcess) -> int:
    async def terminate() -> int:
        connection = await asyncpg.connect(_pg_url(server))
        try:
            return await connection.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                f"assistantd-bus-listener-{server.proc.pid}")
        finally:
            await connection.close()

    return asyncio.run(terminate())


def test_a_stream_that_may_have_missed_events_ends_with_an_error_and_the_next_is_whole(
        replicas, front, fake_upstream):
    client = make_client(replicas["front"].base_url)
    a = assistant(client)
    tag = fake_upstream.script({"chunks": [f"w{i} " for i in range(60)], "delay": 0.05})
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(_stream_thread_and_run(front, a.id, tag)))
    reader.start()
    wait_for(lambda: fake_upstream.requests(tag), what="the upstream request")
    time.sleep(0.3)
    assert _terminate_listener(replicas["front"]) == 1
    reader.join(30)
    assert not reader.is_alive()
    names = [n for n, _ in got]
    assert "thread.message.delta" in names and names[-2:] == ["error", "done"]
    assert got[-2][1]["code"] == "server_error" and "missed events" in got[-2][1]["message"]
    # The run itself went on, on its own process.
    run_id = next(d["id"] for n, d in got if n == "thread.run.created")
    thread_id = next(d["id"] for n, d in got if n == "thread.created")
    assert wait_run(front, thread_id, run_id, timeout=30)["status"] == "completed"
    assert text_of(messages(front, thread_id)[-1]) == "".join(f"w{i} " for i in range(60))

    # The front listens again: a stream opened now is whole.
    chunks = [f"v{i} " for i in range(30)]
    again = wait_for(lambda: _whole(front, a.id, fake_upstream, chunks), timeout=30, what="a whole stream")
    assert again[-2][0] == "thread.run.completed"
    client.close()


def _whole(front, assistant_id: str, fake_upstream, chunks: list[str]):
    events = _stream_thread_and_run(front, assistant_id, fake_upstream.script({"chunks": chunks}))
    if events[-2][0] == "error":  # still reconnecting
        time.sleep(0.5)
        return None
    deltas = [d["delta"]["content"][0]["text"]["value"] for n, d in events if n == "thread.message.delta"]
    assert "".join(deltas) == "".join(chunks)
    return events


# --- a run resumed by another process --------------------------------------------------------------

def test_a_stream_of_a_run_another_process_resumes_ends_saying_so(backend, databases, fake_upstream):
    """Its executor died mid-answer: the events it had not sent are lost, and the resumed turn
    streams its answer again, so the stream (on a third process) ends with an error instead of
    showing a gap or the text twice. The run completes."""
    if backend != "postgresql":
        pytest.skip("replicas share a PostgreSQL database")
    data_dir, url = databases.new("takeover")
    env = {"ASSISTANTD_UPSTREAM_BASE_URL": fake_upstream.base_url, "ASSISTANTD_SANDBOX_WARM_POOL": "0",
           "ASSISTANTD_EMBEDDINGS": "none"}
    front = ServerProcess(data_dir / "front", url, ASSISTANTD_MAX_CONCURRENT_RUNS="0", **env)
    doomed, heir = ServerProcess(data_dir / "doomed", url, **env), ServerProcess(data_dir / "heir", url, **env)
    words = [f"t{i} " for i in range(40)]
    tag = fake_upstream.script({"chunks": words, "delay": 0.2}, {"chunks": words})
    try:
        front.start()
        doomed.start()
        with make_http(front.url) as http:
            client = make_client(front.base_url)
            a = assistant(client)
            got: list = []
            reader = threading.Thread(target=lambda: got.extend(_stream_thread_and_run(http, a.id, tag)))
            reader.start()
            wait_for(lambda: fake_upstream.requests(tag), what="the upstream request")
            time.sleep(1.0)
            doomed.kill()
            heir.start()  # finds the run of a process that is gone at once, and resumes it
            reader.join(60)
            assert not reader.is_alive()
            names = [n for n, _ in got]
            assert "thread.message.delta" in names and names[-2:] == ["error", "done"], names
            assert "resumed" in got[-2][1]["message"]
            run_id = next(d["id"] for n, d in got if n == "thread.run.created")
            thread_id = next(d["id"] for n, d in got if n == "thread.created")
            assert wait_run(http, thread_id, run_id, timeout=60)["status"] == "completed"
            assert text_of(messages(http, thread_id)[-1]) == "".join(words)
            client.close()
        assert len(fake_upstream.requests(tag)) == 2
    finally:
        for server in (front, doomed, heir):
            server.stop()


# --- assistantd serve --workers N ------------------------------------------------------------------

def test_serve_workers_runs_that_many_replicas_on_one_port(backend, databases, fake_upstream):
    """``--workers 2``: two processes behind one port, each a replica on the database (its own
    row in ``workers``); streamed runs through the port complete whichever process takes them."""
    if backend != "postgresql":
        pytest.skip("--workers needs PostgreSQL")
    data_dir, url = databases.new("workers")
    server = ServerProcess(data_dir, url, serve_args=("--workers", "2"),
                           ASSISTANTD_UPSTREAM_BASE_URL=fake_upstream.base_url,
                           ASSISTANTD_SANDBOX_WARM_POOL="0", ASSISTANTD_EMBEDDINGS="none")
    server.start(timeout=120)
    try:
        async def registered() -> int:
            conn = await asyncpg.connect(url)
            try:
                return await conn.fetchval("SELECT count(*) FROM workers")
            finally:
                await conn.close()

        wait_for(lambda: asyncio.run(registered()) == 2, timeout=30, what="both processes registered")
        client = make_client(server.base_url)
        a = assistant(client)
        with make_http(server.url) as http:
            for i in range(6):  # new connections: the kernel spreads them over the two processes
                t = thread(client, fake_upstream.script({"text": f"answer {i}"}))
                events = read_sse(http, "POST", f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id, "stream": True})
                assert [name for name, _ in events][-2:] == ["thread.run.completed", "done"]
                assert text_of(messages(http, t.id)[-1]) == f"answer {i}"
        client.close()
    finally:
        server.stop()


def test_serve_workers_above_one_is_refused_on_sqlite(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "assistantd", "serve", "--workers", "2"],
                          env={**ServerProcess(tmp_path).env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--workers above 1 needs PostgreSQL" in done.stderr
