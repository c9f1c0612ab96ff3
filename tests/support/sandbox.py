"""Helpers for the code-interpreter tests: is a Docker engine with the sandbox image here, which
containers belong to a test server, and one scripted ``code_interpreter`` call inside a run."""

from __future__ import annotations

import os
from typing import Any

import pytest

from assistantd.sandbox.pool import INSTANCE_LABEL, instance_id
from assistantd.settings import Settings
from tests.conftest import make_client
from tests.support.fake import marker
from tests.support.runs import POLL_MS, assistant

IMAGE = os.environ.get("ASSISTANTD_SANDBOX_IMAGE", "assistantd-sandbox:latest")
CODE_INTERPRETER = {"type": "code_interpreter"}


def docker_client():
    """A Docker client when the engine and the sandbox image are usable; else skip the caller's
    module — or fail it under CI, where scripts/test builds the image and a skip would hide a
    broken sandbox."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:
        problem = f"the Docker engine is not reachable ({exc})"
    else:
        try:
            client.images.get(IMAGE)
            return client
        except Exception:
            problem = f"the sandbox image {IMAGE} is not built (docker/sandbox/build-offline.sh)"
    if os.environ.get("CI"):
        pytest.fail(f"code interpreter tests need Docker: {problem}")
    pytest.skip(f"code interpreter tests need Docker: {problem}")


def instance_of(server) -> str:
    """The ``assistantd.instance`` label the server puts on its sandboxes."""
    settings = Settings(_env_file=None, data_dir=server.data_dir,
                        database_url=server.env.get("ASSISTANTD_DATABASE_URL"))
    return instance_id(settings)


def containers_of(docker, instance: str) -> list:
    """Every container (running or not) of one server instance: ``docker ps -a --filter label=…``."""
    return docker.containers.list(all=True, filters={"label": f"{INSTANCE_LABEL}={instance}"},
                                  ignore_removed=True)  # (one removed between the list and its inspect)


def code_call(code: str, answer: str = "Done.") -> tuple[dict[str, Any], dict[str, Any]]:
    """The two scripted model turns of one code_interpreter call: the call, then the answer."""
    return ({"tool_calls": [{"name": "code_interpreter", "arguments": {"code": code}}]}, {"text": answer})


def run_code(client, fake_upstream, thread_id: str, assistant_id: str, code: str,
             answer: str = "Done.", timeout: float = 60) -> dict[str, Any]:
    """Add a user message to the thread that makes the model run ``code``, run it to its end and
    return ``{"run", "logs", "outputs", "tool_message"}`` (what the model was told)."""
    tag = fake_upstream.script(*code_call(code, answer))
    client.beta.threads.messages.create(thread_id, role="user", content=f"Run it. {marker(tag)}")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id,
                                                   poll_interval_ms=POLL_MS, timeout=timeout)
    return {"run": run, **code_result(client, fake_upstream, run, tag)}


def code_result(client, fake_upstream, run, tag: str) -> dict[str, Any]:
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id, order="asc")
    calls = [c for s in steps.data if s.type == "tool_calls" for c in s.step_details.tool_calls]
    assert len(calls) == 1 and calls[0].type == "code_interpreter", calls
    outputs = calls[0].code_interpreter.outputs
    logs = "\n".join(o.logs for o in outputs if o.type == "logs")
    tool_messages = [m for r in fake_upstream.requests(tag) for m in r["messages"] if m["role"] == "tool"]
    return {"call": calls[0], "outputs": outputs, "logs": logs,
            "tool_message": tool_messages[-1]["content"] if tool_messages else None}


def completed(client, fake_upstream, bot, thread_id: str, code: str) -> dict[str, Any]:
    """:func:`run_code`, asserting that the run completed."""
    result = run_code(client, fake_upstream, thread_id, bot.id, code)
    assert result["run"].status == "completed", result["run"].last_error
    return result


# Module fixtures for a sandbox test module that defines its own ``box`` server: import them.
@pytest.fixture(scope="module")
def client(box):
    c = make_client(box.base_url, timeout=60)
    yield c
    c.close()


@pytest.fixture(scope="module")
def bot(client):
    """An assistant with the code_interpreter tool."""
    return assistant(client, tools=[CODE_INTERPRETER])
