"""The run and the run step a request's path names, loaded for its tenant or the 404 of the
first that does not exist, and the thread a run is to start on (see
:mod:`assistantd.api.dependencies`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from assistantd.api.dependencies import Scope, loaded, request_scope
from assistantd.api.errors import invalid
from assistantd.db.models import Run, RunStep, Thread
from assistantd.runs import service
from assistantd.runs.events import EventBus
from assistantd.runs.store import Writes


async def run_of_thread(thread_id: str, run_id: str, request: Request) -> Run:
    return await loaded(request, service.get, thread_id, run_id)


async def step_of_run(thread_id: str, run_id: str, step_id: str, request: Request) -> RunStep:
    return await loaded(request, service.get_step, thread_id, run_id, step_id)


SEARCH_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"


def search_content_of(include: list[str] | None) -> bool:
    """``include[]``: whether file search results carry their content (the only value allowed)."""
    for i, item in enumerate(include or []):
        if item != SEARCH_CONTENT:
            raise invalid(f"Invalid value: '{item[:200]}'. Supported values are: '{SEARCH_CONTENT}'.",
                          param=f"include[{i}]", code="invalid_value")
    return bool(include)


@dataclass(slots=True)
class RunStartTarget:
    """What ``POST {thread_id}/runs`` acts on: the request's scope and writes, the tenant's thread
    (refused while a run on it is active), the seq of its last message (on SQLite one statement
    reads the three), and whether file search results carry their content (``include[]``)."""

    scope: Scope
    writes: Writes
    thread: Thread
    last_seq: int
    search_content: bool


async def run_start(thread_id: str, request: Request) -> RunStartTarget:
    """One dependency where the route had four (``include[]``, the thread, the scope, the writes):
    FastAPI solves each ``Depends`` with its own parameters and bookkeeping, and this route is on
    every run's path."""
    search_content = search_content_of(request.query_params.getlist("include[]"))
    thread, last_seq = await loaded(request, service.thread_for_run, thread_id)
    writes = await run_writes(request)
    return RunStartTarget(await request_scope(request), writes, thread, last_seq, search_content)


async def run_writes(request: Request) -> Writes:
    """The request's writes of runs, steps and messages (its one transaction): the events they
    make go out once it has committed (persist, then emit)."""
    return writes_of(await request_scope(request), request.app.state.bus)


def writes_of(scope: Scope, bus: EventBus) -> Writes:
    writes = Writes(scope.session, bus)
    scope.after(writes.publish)
    return writes


TenantRun = Annotated[Run, Depends(run_of_thread)]
TenantStep = Annotated[RunStep, Depends(step_of_run)]
RunStart = Annotated[RunStartTarget, Depends(run_start)]
RunWrites = Annotated[Writes, Depends(run_writes)]
