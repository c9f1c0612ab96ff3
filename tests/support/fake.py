"""The scripted fake upstream (``assistantd.testing.fake_upstream``) as a subprocess, and the
SSE reader tests use to see a run's raw event stream."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import free_port
from tests.support.spec import validate_event


class FakeUpstream:
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / "fake-upstream.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeUpstream":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assistantd.testing.fake_upstream", "--port", str(self.port)],
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("fake upstream did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def script(self, *turns: dict[str, Any], tag: str | None = None) -> str:
        """Queue ``turns`` under a new (or given) tag; put ``marker(tag)`` in a message to use them."""
        tag = tag or secrets.token_hex(6)
        httpx.post(f"http://127.0.0.1:{self.port}/__fake/script", json={"tag": tag, "turns": list(turns)}).raise_for_status()
        return tag

    def script_escaped(self, *turns: dict[str, Any], tag: str | None = None) -> str:
        """:meth:`script`, sent as ASCII JSON: turns may hold text no UTF-8 encoder takes (lone
        surrogates), which the fake then streams as ``\\udXXX`` escapes."""
        tag = tag or secrets.token_hex(6)
        httpx.post(f"http://127.0.0.1:{self.port}/__fake/script", content=json.dumps({"tag": tag, "turns": list(turns)}),
                   headers={"content-type": "application/json"}).raise_for_status()
        return tag

    def requests(self, tag: str) -> list[dict[str, Any]]:
        return httpx.get(f"http://127.0.0.1:{self.port}/__fake/requests", params={"tag": tag}).json()

    def ends(self, tag: str) -> list[dict[str, Any]]:
        """``{"at": time.time(), "how": "done" | "closed"}`` of each streamed answer of ``tag`` that ended."""
        return httpx.get(f"http://127.0.0.1:{self.port}/__fake/ends", params={"tag": tag}).json()

    def embedded(self) -> list[str]:
        """Every text the fake's embeddings endpoint was given, as often as it was given."""
        return httpx.get(f"http://127.0.0.1:{self.port}/__fake/embedded").json()

    def ports(self) -> list[dict[str, Any]]:
        """``{"tag", "port"}`` of every chat request so far, in order of arrival."""
        return httpx.get(f"http://127.0.0.1:{self.port}/__fake/ports").json()


def marker(tag: str) -> str:
    return f"[[fake:{tag}]]"


def read_sse(http: httpx.Client, method: str, path: str, **kwargs) -> list[tuple[str, Any]]:
    """POST a streaming request and return its events as (name, parsed data), each checked
    against the spec's ``AssistantStreamEvent``."""
    events: list[tuple[str, Any]] = []
    with http.stream(method, path, **kwargs) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name, data = None, []
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif line == "" and name is not None:
                events.append((name, validate_event(name, "\n".join(data))))
                name, data = None, []
    return events
