"""The run, the run step and the thread to start a run on that a request's path names, loaded
for its tenant (see :mod:`assistantd.api.dependencies`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from assistantd.api.dependencies import RequestScope
from assistantd.db.models import Run, RunStep, Thread
from assistantd.runs import service
from assistantd.runs.store import Writes


async def run_of_thread(thread_id: str, run_id: str, scope: RequestScope) -> Run:
    """``{thread_id}/runs/{run_id}``: that thread's run, of the tenant, or a 404."""
    return await service.get(scope.session, scope.tenant, thread_id, run_id)


async def step_of_run(thread_id: str, run_id: str, step_id: str, scope: RequestScope) -> RunStep:
    """``…/runs/{run_id}/steps/{step_id}``: that run's step, of the tenant, or a 404."""
    return await service.get_step(scope.session, scope.tenant, thread_id, run_id, step_id)


async def thread_for_run(thread_id: str, scope: RequestScope) -> tuple[Thread, int]:
    """``POST {thread_id}/runs``: the tenant's thread (or a 404), refused while a run on it is
    active, and the seq of its last message (:func:`service.thread_for_run`: one statement on SQLite)."""
    return await service.thread_for_run(scope.session, scope.tenant, thread_id)


async def run_writes(request: Request, scope: RequestScope) -> Writes:
    """The request's writes of runs, steps and messages (its one transaction): the events they
    make go out once it has committed (persist, then emit)."""
    writes = Writes(scope.session, request.app.state.bus)
    scope.after(writes.publish)
    return writes


TenantRun = Annotated[Run, Depends(run_of_thread)]
TenantStep = Annotated[RunStep, Depends(step_of_run)]
ThreadForRun = Annotated[tuple[Thread, int], Depends(thread_for_run)]
RunWrites = Annotated[Writes, Depends(run_writes)]
