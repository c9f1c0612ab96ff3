"""The run and the run step a request's path names, loaded for its tenant or the 404 of the
first that does not exist, and the thread a run is to start on (see
:mod:`assistantd.api.dependencies`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from assistantd.api.dependencies import loaded, request_scope
from assistantd.db.models import Run, RunStep, Thread
from assistantd.runs import service
from assistantd.runs.store import Writes


async def run_of_thread(thread_id: str, run_id: str, request: Request) -> Run:
    return await loaded(request, service.get, thread_id, run_id)


async def step_of_run(thread_id: str, run_id: str, step_id: str, request: Request) -> RunStep:
    return await loaded(request, service.get_step, thread_id, run_id, step_id)


async def thread_for_run(thread_id: str, request: Request) -> tuple[Thread, int]:
    """``POST {thread_id}/runs``: the tenant's thread, refused while a run on it is active, and
    the seq of its last message (on SQLite one statement reads the three)."""
    return await loaded(request, service.thread_for_run, thread_id)


async def run_writes(request: Request) -> Writes:
    """The request's writes of runs, steps and messages (its one transaction): the events they
    make go out once it has committed (persist, then emit)."""
    scope = await request_scope(request)
    writes = Writes(scope.session, request.app.state.bus)
    scope.after(writes.publish)
    return writes


TenantRun = Annotated[Run, Depends(run_of_thread)]
TenantStep = Annotated[RunStep, Depends(step_of_run)]
ThreadForRun = Annotated[tuple[Thread, int], Depends(thread_for_run)]
RunWrites = Annotated[Writes, Depends(run_writes)]
