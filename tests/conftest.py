"""Fixtures: a live assistantd server per database backend, driven over real HTTP.

The whole suite runs once per backend in ``ASSISTANTD_TEST_BACKENDS`` (default
``sqlite,postgresql,pgvector``). PostgreSQL needs ``ASSISTANTD_TEST_POSTGRES_URL`` (a server where
the tests may create databases; Debian's, without pgvector); ``scripts/test`` starts one and sets
it. The ``pgvector`` backend is a PostgreSQL with the pgvector extension
(``ASSISTANTD_TEST_PGVECTOR_URL``, started by ``scripts/pgvector-server``); only the modules that
search vectors run on it (``pytestmark = pytest.mark.vector_search``).
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

BACKENDS = [b.strip() for b in os.environ.get("ASSISTANTD_TEST_BACKENDS", "sqlite,postgresql,pgvector").split(",")
            if b.strip()]
SERVER_URLS = {"postgresql": os.environ.get("ASSISTANTD_TEST_POSTGRES_URL"),
               "pgvector": os.environ.get("ASSISTANTD_TEST_PGVECTOR_URL")}
POSTGRES_URL = SERVER_URLS["postgresql"]


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "vector_search: also run on the pgvector backend")


def pytest_collection_modifyitems(config, items) -> None:
    """The pgvector backend runs only the modules that search vectors."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        on_pgvector = params is not None and params.params.get("backend") == "pgvector"
        (drop if on_pgvector and item.get_closest_marker("vector_search") is None else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


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

def _pg_admin(url: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url)
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
        server = SERVER_URLS[self.backend]
        _pg_admin(server, f'CREATE DATABASE "{db}"')
        self.created.append(db)
        return data_dir, f"{server.rsplit('/', 1)[0]}/{db}"

    def drop_all(self) -> None:
        for db in self.created:
            try:
                _pg_admin(SERVER_URLS[self.backend], f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except Exception:
                pass


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    if request.param != "sqlite" and not SERVER_URLS[request.param]:
        variable = f"ASSISTANTD_TEST_{'POSTGRES' if request.param == 'postgresql' else 'PGVECTOR'}_URL"
        if os.environ.get("CI"):
            pytest.fail(f"{variable} is not set: CI must test the {request.param} backend")
        pytest.skip(f"{request.param} backend: set {variable} (scripts/test does)")
    return request.param


@pytest.fixture(scope="session")
def databases(backend, tmp_path_factory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(backend, tmp_path_factory.mktemp(backend))
    yield factory
    factory.drop_all()


@pytest.fixture
def migrated_url(databases, request) -> str:
    """The async URL of a fresh database of the session's backend, migrated to head (for tests
    that drive the database layer directly, without a server)."""
    from assistantd.db.migrate import upgrade_to_head
    from assistantd.settings import Settings

    data_dir, url = databases.new(request.module.__name__.rsplit(".", 1)[-1])
    settings = Settings(_env_file=None, data_dir=data_dir, database_url=url)
    upgrade_to_head(settings)
    return settings.sqlalchemy_url


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
        [f"{SERVER_URLS[databases.backend].rsplit('/', 1)[0]}/{db}" for db in databases.created]
    ours = {instance_id(Settings(_env_file=None, data_dir=d, database_url=u))
            for d in databases.root.iterdir() if d.is_dir() for u in urls}
    left = [c for c in engine.containers.list(all=True, filters={"label": "assistantd.sandbox=1"}, ignore_removed=True)
            if c.labels.get(INSTANCE_LABEL) in ours]
    for container in left:
        container.remove(force=True)
    assert not left, f"sandbox containers left behind: {[c.name for c in left]}"
