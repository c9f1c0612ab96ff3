"""``/v1/threads/{thread_id}/runs…`` and ``/v1/threads/runs``: create (JSON or SSE), list,
retrieve, update, cancel, submit tool outputs, and run steps."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from sse_starlette import EventSourceResponse

from assistantd.api.auth import require_tenant
from assistantd.api.body import JSONRoute
from assistantd.api.errors import invalid
from assistantd.api.pagination import PageParams, page_params
from assistantd.api.types import ListResponse
from assistantd.db.models import Run
from assistantd.runs import service
from assistantd.runs.events import DONE_FRAME, Event, Subscription
from assistantd.runs.store import Writes
from assistantd.runs.schemas import (
    CreateRunRequest,
    CreateThreadAndRunRequest,
    ModifyRunRequest,
    RunObject,
    RunStepObject,
    SubmitToolOutputsRequest,
)
from assistantd.threads.schemas import ThreadObject

log = logging.getLogger("assistantd")
router = APIRouter(tags=["runs"], route_class=JSONRoute)

SEARCH_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"


def _stream(subscription: Subscription, opening: list[Event]) -> EventSourceResponse:
    """SSE: the events the handler persisted, then whatever the executor emits, then ``done``.

    Events already waiting are sent together in one write (a step and its message open with four
    events at once), which saves a trip through the ASGI stack and a syscall per event.
    """

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b"".join(event.frame() for event in opening)
            queue = subscription.queue
            while True:
                batch = [await queue.get()]
                while not batch[-1].final and not queue.empty():
                    batch.append(queue.get_nowait())
                final = batch[-1].final
                yield b"".join(event.frame() for event in batch) + (DONE_FRAME if final else b"")
                if final:
                    break
        except Exception as exc:  # the run goes on; this stream tells its client why it stops
            log.exception("run event stream failed")
            error = {"code": "server_error", "message": f"The event stream failed: {exc!r}",
                     "param": None, "type": "server_error"}
            yield Event("error", json.dumps(error)).frame()
        finally:
            subscription.close()  # a client that goes away leaves the run running

    return EventSourceResponse(frames(), ping=15, sep="\n")


class _Writing:
    """What a run-starting handler does inside its transaction, besides the writes."""

    def __init__(self, request: Request, stream: bool | None) -> None:
        self.request, self.stream = request, stream
        self.subscription: Subscription | None = None
        self.claimed: Run | None = None

    async def queued(self, writes: Writes, run: Run) -> RunObject:
        """The run is written ``queued``: subscribe its stream *before* the commit makes it
        visible to executors (so the stream misses nothing), and claim it for this process
        when there is room. Returns the queued snapshot the client is answered with."""
        snapshot = RunObject.from_row(run)
        if self.stream:
            self.subscription = self.request.app.state.bus.subscribe(run.id)
        if await self.request.app.state.worker.claim_created(writes, run):
            self.claimed = run
        return snapshot


@contextlib.asynccontextmanager
async def _writing(request: Request, stream: bool | None) -> AsyncIterator[tuple[Writes, _Writing]]:
    """The request's transaction, and then the run's start."""
    writing = _Writing(request, stream)
    executor = request.app.state.worker
    try:
        async with request.app.state.store.writing() as writes:
            yield writes, writing
    except BaseException:
        if writing.subscription is not None:
            writing.subscription.close()
        if writing.claimed is not None:
            executor.release_claimed(writing.claimed)
        raise
    if writing.claimed is not None:
        executor.start_claimed(writing.claimed)
    else:
        executor.wake()


async def include_param(include: list[str] | None = Query(None, alias="include[]")) -> bool:
    """``include[]``: whether file search results carry their content (the only value allowed).
    ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop on every
    run created (measured: upstream connections stopped being reused at 50 concurrent runs)."""
    for i, item in enumerate(include or []):
        if item != SEARCH_CONTENT:
            raise invalid(f"Invalid value: '{item[:200]}'. Supported values are: '{SEARCH_CONTENT}'.",
                          param=f"include[{i}]", code="invalid_value")
    return bool(include)


@router.post("/threads/{thread_id}/runs")
async def create_run(thread_id: str, body: CreateRunRequest, request: Request,
                     search_content: bool = Depends(include_param),
                     tenant: str = Depends(require_tenant)):
    async with _writing(request, body.stream) as (writes, writing):
        thread, last_seq = await service.thread_for_run(writes.session, tenant, thread_id)
        run = await service.create(writes, tenant, thread, last_seq, body,
                                   request.app.state.settings.run_expiry_seconds, search_content)
        run_obj = await writing.queued(writes, run)
    if writing.subscription is None:
        return run_obj.response()
    return _stream(writing.subscription, [Event.of("thread.run.created", run_obj),
                                          Event.of("thread.run.queued", run_obj)])


@router.post("/threads/runs")
async def create_thread_and_run(body: CreateThreadAndRunRequest, request: Request,
                                tenant: str = Depends(require_tenant)):
    async with _writing(request, body.stream) as (writes, writing):
        thread, run = await service.create_thread_and_run(
            writes, tenant, body, request.app.state.settings.run_expiry_seconds)
        run_obj = await writing.queued(writes, run)
    if writing.subscription is None:
        return run_obj.response()
    return _stream(writing.subscription, [Event.of("thread.created", ThreadObject.from_row(thread)),
                                          Event.of("thread.run.created", run_obj),
                                          Event.of("thread.run.queued", run_obj)])


@router.get("/threads/{thread_id}/runs")
async def list_runs(thread_id: str, request: Request, page: PageParams = Depends(page_params),
                    tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        rows, has_more = await service.list_page(session, tenant, thread_id, page)
    return ListResponse.of([RunObject.from_row(r) for r in rows], has_more).response()


@router.get("/threads/{thread_id}/runs/{run_id}")
async def retrieve_run(thread_id: str, run_id: str, request: Request, tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        run = await service.get(session, tenant, thread_id, run_id)
    return RunObject.from_row(run).response()


@router.post("/threads/{thread_id}/runs/{run_id}")
async def modify_run(thread_id: str, run_id: str, body: ModifyRunRequest, request: Request,
                     tenant: str = Depends(require_tenant)):
    async with request.app.state.db.write() as session:
        run = await service.get(session, tenant, thread_id, run_id)
        if "metadata" in body.model_fields_set:
            run.metadata_ = body.metadata or {}
        await session.flush()
        return RunObject.from_row(run).response()


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(thread_id: str, run_id: str, request: Request, tenant: str = Depends(require_tenant)):
    state = request.app.state
    async with state.store.writing() as writes:
        run = await service.get(writes.session, tenant, thread_id, run_id)
        executing = await service.cancel(writes, run)
    if executing:
        state.worker.request_cancel(run.id)
    return RunObject.from_row(run).response()


@router.post("/threads/{thread_id}/runs/{run_id}/submit_tool_outputs")
async def submit_tool_outputs(thread_id: str, run_id: str, body: SubmitToolOutputsRequest, request: Request,
                              tenant: str = Depends(require_tenant)):
    async with _writing(request, body.stream) as (writes, writing):
        run = await service.get(writes.session, tenant, thread_id, run_id)
        step = await service.submit_tool_outputs(writes, run, body,
                                                  request.app.state.settings.run_expiry_seconds)
        run_obj = await writing.queued(writes, run)
    if writing.subscription is None:
        return run_obj.response()
    return _stream(writing.subscription, [Event.of("thread.run.step.completed", RunStepObject.from_row(step)),
                                          Event.of("thread.run.queued", run_obj)])


@router.get("/threads/{thread_id}/runs/{run_id}/steps")
async def list_run_steps(thread_id: str, run_id: str, request: Request, page: PageParams = Depends(page_params),
                         search_content: bool = Depends(include_param),
                         tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        rows, has_more = await service.list_steps(session, tenant, thread_id, run_id, page)
    return ListResponse.of([RunStepObject.from_row(r, search_content) for r in rows], has_more).response()


@router.get("/threads/{thread_id}/runs/{run_id}/steps/{step_id}")
async def retrieve_run_step(thread_id: str, run_id: str, step_id: str, request: Request,
                            search_content: bool = Depends(include_param),
                            tenant: str = Depends(require_tenant)):
    async with request.app.state.db.read() as session:
        step = await service.get_step(session, tenant, thread_id, run_id, step_id)
    return RunStepObject.from_row(step, search_content).response()
