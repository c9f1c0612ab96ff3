"""``/v1/threads/{thread_id}/runs…`` and ``/v1/threads/runs``: create (JSON or SSE), list,
retrieve, update, cancel, submit tool outputs, and run steps."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.datastructures import State

from assistantd.api.body import JSONRoute
from assistantd.api.dependencies import RequestScope, Scope
from assistantd.api.pagination import Page, listed
from assistantd.api.sse import QueueStream
from assistantd.db.models import Run
from assistantd.runs import service
from assistantd.runs.dependencies import (SEARCH_CONTENT, RunStart, RunStartTarget, RunWrites, TenantRun, TenantStep,
                                          search_content_of)
from assistantd.runs.events import DONE_FRAME, Event, Subscription
from assistantd.runs.schemas import (
    CreateRunRequest,
    CreateThreadAndRunRequest,
    ModifyRunRequest,
    RunObject,
    RunStepObject,
    SubmitToolOutputsRequest,
)
from assistantd.threads.dependencies import TenantThread
from assistantd.runs.store import Writes
from assistantd.threads.schemas import ThreadObject

router = APIRouter(tags=["runs"], route_class=JSONRoute)

RUN_OPENING = ("thread.run.created", "thread.run.queued")  # a new run's first events: one object, serialised once


def _stream(subscription: Subscription, opening: list[Event]) -> QueueStream:
    """SSE: the events the handler persisted, then whatever the executor emits, then ``done``;
    events already waiting are sent together in one write (a step and its message open with four
    events at once). A client that goes away leaves the run running."""

    def failed(exc: Exception) -> bytes:
        return Event("error", json.dumps({"code": "server_error", "message": f"The event stream failed: {exc!r}",
                                          "param": None, "type": "server_error"})).frame()

    return QueueStream(b"".join(event.frame() for event in opening), subscription.queue, closing=DONE_FRAME,
                       failed=failed, on_close=subscription.close)


class _Writing:
    """What a run-starting handler does inside its transaction, besides the writes."""

    def __init__(self, state: State, stream: bool | None) -> None:
        self.state, self.stream = state, stream
        self.subscription: Subscription | None = None
        self.claiming: Run | None = None  # its first model request sent, before its insert
        self.claimed: Run | None = None

    async def send_first(self, writes: Writes, run: Run) -> None:
        """The run is known but not yet written: its first model request goes out now, when this
        process will claim it (:meth:`RunWorker.send_first`)."""
        if await self.state.worker.send_first(writes, run):
            self.claiming = run

    async def queued(self, writes: Writes, run: Run) -> RunObject:
        """The run is written ``queued``: subscribe its stream *before* the commit makes it
        visible to executors (so the stream misses nothing), and claim it for this process
        when there is room. Returns the queued snapshot the client is answered with."""
        snapshot = RunObject.from_row(run)
        if self.stream:
            self.subscription = self.state.bus.subscribe(run.id)
        if await self.state.worker.claim_created(writes, run):
            self.claimed = run
        return snapshot


def _writing(state: State, scope: Scope, stream: bool | None) -> _Writing:
    """The run's start, around the request's transaction (``scope``'s): once it has committed,
    the claimed run starts (or an executor is woken); if it fails, the subscription and the
    claim are given up."""
    writing = _Writing(state, stream)
    executor = state.worker

    def failed() -> None:
        if writing.subscription is not None:
            writing.subscription.close()
        if (writing.claimed or writing.claiming) is not None:
            executor.release_claimed(writing.claimed or writing.claiming)

    def committed() -> None:
        if writing.claimed is not None:
            executor.start_claimed(writing.claimed)
        else:
            executor.wake()

    scope.on_failure(failed)
    scope.after(committed)
    return writing


async def include_param(include: list[str] | None = Query(None, alias="include[]")) -> bool:
    """``include[]``: whether file search results carry their content (the only value allowed).
    ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop on every
    run created (measured: upstream connections stopped being reused at 50 concurrent runs)."""
    return search_content_of(include)


SearchContent = Annotated[bool, Depends(include_param)]


# ``include[]`` is read and checked by ``RunStart``; described here for the route's schema only.
_INCLUDE_PARAM = {"parameters": [{"name": "include[]", "in": "query", "required": False,
                                  "schema": {"type": "array", "items": {"type": "string", "enum": [SEARCH_CONTENT]}}}]}


@router.post("/threads/{thread_id}/runs", openapi_extra=_INCLUDE_PARAM)
async def create_run(body: CreateRunRequest, request: Request, start: RunStart):
    """(Most requests are answered by :mod:`assistantd.runs.fast` through :func:`start_run`
    without reaching this route; it answers the rest, every refused one among them.)"""
    return await start_run(request.app.state, start, body)


async def start_run(state: State, start: RunStartTarget, body: CreateRunRequest) -> Response:
    """``POST /threads/{thread_id}/runs`` once its thread is read, in ``start.scope``'s transaction."""
    scope, writes = start.scope, start.writes
    writing = _writing(state, scope, body.stream)
    run = await service.create(writes, scope.tenant, start.thread, start.last_seq, body,
                               state.settings.run_expiry_seconds, start.search_content,
                               before_insert=lambda run: writing.send_first(writes, run))
    run_obj = await writing.queued(writes, run)
    if writing.subscription is None:
        return run_obj.response()
    return _stream(writing.subscription, Event.each(RUN_OPENING, run_obj))


@router.post("/threads/runs")
async def create_thread_and_run(body: CreateThreadAndRunRequest, request: Request, scope: RequestScope,
                                writes: RunWrites):
    writing = _writing(request.app.state, scope, body.stream)
    thread, run = await service.create_thread_and_run(
        writes, scope.tenant, body, request.app.state.settings.run_expiry_seconds,
        before_insert=lambda run: writing.send_first(writes, run))
    run_obj = await writing.queued(writes, run)
    if writing.subscription is None:
        return run_obj.response()
    return _stream(writing.subscription, [Event.of("thread.created", ThreadObject.from_row(thread)),
                                          *Event.each(RUN_OPENING, run_obj)])


@router.get("/threads/{thread_id}/runs")
async def list_runs(page: Page, thread: TenantThread, scope: RequestScope):
    return listed(await service.list_page(scope.session, thread, page), RunObject.from_row)


@router.get("/threads/{thread_id}/runs/{run_id}")
async def retrieve_run(run: TenantRun, request: Request):
    return RunObject.from_row(run).polled_response(request)


@router.post("/threads/{thread_id}/runs/{run_id}")
async def modify_run(body: ModifyRunRequest, run: TenantRun, scope: RequestScope):
    if "metadata" in body.model_fields_set:
        run.metadata_ = body.metadata or {}
    await scope.session.flush()
    return RunObject.from_row(run).response()


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(run: TenantRun, scope: RequestScope, writes: RunWrites, request: Request):
    state = request.app.state
    if await service.cancel(writes, run):  # it is executing: its executor is told once this commits
        run_id = run.id
        scope.after(lambda: state.worker.request_cancel(run_id))
    return RunObject.from_row(run).response()


@router.post("/threads/{thread_id}/runs/{run_id}/submit_tool_outputs")
async def submit_tool_outputs(body: SubmitToolOutputsRequest, request: Request, run: TenantRun, scope: RequestScope,
                              writes: RunWrites):
    writing = _writing(request.app.state, scope, body.stream)
    step = await service.submit_tool_outputs(writes, run, body, request.app.state.settings.run_expiry_seconds)
    run_obj = await writing.queued(writes, run)
    if writing.subscription is None:
        return run_obj.response()
    return _stream(writing.subscription, [Event.of("thread.run.step.completed", RunStepObject.from_row(step)),
                                          Event.of("thread.run.queued", run_obj)])


@router.get("/threads/{thread_id}/runs/{run_id}/steps")
async def list_run_steps(page: Page, search_content: SearchContent, run: TenantRun, scope: RequestScope):
    return listed(await service.list_steps(scope.session, run, page),
                  lambda step: RunStepObject.from_row(step, search_content))


@router.get("/threads/{thread_id}/runs/{run_id}/steps/{step_id}")
async def retrieve_run_step(search_content: SearchContent, step: TenantStep):
    return RunStepObject.from_row(step, search_content).response()
