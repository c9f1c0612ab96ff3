"""``assistantd migrate`` on a fresh database of the current backend; ``alembic check`` is clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_http
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]


class Env:
    def __init__(self, data_dir: Path, url: str | None) -> None:
        self.data_dir, self.url = data_dir, url
        self.env = {**os.environ, "ASSISTANTD_DATA_DIR": str(data_dir)}
        self.env.pop("ASSISTANTD_DATABASE_URL", None)
        if url:
            self.env["ASSISTANTD_DATABASE_URL"] = url

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=120)

    def migrate(self) -> subprocess.CompletedProcess:
        return self.run("-m", "assistantd", "migrate")

    def alembic(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture
def fresh(databases) -> Env:
    return Env(*databases.new("migrations"))


def _head(env: Env) -> str:
    out = _ok(env.alembic("heads"))
    heads = [line.split()[0] for line in out.splitlines() if "(head)" in line]
    assert len(heads) == 1, f"expected one head, got: {out}"
    return heads[0]


def test_migrate_then_alembic_check_is_clean(fresh):
    head = _head(fresh)
    # On an empty database the models are ahead of it: check must say so.
    assert fresh.alembic("check").returncode != 0

    _ok(fresh.migrate())
    if fresh.url is None:
        assert (fresh.data_dir / "assistantd.db").is_file()
    current = _ok(fresh.alembic("current"))
    assert head in current and "(head)" in current
    out = _ok(fresh.alembic("check"))
    assert "No new upgrade operations detected" in out


def test_migrate_twice_is_idempotent(fresh):
    _ok(fresh.migrate())
    first = _ok(fresh.alembic("current"))
    _ok(fresh.migrate())
    assert _ok(fresh.alembic("current")) == first
    _ok(fresh.alembic("check"))


def test_migrate_keeps_data_and_downgrade_round_trips(fresh):
    _ok(fresh.migrate())
    server = ServerProcess(fresh.data_dir, fresh.url)
    try:
        server.start()
        with make_http(server.url) as http:
            assistant = http.post("/v1/assistants", json={"model": "gpt-4o", "name": "kept"}).json()
        server.stop()

        # Migrating an up-to-date database with data in it changes nothing.
        _ok(fresh.migrate())
        server.start()
        with make_http(server.url) as http:
            assert http.get(f"/v1/assistants/{assistant['id']}").json() == assistant
        server.stop()
    finally:
        server.stop()

    # Every migration can be undone and re-applied.
    _ok(fresh.alembic("downgrade", "base"))
    assert fresh.alembic("check").returncode != 0
    _ok(fresh.migrate())
    _ok(fresh.alembic("check"))


def _tool_io(env: Env) -> list:
    import asyncio

    from sqlalchemy import select

    from assistantd.db import Database
    from assistantd.db.models import RunStep
    from assistantd.settings import Settings

    async def read() -> list:
        db = Database(Settings(_env_file=None, data_dir=env.data_dir, database_url=env.url).sqlalchemy_url)
        try:
            async with db.read() as session:
                return (await session.execute(select(RunStep.tool_io).where(RunStep.type == "tool_calls"))).scalars().all()
        finally:
            await db.dispose()

    return asyncio.run(read())


def test_tool_io_migration_moves_built_in_tool_bookkeeping_both_ways(fresh, fake_upstream):
    """Revision 5a7c3e9b2f10: a built-in tool call's model-side record (what the model wrote and was
    told) lives in run_steps.tool_io; downgrading puts it back inside step_details, upgrading moves it
    out again, and the public step is the same throughout."""
    from tests.support.fake import marker
    from tests.support.runs import wait_run

    _ok(fresh.migrate())
    server = ServerProcess(fresh.data_dir, fresh.url, ASSISTANTD_UPSTREAM_BASE_URL=fake_upstream.base_url,
                           ASSISTANTD_SANDBOX_WARM_POOL="0")
    tag = fake_upstream.script({"tool_calls": [{"name": "file_search", "arguments": {"query": "q"}}]},
                               {"chunks": ["done"]})
    try:
        server.start()
        with make_http(server.url) as http:
            a = http.post("/v1/assistants", json={"model": "gpt-4o", "tools": [{"type": "file_search"}]}).json()
            t = http.post("/v1/threads", json={"messages": [{"role": "user", "content": marker(tag)}]}).json()
            run = http.post(f"/v1/threads/{t['id']}/runs", json={"assistant_id": a["id"]}).json()
            assert wait_run(http, t["id"], run["id"], until={"completed", "failed"})["status"] == "completed"
            steps = http.get(f"/v1/threads/{t['id']}/runs/{run['id']}/steps?order=asc").json()["data"]
        server.stop()
        [io] = _tool_io(fresh)
        [call_id] = io
        assert io[call_id]["arguments"] == '{"query": "q"}' and "nothing to search" in io[call_id]["output"]
        assert all(not k.startswith("_") for k in steps[0]["step_details"]["tool_calls"][0])

        _ok(fresh.alembic("downgrade", "9d2e4b7a1c35"))
        _ok(fresh.migrate())
        assert _tool_io(fresh) == [io]
        server.start()
        with make_http(server.url) as http:
            assert http.get(f"/v1/threads/{t['id']}/runs/{run['id']}/steps?order=asc").json()["data"] == steps
    finally:
        server.stop()


def test_servers_migrating_one_database_at_once_all_succeed(fresh):
    """Replicas started together (docker compose --scale) each migrate at start: on PostgreSQL an
    advisory lock makes them take turns, so none fails on tables another just made."""
    if fresh.url is None:
        pytest.skip("one SQLite file has one server")
    procs = [subprocess.Popen([sys.executable, "-m", "assistantd", "migrate"], cwd=ROOT, env=fresh.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert _head(fresh) in _ok(fresh.alembic("current"))
