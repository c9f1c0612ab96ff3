"""Runs survive their process (issue 13, item 4): a server is SIGKILLed in the middle of a run, and
the run is resumed from its last persisted boundary — by the same server when it starts again
(SQLite: one process per database), or by a second process on the same database (PostgreSQL, a
replica, once the dead one's lease lapses). A client reads the run to its end by polling."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from assistantd import ids
from assistantd.db import Database
from assistantd.db.models import Run, Thread
from assistantd.runs.events import LocalEventBus
from assistantd.runs.queue import RunQueue
from assistantd.runs.states import RunStatus
from assistantd.runs.store import RunStore
from tests.conftest import make_client, make_http
from tests.support.runs import assistant, messages, text_of, thread, wait_for, wait_run
from tests.support.sandbox import CODE_INTERPRETER, containers_of, docker_client, instance_of
from tests.support.server import ServerProcess

RESUMED = 90  # seconds a resumed run may take to end: a lapsed lease (10 s), a sweep (3 s), a loaded machine
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
def replica(backend, fake_upstream):
    """``replica(first, **env)``: on PostgreSQL a second server process on ``first``'s database,
    started now; on SQLite None (one process per database: ``first`` itself resumes, restarted)."""
    started: list[ServerProcess] = []

    def start(first: ServerProcess, **env: str) -> ServerProcess | None:
        if backend == "sqlite":
            return None
        # Replicas share the data folder (uploaded files' bytes), as docker/compose.yaml's do.
        other = ServerProcess(first.data_dir, first.env["ASSISTANTD_DATABASE_URL"],
                              ASSISTANTD_UPSTREAM_BASE_URL=fake_upstream.base_url,
                              ASSISTANTD_SANDBOX_WARM_POOL="0", **env)
        other.log_path = first.data_dir / "server-replica.log"
        started.append(other)
        return other.start()

    yield start
    for server in started:
        server.stop()


def survivor(server: ServerProcess, other: ServerProcess | None) -> ServerProcess:
    """The process that resumes ``server``'s runs once it is dead."""
    return other if other is not None else server.start()


def stream_until(http, thread_id: str, assistant_id: str, deltas: int) -> dict:
    """Create a streamed run and read its events until ``deltas`` text deltas came; then hang up."""
    seen: dict = {"run": None, "message": None, "text": [], "steps": []}
    with http.stream("POST", f"/v1/threads/{thread_id}/runs",
                     json={"assistant_id": assistant_id, "stream": True}) as response:
        assert response.status_code == 200
        name = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:") and name not in (None, "done"):
                data = json.loads(line[5:])
                if name == "thread.run.created":
                    seen["run"] = data["id"]
                elif name == "thread.message.created":
                    seen["message"] = data["id"]
                elif name == "thread.run.step.completed":
                    seen["steps"].append(data)
                elif name == "thread.message.delta":
                    seen["text"].append(data["delta"]["content"][0]["text"]["value"])
                    if len(seen["text"]) >= deltas:
                        return seen
    raise AssertionError(f"the stream ended before {deltas} text deltas: {seen}")


def steps_of(http, thread_id: str, run_id: str) -> list[dict]:
    r = http.get(f"/v1/threads/{thread_id}/runs/{run_id}/steps", params={"order": "asc"})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def assistant_messages(http, thread_id: str) -> list[dict]:
    return [m for m in messages(http, thread_id) if m["role"] == "assistant"]


# --- a model turn cut off mid-answer ---------------------------------------------------------------

def test_a_run_killed_mid_answer_is_resumed_and_answers_once(spawn, replica, fake_upstream):
    server = spawn("resume-text")
    other = replica(server)
    words = [f"w{i} " for i in range(12)]
    tag = fake_upstream.script({"chunks": words, "delay": 0.5}, {"chunks": words, "delay": 0.02})
    with make_client(server.base_url) as client, make_http(server.url) as http:
        a = assistant(client)
        t = thread(client, tag)
        seen = stream_until(http, t.id, a.id, deltas=3)
    server.kill()
    with make_http(survivor(server, other).url) as http:
        final = wait_run(http, t.id, seen["run"], timeout=RESUMED)
        assert final["status"] == "completed", final
        assert final["usage"]["completion_tokens"] > 0
        [message] = assistant_messages(http, t.id)
        # The message the turn had opened, written once with the whole answer.
        assert message["id"] == seen["message"] and message["status"] == "completed"
        assert text_of(message) == "".join(words)
        assert "".join(words).startswith("".join(seen["text"]))
        assert [(s["type"], s["status"]) for s in steps_of(http, t.id, seen["run"])] == [
            ("message_creation", "completed")]
    # The upstream saw the turn twice, the same both times: the partial answer is not in the prompt.
    first, again = fake_upstream.requests(tag)
    assert again["messages"] == first["messages"]


def test_a_run_handed_back_by_a_clean_stop_is_resumed(spawn, replica, fake_upstream):
    """SIGTERM hands the server's runs back (their leases lapse at once) instead of failing them."""
    server = spawn("resume-stop")
    other = replica(server)
    words = [f"s{i} " for i in range(12)]
    tag = fake_upstream.script({"chunks": words, "delay": 0.5}, {"chunks": words})
    with make_client(server.base_url) as client, make_http(server.url) as http:
        a = assistant(client)
        t = thread(client, tag)
        seen = stream_until(http, t.id, a.id, deltas=2)
    server.stop()
    with make_http(survivor(server, other).url) as http:
        final = wait_run(http, t.id, seen["run"], timeout=RESUMED)
        assert final["status"] == "completed", final
        [message] = assistant_messages(http, t.id)
        assert message["id"] == seen["message"] and text_of(message) == "".join(words)
    assert len(fake_upstream.requests(tag)) == 2


# --- a finished built-in call is not run again -------------------------------------------------------

def test_a_finished_file_search_is_kept_when_the_next_turn_is_cut_off(spawn, replica, fake_upstream):
    env = {"ASSISTANTD_EMBEDDINGS": "none"}  # lexical search: no model to load
    server = spawn("resume-search", **env)
    other = replica(server, **env)
    answer = ["Platypuses ", "lay ", "eggs ", "【0:0†notes.txt】", "."]
    tag = fake_upstream.script({"tool_calls": [{"name": "file_search", "arguments": {"query": "platypus eggs"}}]},
                               {"chunks": answer, "delay": 1.0}, {"chunks": answer})
    with make_client(server.base_url) as client, make_http(server.url) as http:
        store = client.vector_stores.create()
        added = client.vector_stores.files.upload_and_poll(
            vector_store_id=store.id, file=("notes.txt", b"The platypus is a mammal that lays eggs."),
            poll_interval_ms=100)
        assert added.status == "completed"
        a = assistant(client, tools=[{"type": "file_search"}],
                      tool_resources={"file_search": {"vector_store_ids": [store.id]}})
        t = thread(client, tag)
        seen = stream_until(http, t.id, a.id, deltas=1)
    [searched] = seen["steps"]  # the call had finished before the answer began
    server.kill()
    with make_http(survivor(server, other).url) as http:
        final = wait_run(http, t.id, seen["run"], timeout=RESUMED)
        assert final["status"] == "completed", final
        steps = steps_of(http, t.id, seen["run"])
        assert [(s["type"], s["status"]) for s in steps] == [("tool_calls", "completed"),
                                                             ("message_creation", "completed")]
        # The step and its call as they were when the call finished, before the kill.
        assert steps[0]["id"] == searched["id"]
        [call] = steps[0]["step_details"]["tool_calls"]
        [before] = searched["step_details"]["tool_calls"]
        assert call["id"] == before["id"] and call["type"] == "file_search"
        assert [r["file_id"] for r in call["file_search"]["results"]] == [added.id] == \
            [r["file_id"] for r in before["file_search"]["results"]]
        [message] = assistant_messages(http, t.id)
        assert message["id"] == seen["message"] and text_of(message) == "".join(answer)
        [citation] = message["content"][0]["text"]["annotations"]
        assert citation["type"] == "file_citation" and citation["file_citation"]["file_id"] == added.id
    # The call's turn was not issued again, the answer's turn was — with the search's result once.
    call, answered, again = fake_upstream.requests(tag)
    assert again["messages"] == answered["messages"]
    assert [m["role"] for m in again["messages"]].count("tool") == 1


# --- code execution (the sandbox) ------------------------------------------------------------------

@pytest.fixture
def docker():
    return docker_client()


@pytest.fixture
def leftovers(docker):
    """``leftovers(server, other)``: at the end of the test, remove the sandboxes ``server`` left
    behind when a replica (``other``) resumes its runs — a killed server that does not start
    again never reaps them itself."""
    killed = []
    yield lambda server, other: killed.append(server) if other is not None else None
    for server in killed:
        for container in containers_of(docker, instance_of(server)):
            container.remove(force=True)


def _start_code_run(http, client, fake_upstream, code: str, *more_turns: dict) -> tuple[str, str, str]:
    tag = fake_upstream.script({"tool_calls": [{"name": "code_interpreter", "arguments": {"code": code}}]},
                               *more_turns)
    a = assistant(client, tools=[CODE_INTERPRETER])
    t = thread(client, tag)
    r = http.post(f"/v1/threads/{t.id}/runs", json={"assistant_id": a.id})
    assert r.status_code == 200, r.text
    return tag, t.id, r.json()["id"]


def _code_running(http, docker, server, thread_id: str, run_id: str) -> None:
    """Wait until the run's code call is written and its sandbox is up, then a little more."""
    wait_for(lambda: any(s["step_details"].get("tool_calls") for s in steps_of(http, thread_id, run_id)),
             timeout=60, what="the code call written")
    wait_for(lambda: containers_of(docker, instance_of(server)), timeout=60, what="the sandbox")
    time.sleep(2)


def test_a_finished_code_call_is_not_run_again(spawn, replica, fake_upstream, docker, leftovers):
    server = spawn("resume-code-done")
    other = replica(server)
    leftovers(server, other)
    code = f"open('/mnt/data/out.png', 'wb').write({PNG!r})\nprint('ran')"
    answer = ["Here ", "it ", "is: ", "sandbox:/mnt/data/out.png", " and ", "that ", "is ", "all", "."]
    with make_client(server.base_url) as client, make_http(server.url) as http:
        tag, thread_id, run_id = _start_code_run(http, client, fake_upstream, code,
                                                 {"chunks": answer, "delay": 1.0}, {"chunks": answer})
        wait_for(lambda: assistant_messages(http, thread_id), timeout=60, what="the answer's message")
    server.kill()
    with make_http(survivor(server, other).url) as http:
        final = wait_run(http, thread_id, run_id, timeout=RESUMED)
        assert final["status"] == "completed", final
        # Each execution makes a file of what the code wrote: there is one.
        made = [f for f in http.get("/v1/files").json()["data"] if f["purpose"] == "assistants_output"]
        assert [f["filename"] for f in made] == ["out.png"]
        file_id = made[0]["id"]
        steps = steps_of(http, thread_id, run_id)
        assert [(s["type"], s["status"]) for s in steps] == [("tool_calls", "completed"),
                                                             ("message_creation", "completed")]
        [message] = assistant_messages(http, thread_id)
        image, text = message["content"]
        assert image["type"] == "image_file" and image["image_file"]["file_id"] == file_id
        assert text["text"]["value"] == "".join(answer)
        [link] = text["text"]["annotations"]
        assert link["type"] == "file_path" and link["file_path"]["file_id"] == file_id
    assert len(fake_upstream.requests(tag)) == 3  # the call's turn once, the answer's twice


def test_a_run_killed_mid_code_execution_ends_failed_saying_its_effects_are_unknown(
        spawn, replica, fake_upstream, docker, leftovers):
    server = spawn("resume-code-cut")
    other = replica(server)
    leftovers(server, other)
    with make_client(server.base_url) as client, make_http(server.url) as http:
        tag, thread_id, run_id = _start_code_run(http, client, fake_upstream,
                                                 "import time\ntime.sleep(40)\nprint('late')", {"text": "never"})
        _code_running(http, docker, server, thread_id, run_id)
        assert http.get(f"/v1/threads/{thread_id}/runs/{run_id}").json()["status"] == "in_progress"
    server.kill()
    with make_http(survivor(server, other).url) as http:
        final = wait_run(http, thread_id, run_id, timeout=RESUMED)
        assert final["status"] == "failed", final
        assert final["last_error"]["code"] == "server_error"
        assert "effects are unknown" in final["last_error"]["message"]
        [step] = steps_of(http, thread_id, run_id)
        assert step["status"] == "failed" and step["step_details"]["tool_calls"][0]["type"] == "code_interpreter"
        assert assistant_messages(http, thread_id) == []
    assert len(fake_upstream.requests(tag)) == 1


def test_a_run_killed_while_cancelling_ends_cancelled(spawn, replica, fake_upstream, docker, leftovers):
    server = spawn("resume-cancelling")
    other = replica(server)
    leftovers(server, other)
    with make_client(server.base_url) as client, make_http(server.url) as http:
        tag, thread_id, run_id = _start_code_run(http, client, fake_upstream,
                                                 "import time\ntime.sleep(40)", {"text": "never"})
        _code_running(http, docker, server, thread_id, run_id)
        # The executor finishes the code call before it acts on the cancel: it stays 'cancelling'.
        cancelled = http.post(f"/v1/threads/{thread_id}/runs/{run_id}/cancel")
        assert cancelled.json()["status"] == "cancelling"
    server.kill()
    with make_http(survivor(server, other).url) as http:
        final = wait_run(http, thread_id, run_id, timeout=RESUMED)
        assert final["status"] == "cancelled", final
        assert final["cancelled_at"] is not None and final["last_error"] is None
        assert [s["status"] for s in steps_of(http, thread_id, run_id)] == ["cancelled"]
    assert len(fake_upstream.requests(tag)) == 1


# --- the takeover itself, on the database -------------------------------------------------------------

def test_an_orphan_is_taken_over_by_exactly_one_process(migrated_url):
    async def scenario() -> None:
        db = Database(migrated_url)
        try:
            store = RunStore(db, LocalEventBus())
            dead, first, second = RunQueue(db), RunQueue(db), RunQueue(db)
            now = ids.now()
            thread_row = Thread(id=ids.new_id("thread_"), tenant="t", created_at=now, tool_resources={}, metadata_={})
            run = Run(id=ids.new_id("run_"), tenant="t", created_at=now, thread_id=thread_row.id,
                      assistant_id="asst_x", status=RunStatus.QUEUED.value, required_action=None, last_error=None,
                      expires_at=now + 600, started_at=None, cancelled_at=None, failed_at=None, completed_at=None,
                      incomplete_details=None, model="m", instructions="", tools=[], tool_resources={},
                      metadata_={}, usage=None, temperature=None, top_p=None, max_prompt_tokens=None,
                      max_completion_tokens=None, truncation_strategy={"type": "auto", "last_messages": None},
                      tool_choice=None, parallel_tool_calls=True, response_format=None, reasoning_effort=None,
                      history_seq=0, worker=None, lease_until=None, include_search_content=False)
            async with store.writing() as writes:
                writes.session.add(thread_row)
                await writes.session.flush()
                await writes.insert(run)
                assert await dead.claim_run(writes, run)
            async with store.writing() as writes:
                await dead.hand_back(writes)  # as if its process had stopped renewing
            # Both processes find the orphan before either takes it.
            found = []
            for queue in (first, second):
                async with store.writing() as writes:
                    found.append(await queue.orphans(writes, startup=False))
            assert [[r.id for r in runs] for runs in found] == [[run.id], [run.id]]

            async def take(queue: RunQueue, orphan: Run) -> bool:
                async with store.writing() as writes:
                    return await queue.take_over(writes, orphan, expires_at=ids.now() + 600)

            taken = await asyncio.gather(take(first, found[0][0]), take(second, found[1][0]))
            assert sorted(taken) == [False, True]
            winner = first if taken[0] else second
            async with store.writing() as writes:
                row = await writes.fresh(run)
            assert (row.status, row.worker) == (RunStatus.IN_PROGRESS, winner.worker_id)
            assert row.lease_until > time.time()
            # The process that lost the lease learns that another took the run over.
            assert await dead.renew([run.id]) == ([], [run.id])
            assert await winner.renew([run.id]) == ([], [])
        finally:
            await db.dispose()

    asyncio.run(scenario())
