"""A lean server-sent-events response for the run streams: frames from a queue, as they come.

Why not sse-starlette's ``EventSourceResponse`` here: a run's stream sends a frame per token, and
that response runs four tasks per stream (the body, pings, the disconnect listener, a shutdown
listener that polls twice a second) and a cancel scope around every send. This one is a single
loop over the queue the run's events already arrive on: a timer puts a ping on the queue when the
stream has been quiet for ``ping_seconds``, and one task waiting for the client's disconnect puts
a marker on it, so the loop never waits on anything but its queue.

Shutdown: uvicorn stops accepting connections and lets open responses finish for up to
``timeout_graceful_shutdown`` seconds (5, ``assistantd serve``), so a stream whose run ends within
that time ends whole; one still open then is cut, and its run is handed back to be resumed.

Tokens: while a stream waits for its next event, an event put on its queue (a :class:`StreamQueue`)
is framed by the ``put_nowait`` call itself — the run's executor publishing it — and the frames put
in one turn of the event loop go out in one write at its end (:func:`send_now`): the stream's own
task wakes only for the events that end it, for pings, and when the client reads slowly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from starlette.responses import Response

log = logging.getLogger("assistantd")

HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
           (b"connection", b"keep-alive"), (b"x-accel-buffering", b"no")]
PING = object()  # put on the queue by the ping timer: send a comment
GONE = object()  # put on the queue when the client has gone: stop
PING_FRAME = b": ping\n\n"


class StreamQueue(asyncio.Queue):
    """The queue a :class:`QueueStream` reads. While the stream is idle, ``sink(item)`` takes what
    is put (returning False leaves it to the queue, and to the stream's task)."""

    sink: Callable[[Any], bool] | None = None

    def put_nowait(self, item: Any) -> None:
        sink = self.sink
        if sink is None or not sink(item):
            super().put_nowait(item)


def send_now(send: Callable[[dict], Awaitable[None]], message: dict) -> asyncio.Task | None:
    """Call the ASGI ``send`` from code that cannot await: None when it completed without
    waiting, as uvicorn's does unless the client's socket buffer is full; else the task that
    finishes it (the coroutine goes on from where it waited, as if awaited by that task: what
    Python 3.12's eager tasks do, in a few lines)."""
    coro = send(message)
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_finish(coro, waiting))


async def _finish(coro: Coroutine, waiting: Any) -> Any:
    return await _Resumed(coro, waiting)


class _Resumed:
    """Awaiting it drives ``coro`` on from the future it was waiting for (``waiting``)."""

    def __init__(self, coro: Coroutine, waiting: Any) -> None:
        self.coro, self.waiting = coro, waiting

    def __await__(self):
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                value = yield waiting
            except BaseException as exc:
                try:
                    waiting = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = coro.send(value)
                except StopIteration as stop:
                    return stop.value


class QueueStream(Response):
    """An ASGI response sending ``opening``, then each item of ``queue`` as its frame (an item
    has ``frame() -> bytes`` and ``final``; those waiting are sent together, in one write), until
    a ``final`` item, after which ``closing`` is sent. ``failed(exc)`` gives the frame that tells
    the client why the stream stops when making a frame fails; ``on_close()`` is called once,
    however the stream ends."""

    def __init__(self, opening: bytes, queue: StreamQueue, *, closing: bytes, failed: Callable[[Exception], bytes],
                 on_close: Callable[[], None], ping_seconds: float = 15.0) -> None:
        self.opening, self.queue, self.closing = opening, queue, closing
        self.failed, self.on_close, self.ping_seconds = failed, on_close, ping_seconds
        self.status_code, self.background = 200, None  # (what FastAPI looks at on a response)

    async def __call__(self, scope, receive, send) -> None:
        queue = self.queue
        loop = asyncio.get_running_loop()
        sent_at = [loop.time()]
        held: list[bytes] = []  # frames the sink made, to go out at the end of the loop's turn
        sending: asyncio.Task | None = None  # the sink's write that had to wait for the client

        def sink(item: Any) -> bool:
            """An item put while the stream's task waits: framed now, or left to the task (an
            end, a ping, an item that cannot be framed), which then takes what follows too."""
            if item is not PING and item is not GONE and not item.final:
                try:
                    frame = item.frame()
                except Exception:
                    pass
                else:
                    held.append(frame)
                    if len(held) == 1:
                        loop.call_soon(flush)
                    return True
            queue.sink = None
            return False

        def flush() -> None:
            nonlocal sending
            if not held or queue.sink is None:  # (the stream's task woke, and takes them)
                return
            body = b"".join(held)
            held.clear()
            sent_at[0] = loop.time()
            try:
                sending = send_now(send, {"type": "http.response.body", "body": body, "more_body": True})
            except Exception:
                log.exception("writing to an event stream failed")
                queue.sink = None
                queue.put_nowait(GONE)
                return
            if sending is not None:  # the client reads slowly: what comes next waits, in order
                queue.sink = None

        def ping() -> None:
            nonlocal timer
            quiet = loop.time() - sent_at[0]
            if quiet >= self.ping_seconds:
                queue.put_nowait(PING)
                quiet = 0.0
            timer = loop.call_later(self.ping_seconds - quiet, ping)

        async def watch() -> None:
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # (the server can no longer tell: the stream is as good as gone)
                pass
            queue.put_nowait(GONE)

        timer = loop.call_later(self.ping_seconds, ping)
        watcher = loop.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": self.opening, "more_body": True})
            while True:
                queue.sink = sink  # (only while the queue is empty: get() waits, nothing else runs first)
                item = await queue.get()
                queue.sink = None
                if sending is not None:
                    waited, sending = sending, None
                    await waited
                if item is GONE:
                    return
                parts, final = held[:], False  # (framed before this item was put)
                held.clear()
                while True:
                    if item is PING:
                        parts.append(PING_FRAME)
                    elif item is not GONE:
                        try:
                            parts.append(item.frame())
                            final = item.final
                        except Exception as exc:  # the run goes on; this stream says why it stops
                            log.exception("run event stream failed")
                            parts.append(self.failed(exc))
                            final = True
                    if final or item is GONE or queue.empty():
                        break
                    item = queue.get_nowait()
                if final:
                    parts.append(self.closing)
                sent_at[0] = loop.time()
                await send({"type": "http.response.body", "body": b"".join(parts), "more_body": not final})
                if final or item is GONE:
                    return
        finally:
            queue.sink = None
            timer.cancel()
            watcher.cancel()
            if sending is not None and not sending.done():
                sending.cancel()
            self.on_close()
