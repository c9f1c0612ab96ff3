"""Tenancy by construction, checked on the real route table: key A makes one of every object;
then every route whose path names an object is called with key B and A's ids, and answers 404
in OpenAI's envelope, as for an id that does not exist; A's objects are unchanged afterwards.

The routes come from ``create_app()`` itself, so a route added later is walked too; one whose
path names an object this module does not make fails the walk, so no route can be added
unscoped without it being noticed. Also here: the unit test pinning when FastAPI ends the
request's session (``assistantd.api.dependencies``).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Iterator

import httpx
import pytest
from fastapi import Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import TypeAdapter

from assistantd.api.dependencies import Scope, _entered
from assistantd.app import create_app
from assistantd.settings import Settings
from tests.conftest import make_client, make_http
from tests.support.runs import POLL_MS

KEY_A, KEY_B = "tenant-key-a", "tenant-key-b"
PATH_PARAM = re.compile(r"{(\w+)}")

# A minimal valid body for every route that takes one and whose path names an object (valid, so
# that the 404 cannot be a validation error in disguise: checked against the route's model).
# ``{name}`` is replaced by A's id of that kind.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/assistants/{assistant_id}"): {"name": "renamed by B"},
    ("POST", "/v1/threads/{thread_id}"): {"metadata": {"by": "b"}},
    ("POST", "/v1/threads/{thread_id}/messages"): {"role": "user", "content": "from B"},
    ("POST", "/v1/threads/{thread_id}/messages/{message_id}"): {"metadata": {"by": "b"}},
    ("POST", "/v1/threads/{thread_id}/runs"): {"assistant_id": "{assistant_id}"},
    ("POST", "/v1/threads/{thread_id}/runs/{run_id}"): {"metadata": {"by": "b"}},
    ("POST", "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs"):
        {"tool_outputs": [{"tool_call_id": "call_b", "output": "from B"}]},
    ("POST", "/v1/vector_stores/{vector_store_id}"): {"name": "renamed by B"},
    ("POST", "/v1/vector_stores/{vector_store_id}/files"): {"file_id": "{file_id}"},
    ("POST", "/v1/vector_stores/{vector_store_id}/files/{file_id}"): {"attributes": {"by": "b"}},
    ("POST", "/v1/vector_stores/{vector_store_id}/file_batches"): {"file_ids": ["{file_id}"]},
    ("POST", "/v1/vector_stores/{vector_store_id}/search"): {"query": "tenancy"},
}


def routes() -> list[tuple[str, str, APIRoute]]:
    """(method, path, route) for every API route of the application, as it serves them."""
    app = create_app(Settings(_env_file=None))
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path.startswith("/v1/"):
            found += [(method, context.path, route) for method in sorted(context.methods or ())]
    return found


def _filled(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return PATH_PARAM.sub(lambda m: ids[m.group(1)], value)
    if isinstance(value, list):
        return [_filled(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _filled(v, ids) for k, v in value.items()}
    return value


def _envelope_404(response: httpx.Response) -> None:
    assert response.status_code == 404, f"{response.request.method} {response.request.url.path}: {response.text}"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]


# --- A's objects -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed(spawn):
    return spawn("tenancy", ASSISTANTD_API_KEYS=f"{KEY_A},{KEY_B}")


@pytest.fixture(scope="module")
def a_http(keyed) -> Iterator[httpx.Client]:
    with make_http(keyed.url, headers={"Authorization": f"Bearer {KEY_A}"}) as h:
        yield h


@pytest.fixture(scope="module")
def b_http(keyed) -> Iterator[httpx.Client]:
    with make_http(keyed.url, headers={"Authorization": f"Bearer {KEY_B}"}) as h:
        yield h


def _settled(client, store_id: str) -> None:
    for _ in range(300):
        if client.vector_stores.retrieve(store_id).file_counts.in_progress == 0:
            return
        time.sleep(0.1)
    raise AssertionError("A's vector store is still ingesting")


@pytest.fixture(scope="module")
def owned(keyed) -> dict[str, str]:
    """One of every object, made with key A, by the path parameter that names it."""
    with make_client(keyed.base_url, api_key=KEY_A) as a:
        file = a.files.create(file=("notes.txt", b"A's notes on tenancy and its routes."), purpose="assistants")
        store = a.vector_stores.create(name="A's store", file_ids=[file.id])
        _settled(a, store.id)
        batch = a.vector_stores.file_batches.create(store.id, file_ids=[file.id])
        _settled(a, store.id)
        assistant = a.beta.assistants.create(model="gpt-4o", name="A's assistant")
        thread = a.beta.threads.create(messages=[{"role": "user", "content": "Hello from A"}])
        (message,) = a.beta.threads.messages.list(thread.id).data
        run = a.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                  poll_interval_ms=POLL_MS)
        assert run.status == "completed", run.last_error
        step = a.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data[0]
    return {"assistant_id": assistant.id, "thread_id": thread.id, "message_id": message.id, "run_id": run.id,
            "step_id": step.id, "file_id": file.id, "vector_store_id": store.id, "batch_id": batch.id}


def _snapshot(http: httpx.Client, ids: dict[str, str]) -> dict[str, Any]:
    """Every GET route naming an object, as A reads it."""
    seen = {}
    for method, path, _ in routes():
        if method == "GET" and PATH_PARAM.search(path):
            response = http.get(_filled(path, ids))
            assert response.status_code == 200, f"A: GET {path}: {response.text}"
            json = response.headers["content-type"].startswith("application/json")
            seen[path] = response.json() if json else response.content
    return seen


# --- the walk ----------------------------------------------------------------------------------

def test_every_route_naming_an_object_is_404_for_another_tenant(a_http, b_http, owned):
    before = _snapshot(a_http, owned)
    walked, kinds = [], set()
    for method, path, route in routes():
        params = PATH_PARAM.findall(path)
        if not params:
            continue
        unknown = set(params) - set(owned)
        assert not unknown, (f"{method} {path}: this test does not know the object {sorted(unknown)} names; "
                             "make one with key A in `owned`, so the route is checked for tenancy")
        kwargs = {}
        if route.body_field is not None:
            assert (method, path) in BODIES, f"{method} {path}: add a minimal valid body to BODIES"
            body = _filled(BODIES[method, path], owned)
            TypeAdapter(route.body_field.field_info.annotation).validate_python(body)
            kwargs["json"] = body
        _envelope_404(b_http.request(method, _filled(path, owned), **kwargs))
        walked.append((method, path))
        kinds.update(params)
    assert kinds == set(owned), f"objects no route names any more: {sorted(set(owned) - kinds)}"
    assert len(walked) >= 30, walked
    assert _snapshot(a_http, owned) == before


def test_another_tenants_lists_show_none_of_its_objects(b_http, owned):
    for method, path, _ in routes():
        if method == "GET" and not PATH_PARAM.search(path):
            response = b_http.get(path)
            assert response.status_code == 200, response.text
            assert not {i for i in owned.values() if i in response.text}, path


# --- when a request's session ends -------------------------------------------------------------

class _Opened:
    """Stands in for ``Database.write()``: records its commit or its rollback."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def __aenter__(self) -> str:
        self.events.append("begin")
        return "session"

    async def __aexit__(self, kind, error, traceback) -> bool:
        self.events.append("rollback" if kind else "commit")
        return False


def _served(fail: bool) -> list[str]:
    """Events of one request to an app whose handler uses a :class:`Scope` as the real ones do."""
    events: list[str] = []

    async def scope(request: Request) -> Scope:
        entered = await _entered(request, Scope("tenant", _Opened(events)))
        entered.after(lambda: events.append("after"))
        entered.on_failure(lambda: events.append("failed"))
        return entered

    app = FastAPI()

    @app.get("/")
    async def handler(scope: Scope = Depends(scope)) -> Response:
        events.append("handler")
        if fail:
            raise RuntimeError("the handler failed")
        return Response(b"ok")

    async def call() -> None:
        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                events.append(f"sent {message['status']}")

        scope_ = {"type": "http", "method": "GET", "path": "/", "raw_path": b"/", "query_string": b"",
                  "headers": [], "root_path": "", "scheme": "http", "server": ("test", 80),
                  "client": ("test", 1), "http_version": "1.1"}
        try:
            await app(scope_, receive, send)
        except RuntimeError:
            pass  # Starlette's error middleware answers 500, then raises it again

    asyncio.run(call())
    return events


def test_the_session_ends_after_the_handler_and_before_the_response():
    # api/dependencies enters a Scope on FastAPI's function exit stack (a request-scope key of
    # FastAPI's): its commit, and what follows it, must come before the response is sent (a
    # stream must start after its run is committed).
    assert _served(fail=False) == ["begin", "handler", "commit", "after", "sent 200"]
    assert _served(fail=True) == ["begin", "handler", "rollback", "failed", "sent 500"]
