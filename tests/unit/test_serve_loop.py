"""``assistantd serve``'s uvicorn server wakes once a second, not ten times, and still stops at once
when told to (assistantd/cli.py ``_server_class``)."""

from __future__ import annotations

import asyncio
import time

import uvicorn

from assistantd.cli import _server_class


async def app(scope, receive, send) -> None:  # (never called: no socket is opened)
    raise AssertionError("not served")


def server() -> uvicorn.Server:
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    config.load()
    return _server_class()(config)


def test_the_loop_stops_as_soon_as_it_is_told():
    async def scenario() -> float:
        s = server()
        loop_task = asyncio.create_task(s.main_loop())
        await asyncio.sleep(0.3)
        assert not loop_task.done()
        started = time.monotonic()
        s.should_exit = True
        await asyncio.wait_for(loop_task, 2.0)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 0.1  # (uvicorn's own loop: up to 0.1 s; a 1 s tick: up to 1 s)


def test_told_before_it_starts_it_does_not_wait():
    async def scenario() -> None:
        s = server()
        s.should_exit = True
        await asyncio.wait_for(s.main_loop(), 0.1)

    asyncio.run(scenario())


def test_it_keeps_the_date_header_current_and_sleeps_between():
    async def scenario() -> tuple[list[bytes], int]:
        s = server()
        ticks = 0
        on_tick = s.on_tick

        async def counted(counter: int) -> bool:
            nonlocal ticks
            ticks += 1
            return await on_tick(counter)

        s.on_tick = counted
        loop_task = asyncio.create_task(s.main_loop())
        seen = []
        for _ in range(3):
            await asyncio.sleep(1.05)
            seen.append(dict(s.server_state.default_headers)[b"date"])
        s.should_exit = True
        await loop_task
        return seen, ticks

    dates, ticks = asyncio.run(scenario())
    assert len(set(dates)) == 3  # a new Date each second
    assert 4 <= ticks <= 6  # ~3.2 s: a tick a second (uvicorn's own: ~32), and the last one at the stop
