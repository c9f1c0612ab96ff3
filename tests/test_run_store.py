"""runs/store.py against a real database (each backend): a run's status moves only as the
transition table allows, as a compare-and-set, and its events go out only after the commit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from assistantd import ids
from assistantd.db import Database
from assistantd.db.models import Run, RunStep, Thread
from assistantd.runs.events import LocalEventBus
from assistantd.runs.states import IllegalTransition, RunStatus, StepStatus
from assistantd.runs.store import RunStore, new_step


def _on(url: str, scenario: Callable[[RunStore], Awaitable[None]]) -> None:
    async def run() -> None:
        db = Database(url)
        try:
            await scenario(RunStore(db, LocalEventBus()))
        finally:
            await db.dispose()

    asyncio.run(run())


def _run(thread: Thread, status: RunStatus = RunStatus.QUEUED) -> Run:
    now = ids.now()
    return Run(id=ids.new_id("run_"), tenant="t", created_at=now, thread_id=thread.id, assistant_id="asst_x",
               status=status.value, required_action=None, last_error=None, expires_at=now + 600, started_at=None,
               cancelled_at=None, failed_at=None, completed_at=None, incomplete_details=None, model="m",
               instructions="", tools=[], tool_resources={}, metadata_={}, usage=None, temperature=None,
               top_p=None, max_prompt_tokens=None, max_completion_tokens=None,
               truncation_strategy={"type": "auto", "last_messages": None}, tool_choice=None,
               parallel_tool_calls=True, response_format=None, reasoning_effort=None, history_seq=0,
               worker=None, lease_until=None, include_search_content=False)


async def _queued_run(store: RunStore) -> Run:
    thread = Thread(id=ids.new_id("thread_"), tenant="t", created_at=ids.now(), tool_resources={}, metadata_={})
    run = _run(thread)
    async with store.writing() as writes:
        writes.session.add(thread)
        await writes.session.flush()
        await writes.insert(run)
    return run


def _names(queue: asyncio.Queue) -> list[str]:
    names = []
    while not queue.empty():
        names.append(queue.get_nowait().name)
    return names


def test_a_move_is_checked_persisted_and_emitted_after_the_commit(migrated_url):
    async def scenario(store: RunStore) -> None:
        run = await _queued_run(store)
        watching = store.bus.subscribe(run.id)
        async with store.writing() as writes:
            assert await writes.move(run, RunStatus.IN_PROGRESS, worker="w", lease_until=1.0)
            assert _names(watching.queue) == [], "an event went out before its transaction committed"
        assert _names(watching.queue) == ["thread.run.in_progress"]
        assert (run.status, run.worker) == ("in_progress", "w")

        with pytest.raises(IllegalTransition):
            async with store.writing() as writes:
                await writes.move(run, RunStatus.QUEUED)  # in_progress → queued is not in the table

        # A transaction that fails publishes nothing and leaves the run as it was.
        with pytest.raises(RuntimeError):
            async with store.writing() as writes:
                assert await writes.move(run, RunStatus.CANCELLING)
                raise RuntimeError("the request failed after the move")
        assert _names(watching.queue) == []
        async with store.writing() as writes:
            assert (await writes.fresh(run)).status == RunStatus.IN_PROGRESS

    _on(migrated_url, scenario)


def test_a_move_from_a_status_the_run_has_left_writes_nothing(migrated_url):
    """Compare and set: two processes (or a request and an executor) that saw the same status
    cannot both move the run from it."""
    async def scenario(store: RunStore) -> None:
        run = await _queued_run(store)
        async with store.writing() as writes:
            stale = _run(Thread(id=run.thread_id), RunStatus.QUEUED)
            stale.seq, stale.id = run.seq, run.id
            assert await writes.move(run, RunStatus.IN_PROGRESS)
        watching = store.bus.subscribe(run.id)
        async with store.writing() as writes:
            assert not await writes.move(stale, RunStatus.CANCELLED), "a stale compare-and-set matched"
        assert _names(watching.queue) == [] and stale.status == RunStatus.QUEUED
        async with store.writing() as writes:
            assert (await writes.fresh(run)).status == RunStatus.IN_PROGRESS

    _on(migrated_url, scenario)


def test_ending_a_run_ends_its_open_steps_first_and_announces_the_run_last(migrated_url):
    async def scenario(store: RunStore) -> None:
        run = await _queued_run(store)
        async with store.writing() as writes:
            await writes.move(run, RunStatus.IN_PROGRESS, worker="w", lease_until=1.0)
            step = new_step(run, "tool_calls", {"type": "tool_calls", "tool_calls": []})
            await writes.insert(step)
        watching = store.bus.subscribe(run.id)
        async with store.writing() as writes:
            assert await writes.end(run, RunStatus.FAILED,
                                    last_error={"code": "invalid_prompt", "message": "no"})
        assert _names(watching.queue) == ["thread.run.step.failed", "thread.run.failed"]
        assert (run.worker, run.lease_until, run.required_action) == (None, None, None) and run.failed_at
        async with store.db.read() as session:
            stored = await session.get(RunStep, step.seq)
        # A step's last_error allows fewer codes than a run's.
        assert (stored.status, stored.last_error) == (StepStatus.FAILED, {"code": "server_error", "message": "no"})

    _on(migrated_url, scenario)
