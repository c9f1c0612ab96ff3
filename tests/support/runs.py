"""Helpers for the run tests: assistants and threads wired to a scripted fake-upstream tag, and
waiting for a run to reach a state."""

from __future__ import annotations

import time
from typing import Any, Iterable

import httpx

from tests.support.fake import marker

POLL_MS = 50  # SDK poll helpers: the default 1 s would make every run test slow
TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def assistant(client, **kwargs: Any):
    kwargs.setdefault("model", "gpt-4o")
    kwargs.setdefault("instructions", "You are a terse test assistant.")
    return client.beta.assistants.create(**kwargs)


def thread(client, tag: str, text: str = "Hello") -> Any:
    """A thread whose one user message selects ``tag``'s scripted turns."""
    return client.beta.threads.create(messages=[{"role": "user", "content": f"{text} {marker(tag)}"}])


def wait_run(http: httpx.Client, thread_id: str, run_id: str, until: Iterable[str] | None = None,
             timeout: float = 15.0) -> dict[str, Any]:
    """Poll the run over raw HTTP until its status is one of ``until`` (default: terminal)."""
    wanted = set(until) if until is not None else TERMINAL
    deadline = time.monotonic() + timeout
    while True:
        r = http.get(f"/v1/threads/{thread_id}/runs/{run_id}")
        assert r.status_code == 200, r.text
        run = r.json()
        if run["status"] in wanted:
            return run
        assert time.monotonic() < deadline, f"run stuck in {run['status']}, wanted {sorted(wanted)}"
        time.sleep(0.05)


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def messages(http: httpx.Client, thread_id: str) -> list[dict[str, Any]]:
    r = http.get(f"/v1/threads/{thread_id}/messages", params={"order": "asc", "limit": 100})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def text_of(message: dict[str, Any]) -> str:
    return "".join(p["text"]["value"] for p in message["content"] if p["type"] == "text")


def error_of(response: httpx.Response) -> dict[str, Any]:
    return response.json()["error"]
