"""Replicas (issue 13, item 3): several server processes on one PostgreSQL, one data folder and one
Docker engine share the background work — each file ingested once, each run and file expired once,
each sandbox reaped once, a dead replica's sandboxes reaped and a live one's never — and a
thread's code-interpreter state follows the thread from one replica to another.

Each test starts its own replicas (real ``assistantd serve`` processes, each with its own log)
on one fresh database and data folder; "once" is counted in what would show a double: the texts
the upstream embedded, the rows written, and the servers' own log lines.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from assistantd.sandbox.pool import WORKER_LABEL
from tests.conftest import make_client, make_http
from tests.support.fake import marker
from tests.support.runs import POLL_MS, WEATHER_TOOL, assistant, wait_for, wait_run
from tests.support.sandbox import CODE_INTERPRETER, completed, containers_of, docker_client, instance_of
from tests.support.server import ServerProcess

HOUR = 3600


@pytest.fixture
def replicas(databases, fake_upstream):
    """``replicas(n, name, **env)`` → ``n`` started servers sharing one fresh PostgreSQL database
    and one data folder, started all at once (their migrations take turns)."""
    if databases.backend == "sqlite":
        pytest.skip("replicas share a PostgreSQL database (ASSISTANTD_TEST_POSTGRES_URL)")
    started: list[ServerProcess] = []

    def make(n: int, name: str, **env: str) -> list[ServerProcess]:
        data_dir, url = databases.new(name)
        env = {"ASSISTANTD_UPSTREAM_BASE_URL": fake_upstream.base_url, "ASSISTANTD_SANDBOX_WARM_POOL": "0",
               "ASSISTANTD_EMBEDDINGS": "none", **env}
        servers = [ServerProcess(data_dir, url, **env) for _ in range(n)]
        for i, server in enumerate(servers):
            server.log_path = data_dir / f"server-{i}.log"
        started.extend(servers)
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda s: s.start(timeout=120), servers))
        return servers

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def docker():
    return docker_client()


def full_log(server: ServerProcess) -> str:
    return server.log_path.read_text(errors="replace")


def counted(servers: list[ServerProcess], pattern: str) -> tuple[Counter, Counter]:
    """How often each match of ``pattern``'s group appears over the servers' logs, and how many
    matches each server's log has (by index)."""
    total, per_server = Counter(), Counter()
    for i, server in enumerate(servers):
        found = re.findall(pattern, full_log(server))
        total.update(found)
        per_server[i] += len(found)
    return total, per_server


def no_failed_jobs(servers: list[ServerProcess]) -> None:
    for server in servers:
        text = full_log(server)
        for failure in ("background job", "run maintenance failed", "Traceback"):
            assert failure not in text, text[-3000:]


async def pg_async(url: str, sql: str, *args):
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def pg(url: str, sql: str, *args):
    return asyncio.run(pg_async(url, sql, *args))


# --- background work ---------------------------------------------------------------------------

@pytest.mark.vector_search  # also with pgvector: the three enable it at once, and each must have it
def test_each_file_is_ingested_once_by_three_replicas(replicas, fake_upstream, databases):
    servers = replicas(3, "shared-ingest", ASSISTANTD_EMBEDDINGS="upstream:fake-embedding")
    if databases.backend == "pgvector":
        for server in servers:
            assert "vector search runs in PostgreSQL" in full_log(server), full_log(server)[-3000:]
    clients = [make_client(s.base_url) for s in servers]
    store = clients[0].vector_stores.create()
    words, file_ids = {}, []
    for i in range(30):
        word = f"zq{secrets.token_hex(5)}"  # in this file's text only
        upload = clients[i % 3].files.create(file=(f"f{i}.txt", f"{word} the quick brown fox. ".encode() * 20),
                                             purpose="assistants")
        words[upload.id] = word
        file_ids.append(upload.id)
    batch = clients[1].vector_stores.file_batches.create_and_poll(store.id, file_ids=file_ids, poll_interval_ms=100)
    assert batch.file_counts.completed == 30, batch.file_counts

    # Each file is one chunk: embedded once, one chunk row, one "ingested" line over all logs.
    embedded = fake_upstream.embedded()
    assert {f: sum(words[f] in text for text in embedded) for f in file_ids} == dict.fromkeys(file_ids, 1)
    rows = pg(servers[0].env["ASSISTANTD_DATABASE_URL"],
              "SELECT file_id, count(*) AS n FROM chunks WHERE vector_store_id = $1 GROUP BY file_id", store.id)
    assert {r["file_id"]: r["n"] for r in rows} == dict.fromkeys(file_ids, 1)
    lines, per_server = counted(servers, r"file (file-\S+) ingested into")
    assert lines == Counter(file_ids)
    # The three shared the queue (the files queued on one woke all three: the bus's ingest signal).
    assert sum(1 for n in per_server.values() if n) >= 2, per_server
    assert clients[2].vector_stores.search(store.id, query=words[file_ids[7]]).data[0].file_id == file_ids[7]
    no_failed_jobs(servers)


@pytest.mark.vector_search
def test_chunks_of_the_earlier_local_model_are_embedded_again_once_by_two_replicas(replicas, databases):
    """Two replicas starting together on chunks the earlier local model embedded: each chunk is
    embedded again by one of them (``SKIP LOCKED``), to the vector the 8-bit model gives it."""
    import random

    import numpy as np

    from assistantd.vector_stores.embeddings import LEGACY_LOCAL_MODEL_IDS, LOCAL_MODEL_ID

    servers = replicas(2, "shared-reembed", ASSISTANTD_EMBEDDINGS="local")
    url = servers[0].env["ASSISTANTD_DATABASE_URL"]
    client = make_client(servers[0].base_url)
    rng = random.Random(7)
    vocabulary = [f"w{i}" for i in range(3000)]
    store = client.vector_stores.create(chunking_strategy={
        "type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}})
    for i in range(24):
        text = " ".join(rng.choice(vocabulary) for _ in range(2000))
        client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=(f"f{i}.txt", text.encode()),
                                                   poll_interval_ms=100)
    before = {r["seq"]: r["embedding"] for r in pg(url, "SELECT seq, embedding FROM chunks WHERE embedding_model = $1",
                                                    LOCAL_MODEL_ID)}
    assert len(before) > 200
    for server in servers:
        server.stop()
    pg(url, "UPDATE chunks SET embedding_model = $1", LEGACY_LOCAL_MODEL_IDS[0])
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: s.start(timeout=120), servers))
    wait_for(lambda: not pg(url, "SELECT 1 FROM chunks WHERE embedding_model <> $1 LIMIT 1", LOCAL_MODEL_ID),
             timeout=120)
    after = {r["seq"]: r["embedding"] for r in pg(url, "SELECT seq, embedding FROM chunks")}
    assert after.keys() == before.keys()
    for seq, vector in before.items():
        np.testing.assert_allclose(np.frombuffer(after[seq], "<f4"), np.frombuffer(vector, "<f4"), atol=1e-5)
    # Each chunk once over both logs (a log line is written once a process has nothing left).
    wait_for(lambda: sum(int(n) for s in servers for n in re.findall(r"embedded (\d+) chunks again", full_log(s)))
             >= len(before), timeout=30)
    done = [sum(int(n) for n in re.findall(r"embedded (\d+) chunks again", full_log(s))) for s in servers]
    assert sum(done) == len(before), done
    no_failed_jobs(servers)


def test_each_run_expires_once_with_two_replicas(replicas, fake_upstream):
    servers = replicas(2, "shared-expiry", ASSISTANTD_RUN_EXPIRY_SECONDS="3")
    runs = []
    for i in range(12):
        client = make_client(servers[i % 2].base_url)
        tag = fake_upstream.script({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]})
        bot = assistant(client, tools=[WEATHER_TOOL])
        t = client.beta.threads.create(messages=[{"role": "user", "content": f"Weather? {marker(tag)}"}])
        run = client.beta.threads.runs.create_and_poll(thread_id=t.id, assistant_id=bot.id, poll_interval_ms=POLL_MS)
        assert run.status == "requires_action"
        runs.append(run)
    with make_http(servers[1].url) as http:
        for run in runs:
            final = wait_run(http, run.thread_id, run.id, timeout=30)
            assert final["status"] == "expired"
            (step,) = http.get(f"/v1/threads/{run.thread_id}/runs/{run.id}/steps").json()["data"]
            assert step["status"] == "expired"
    lines, _ = counted(servers, r"run (run_\w+) expired")
    assert lines == Counter(r.id for r in runs)
    no_failed_jobs(servers)


def test_each_expired_file_is_swept_once_with_two_replicas(replicas):
    servers = replicas(2, "shared-sweep", ASSISTANTD_FILE_SWEEP_SECONDS="0.3")
    url, files_dir = servers[0].env["ASSISTANTD_DATABASE_URL"], servers[0].data_dir / "files"
    uploads = []
    for i in range(30):
        with make_client(servers[i % 2].base_url) as client:
            uploads.append(client.files.create(file=(f"s{i}.bin", secrets.token_bytes(64)), purpose="assistants",
                                               expires_after={"anchor": "created_at", "seconds": HOUR}).id)
    doomed, kept = uploads[:20], uploads[20:]
    pg(url, "UPDATE files SET expires_at = $1 WHERE id = ANY($2::text[])", int(time.time()) - 1, doomed)
    wait_for(lambda: not any((files_dir / f).exists() for f in doomed), timeout=30, what="the sweep")
    lines, _ = counted(servers, r"expired file (file-\S+) deleted")
    assert lines == Counter(doomed)
    assert all((files_dir / f).exists() for f in kept)
    with make_client(servers[1].base_url) as client:
        assert sorted(f.id for f in client.files.list()) == sorted(kept)
    no_failed_jobs(servers)


async def _race(make_job) -> list:
    """Run ``make_job(i)`` of two "processes" (each with its own engine) at the same instant."""
    return list(await asyncio.gather(*(make_job(i) for i in range(2))))


def test_two_expiry_rounds_at_the_same_instant_expire_each_run_once(replicas, fake_upstream):
    """The maintenance loops of two processes rarely tick together; here they do, on purpose."""
    from assistantd.db import Database
    from assistantd.runs.events import LocalEventBus
    from assistantd.runs.queue import RunQueue
    from assistantd.runs.states import RunStatus
    from assistantd.runs.store import RunStore
    from assistantd.settings import Settings

    (server,) = replicas(1, "shared-expiry-race")
    tag = fake_upstream.script(*[{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]}] * 30)
    with make_client(server.base_url) as client:
        bot = assistant(client, tools=[WEATHER_TOOL])
        runs = [client.beta.threads.runs.create_and_poll(
            thread_id=client.beta.threads.create(messages=[{"role": "user", "content": f"Hi {marker(tag)}"}]).id,
            assistant_id=bot.id, poll_interval_ms=POLL_MS) for _ in range(30)]
    assert {r.status for r in runs} == {"requires_action"}
    server.stop()
    url = server.env["ASSISTANTD_DATABASE_URL"]
    pg(url, "UPDATE runs SET expires_at = $1", int(time.time()) - 1)
    async_url = Settings(_env_file=None, database_url=url).sqlalchemy_url

    async def race() -> list[list[str]]:
        dbs = [Database(async_url) for _ in range(2)]

        async def expire(i: int) -> list[str]:  # what RunWorker._expire does
            ended = []
            async with RunStore(dbs[i], LocalEventBus()).writing() as writes:
                for run in await RunQueue(dbs[i]).expired(writes):
                    if await writes.end(run, RunStatus.EXPIRED, expect=(run.status,)):
                        ended.append(run.id)
            return ended

        try:
            return await _race(expire)
        finally:
            for db in dbs:
                await db.dispose()

    first, second = asyncio.run(race())
    assert Counter(first + second) == Counter(r.id for r in runs)
    rows = pg(url, "SELECT status, count(*) AS n FROM run_steps GROUP BY status")
    assert {r["status"]: r["n"] for r in rows} == {"expired": 30}


def test_two_sweeps_at_the_same_instant_delete_each_file_once(replicas, tmp_path):
    from types import SimpleNamespace

    from assistantd.db import Database
    from assistantd.files.router import sweep_expired
    from assistantd.files.storage import FileStore
    from assistantd.settings import Settings

    (server,) = replicas(1, "shared-sweep-race")
    with make_client(server.base_url) as client:
        uploads = [client.files.create(file=(f"r{i}.bin", b"x" * 10), purpose="assistants",
                                       expires_after={"anchor": "created_at", "seconds": HOUR}).id for i in range(40)]
    server.stop()
    url, files_dir = server.env["ASSISTANTD_DATABASE_URL"], server.data_dir / "files"
    async_url = Settings(_env_file=None, database_url=url).sqlalchemy_url

    async def race() -> list[int]:
        states = [SimpleNamespace(db=Database(async_url), files=FileStore(files_dir)) for _ in range(2)]
        swept = []
        try:
            for batch in range(4):  # four rounds of ten files, each swept by two at once
                await pg_async(url, "UPDATE files SET expires_at = $1 WHERE id = ANY($2::text[])",
                               int(time.time()) - 1, uploads[batch * 10:(batch + 1) * 10])
                swept += await _race(lambda i: sweep_expired(states[i]))
        finally:
            for state in states:
                await state.db.dispose()
        return swept

    swept = asyncio.run(race())
    assert sum(swept) == 40, swept  # every file once: one of each pair swept its ten, the other none
    assert not any((files_dir / f).exists() for f in uploads)
    assert pg(url, "SELECT count(*) AS n FROM files")[0]["n"] == 0


# --- sandboxes -----------------------------------------------------------------------------------

def _pids(docker, instance: str) -> Counter:
    """Containers of the deployment per starting process (pid)."""
    return Counter(int(c.labels[WORKER_LABEL].split(":")[1]) for c in containers_of(docker, instance))


def test_a_threads_code_state_follows_it_across_replicas(replicas, fake_upstream, docker):
    a, b = replicas(2, "shared-kernel")
    instance = instance_of(a)
    ca, cb = make_client(a.base_url, timeout=60), make_client(b.base_url, timeout=60)
    bot = assistant(ca, tools=[CODE_INTERPRETER])
    thread_id = ca.beta.threads.create().id
    # A run executes on the process it was created on (claimed in the creating request).
    assert completed(ca, fake_upstream, bot, thread_id, "x = 41\nprint('set')")["logs"] == "set"
    assert completed(cb, fake_upstream, bot, thread_id, "print(x + 1)")["logs"] == "42"
    assert len(containers_of(docker, instance)) == 1  # one kernel for the thread, used by both

    # A stops: the thread's sandbox is the deployment's, not A's; B (the only one left) uses it.
    a.stop()
    assert len(containers_of(docker, instance)) == 1
    assert completed(cb, fake_upstream, bot, thread_id, "x += 2\nprint(x)")["logs"] == "43"
    # A comes back while B is alive: its start-up removes nothing, and it finds the kernel too.
    a.start()
    with make_client(a.base_url, timeout=60) as ca:
        assert completed(ca, fake_upstream, bot, thread_id, "print(x)")["logs"] == "43"
    assert len(containers_of(docker, instance)) == 1
    b.stop()
    assert len(containers_of(docker, instance)) == 1
    a.stop()  # the last one out removes every sandbox
    assert containers_of(docker, instance) == []


def test_a_dead_replicas_sandboxes_are_reaped_once_and_a_live_ones_never(replicas, docker):
    a, b = replicas(2, "shared-reap", ASSISTANTD_SANDBOX_WARM_POOL="1", ASSISTANTD_SANDBOX_IDLE_SECONDS="6")
    instance = instance_of(a)
    wait_for(lambda: _pids(docker, instance) == Counter({a.proc.pid: 1, b.proc.pid: 1}), timeout=90,
             what="one warm sandbox per replica")
    (b_sandbox,) = [c.id for c in containers_of(docker, instance) if f":{b.proc.pid}:" in c.labels[WORKER_LABEL]]
    (a_sandbox,) = [c.labels["assistantd.sandbox_id"] for c in containers_of(docker, instance)
                    if f":{a.proc.pid}:" in c.labels[WORKER_LABEL]]

    a.kill()  # nobody cleans up after it but B, which reaps every 3 s (idle 6 s / 2)
    wait_for(lambda: a.proc.pid not in _pids(docker, instance), timeout=30, what="B reaping A's warm sandbox")
    assert [c.id for c in containers_of(docker, instance)] == [b_sandbox]
    lines, _ = counted([a, b], rf"sandbox ({a_sandbox}) removed")
    assert lines == Counter({a_sandbox: 1})

    # A again, while B lives: its start-up reaping leaves B's sandbox alone, and it warms its own.
    a.start()
    wait_for(lambda: _pids(docker, instance) == Counter({a.proc.pid: 1, b.proc.pid: 1}), timeout=90,
             what="A's new warm sandbox")
    assert b_sandbox in [c.id for c in containers_of(docker, instance)]
    a.stop()  # not the last: only its own go
    assert [c.id for c in containers_of(docker, instance)] == [b_sandbox]
    b.stop()
    assert containers_of(docker, instance) == []


def test_the_tenant_bound_counts_the_sandboxes_of_every_replica(replicas, fake_upstream, docker):
    a, b = replicas(2, "shared-bounds", ASSISTANTD_SANDBOX_MAX_PER_TENANT="1")
    instance = instance_of(a)
    ca, cb = make_client(a.base_url, timeout=60), make_client(b.base_url, timeout=60)
    bot = assistant(ca, tools=[CODE_INTERPRETER])
    first, second = ca.beta.threads.create().id, ca.beta.threads.create().id
    completed(ca, fake_upstream, bot, first, "x = 'first'")
    # The tenant's second thread, on B, takes the place of its first one's sandbox, made on A.
    completed(cb, fake_upstream, bot, second, "x = 'second'")
    assert len(containers_of(docker, instance)) == 1
    assert completed(ca, fake_upstream, bot, first, "print('x' in globals())")["logs"] == "False"
    assert len(containers_of(docker, instance)) == 1


def test_a_process_that_lost_the_lease_lets_the_kernel_go_unharmed(docker):
    """What a process does when its lease on a thread's sandbox was taken over (it was too slow
    to renew): its call ends at once — its attached socket would otherwise stall the kernel's
    output for the new holder (Docker hands it to every attached client in turn) — and the
    kernel, now another process's, is neither restarted nor touched."""
    import threading

    from assistantd.sandbox.container import Abandoned, Sandbox, SandboxLimits

    limits = SandboxLimits(memory="256m", cpus=1, pids=64, tmp_size="16m", data_size="16m", exec_timeout=30)
    name = f"assistantd-test-abandon-{secrets.token_hex(4)}"
    first = Sandbox(docker, "assistantd-sandbox:latest", limits, {}, name).start()
    try:
        first.execute_blocking("kept = 7")
        outcome = {}

        def call() -> None:
            try:
                outcome["answer"] = first.execute_blocking("import time\ntime.sleep(3)\nprint('slept')")
            except Abandoned as exc:
                outcome["abandoned"] = exc

        caller = threading.Thread(target=call)
        started = time.monotonic()
        caller.start()
        time.sleep(0.5)
        first.abandon()
        caller.join(10)
        assert "abandoned" in outcome and time.monotonic() - started < 2.5, outcome
        # The new holder attaches: the kernel finished the cell and kept its state.
        second = Sandbox.existing(docker, name, limits)
        assert second.execute_blocking("print(kept)")["stdout"] == "7\n"
        second.detach()
    finally:
        first.remove()


def test_a_server_stopping_while_it_warms_a_sandbox_stops_at_once_and_leaves_none(docker, spawn):
    """A warm-up waits up to 2 minutes for its kernel's imports; a stopping server does not wait
    for it (a replica SIGKILLed for being slow to stop would leave its containers behind)."""
    server = spawn("warming-stop", ASSISTANTD_SANDBOX_WARM_POOL="2")
    instance = instance_of(server)
    wait_for(lambda: containers_of(docker, instance), timeout=30, what="a warm-up under way")
    started = time.monotonic()
    server.stop(timeout=60)
    assert time.monotonic() - started < 10
    assert containers_of(docker, instance) == []
