"""Fixtures: a live assistantd server per database backend, driven over real HTTP.

The whole suite runs once per backend in ``ASSISTANTD_TEST_BACKENDS`` (default
``sqlite,postgresql``). PostgreSQL needs ``ASSISTANTD_TEST_POSTGRES_URL`` (a server where the
tests may create databases); ``scripts/test`` starts one and sets it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest

from tests.support.fake import FakeUpstream
from tests.support.server import ServerProcess
from tests.support.spec import validate_response

BACKENDS = [b.strip() for b in os.environ.get("ASSISTANTD_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]
POSTGRES_URL = os.environ.get("ASSISTANTD_TEST_POSTGRES_URL")


# --- spec validation on every response ---------------------------------------------------------

class Seen:
    """Operation ids whose responses were validated (for the coverage check at the end)."""

    operations: set[str] = set()


def _check(response) -> None:
    ctype = response.headers.get("content-type", "")
    if not ctype.startswith("application/json"):
        return
    response.read()
    op = validate_response(response.request.method, response.request.url.path,
                           response.status_code, ctype, response.content)
    if op:
        Seen.operations.add(op)


def make_client(base_url: str, api_key: str = "sk-test", **kwargs) -> openai.OpenAI:
    http_client = openai.DefaultHttpxClient(event_hooks={"response": [_check]})
    return openai.OpenAI(base_url=base_url, api_key=api_key, http_client=http_client,
                         max_retries=0, **kwargs)


def make_http(url: str, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=url, event_hooks={"response": [_check]}, timeout=30, **kwargs)


# --- databases ---------------------------------------------------------------------------------

def _pg_admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


class DatabaseFactory:
    """Fresh, empty databases of one backend; PostgreSQL ones are dropped at the end."""

    def __init__(self, backend: str, root: Path) -> None:
        self.backend, self.root, self.created = backend, root, []

    def new(self, name: str) -> tuple[Path, str | None]:
        data_dir = self.root / f"{name}-{secrets.token_hex(3)}"
        if self.backend == "sqlite":
            return data_dir, None
        db = f"assistantd_test_{secrets.token_hex(6)}"
        _pg_admin(f'CREATE DATABASE "{db}"')
        self.created.append(db)
        base = POSTGRES_URL.rsplit("/", 1)[0]
        return data_dir, f"{base}/{db}"

    def drop_all(self) -> None:
        for db in self.created:
            try:
                _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except Exception:
                pass


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    if request.param == "postgresql" and not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("ASSISTANTD_TEST_POSTGRES_URL is not set: CI must test PostgreSQL")
        pytest.skip("PostgreSQL backend: set ASSISTANTD_TEST_POSTGRES_URL (scripts/test does)")
    return request.param


@pytest.fixture(scope="session")
def databases(backend, tmp_path_factory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(backend, tmp_path_factory.mktemp(backend))
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session")
def fake_upstream(tmp_path_factory) -> Iterator[FakeUpstream]:
    """The scripted chat-completions server every test server talks to."""
    fake = FakeUpstream(tmp_path_factory.mktemp("fake")).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def spawn(databases, fake_upstream) -> Iterator:
    """``spawn(name, **env)`` → a started :class:`ServerProcess` on a fresh database."""
    servers: list[ServerProcess] = []

    def _spawn(name: str, **env: str) -> ServerProcess:
        data_dir, url = databases.new(name)
        # No warm sandboxes unless a test asks: dozens of test servers would each start two.
        env = {"ASSISTANTD_UPSTREAM_BASE_URL": fake_upstream.base_url, "ASSISTANTD_SANDBOX_WARM_POOL": "0", **env}
        server = ServerProcess(data_dir, url, **env)
        servers.append(server)
        return server.start()

    yield _spawn
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(spawn) -> ServerProcess:
    """The shared open-mode server most tests talk to."""
    return spawn("main")


@pytest.fixture
def client(server) -> Iterator[openai.OpenAI]:
    c = make_client(server.base_url)
    yield c
    c.close()


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    with make_http(server.url) as h:
        yield h


@pytest.fixture(scope="session", autouse=True)
def no_sandbox_left_behind(databases) -> Iterator[None]:
    """At the end of each backend's session — after ``spawn`` (set up later, so torn down first)
    stopped its servers — no sandbox container of any server the session started may be left.
    Those servers' instance labels are derived from their data folders and databases."""
    yield
    try:
        import docker

        engine = docker.from_env()
        engine.ping()
    except Exception:
        return  # no engine, so no container either
    from assistantd.sandbox.pool import INSTANCE_LABEL, instance_id
    from assistantd.settings import Settings

    urls = [None] if databases.backend == "sqlite" else \
        [f"{POSTGRES_URL.rsplit('/', 1)[0]}/{db}" for db in databases.created]
    ours = {instance_id(Settings(_env_file=None, data_dir=d, database_url=u))
            for d in databases.root.iterdir() if d.is_dir() for u in urls}
    left = [c for c in engine.containers.list(all=True, filters={"label": "assistantd.sandbox=1"})
            if c.labels.get(INSTANCE_LABEL) in ours]
    for container in left:
        container.remove(force=True)
    assert not left, f"sandbox containers left behind: {[c.name for c in left]}"
