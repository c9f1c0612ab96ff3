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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.responses import Response

log = logging.getLogger("assistantd")

HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
           (b"connection", b"keep-alive"), (b"x-accel-buffering", b"no")]
PING = object()  # put on the queue by the ping timer: send a comment
GONE = object()  # put on the queue when the client has gone: stop
PING_FRAME = b": ping\n\n"


class QueueStream(Response):
    """An ASGI response sending ``opening``, then each item of ``queue`` as its frame (an item
    has ``frame() -> bytes`` and ``final``; those waiting are sent together, in one write), until
    a ``final`` item, after which ``closing`` is sent. ``failed(exc)`` gives the frame that tells
    the client why the stream stops when making a frame fails; ``on_close()`` is called once,
    however the stream ends."""

    def __init__(self, opening: bytes, queue: asyncio.Queue, *, closing: bytes, failed: Callable[[Exception], bytes],
                 on_close: Callable[[], None], ping_seconds: float = 15.0) -> None:
        self.opening, self.queue, self.closing = opening, queue, closing
        self.failed, self.on_close, self.ping_seconds = failed, on_close, ping_seconds
        self.status_code, self.background = 200, None  # (what FastAPI looks at on a response)

    async def __call__(self, scope, receive, send) -> None:
        queue = self.queue
        loop = asyncio.get_running_loop()
        sent_at = [loop.time()]

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
                item = await queue.get()
                if item is GONE:
                    return
                parts, final = [], False
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
            timer.cancel()
            watcher.cancel()
            self.on_close()
