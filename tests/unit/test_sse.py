"""The run streams' SSE response (assistantd/api/sse.py), driven as ASGI with no server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from assistantd.api.sse import QueueStream


@dataclass
class Item:
    name: str
    final: bool = False
    broken: bool = False

    def frame(self) -> bytes:
        if self.broken:
            raise ValueError("cannot encode")
        return f"event: {self.name}\n\n".encode()


def _drive(stream: QueueStream, feed, disconnect_after: float | None = None) -> list[dict]:
    """Run ``stream`` as an ASGI app; ``feed(queue)`` runs beside it; the client disconnects
    after ``disconnect_after`` seconds (never when None). Returns what it sent."""
    sent: list[dict] = []

    async def main() -> None:
        gone = asyncio.Event()

        async def receive() -> dict:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        async def client() -> None:
            if disconnect_after is not None:
                await asyncio.sleep(disconnect_after)
                gone.set()

        feeding = asyncio.create_task(feed(stream.queue))
        leaving = asyncio.create_task(client())
        await asyncio.wait_for(stream({"type": "http"}, receive, send), 5)
        feeding.cancel()
        leaving.cancel()

    asyncio.run(main())
    return sent


def _bodies(sent: list[dict]) -> list[bytes]:
    return [m["body"] for m in sent if m["type"] == "http.response.body"]


def _stream(queue: asyncio.Queue, closed: list[int], ping: float = 15.0) -> QueueStream:
    return QueueStream(b"event: opening\n\n", queue, closing=b"event: done\n\n",
                       failed=lambda exc: f"event: error {exc}\n\n".encode(),
                       on_close=lambda: closed.append(1), ping_seconds=ping)


def test_waiting_items_go_out_in_one_write_and_the_final_one_ends_the_stream():
    closed: list[int] = []

    async def feed(queue: asyncio.Queue) -> None:
        await asyncio.sleep(0.01)
        queue.put_nowait(Item("a"))
        queue.put_nowait(Item("b"))
        await asyncio.sleep(0.01)
        for item in (Item("c"), Item("end", final=True), Item("after")):
            queue.put_nowait(item)

    sent = _drive(_stream(asyncio.Queue(), closed), feed)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in sent[0]["headers"]
    assert _bodies(sent) == [b"event: opening\n\n", b"event: a\n\nevent: b\n\n",
                             b"event: c\n\nevent: end\n\nevent: done\n\n"]
    assert [m.get("more_body") for m in sent[1:]] == [True, True, False]
    assert closed == [1]


def test_a_quiet_stream_is_pinged_and_a_busy_one_is_not():
    closed: list[int] = []

    async def quiet(queue: asyncio.Queue) -> None:
        await asyncio.sleep(0.25)
        queue.put_nowait(Item("end", final=True))

    bodies = _bodies(_drive(_stream(asyncio.Queue(), closed, ping=0.1), quiet))
    assert bodies[1:3] == [b": ping\n\n", b": ping\n\n"] and bodies[-1].endswith(b"event: done\n\n")

    async def busy(queue: asyncio.Queue) -> None:
        for i in range(10):
            await asyncio.sleep(0.03)
            queue.put_nowait(Item(f"e{i}"))
        queue.put_nowait(Item("end", final=True))

    bodies = _bodies(_drive(_stream(asyncio.Queue(), closed, ping=0.1), busy))
    assert b": ping\n\n" not in bodies, "a stream sending every 30 ms was pinged every 100 ms"
    assert closed == [1, 1]


def test_a_client_that_leaves_ends_the_stream_and_it_is_closed_once():
    closed: list[int] = []

    async def nothing(queue: asyncio.Queue) -> None:
        await asyncio.sleep(10)

    sent = _drive(_stream(asyncio.Queue(), closed), nothing, disconnect_after=0.05)
    assert _bodies(sent) == [b"event: opening\n\n"] and closed == [1]


def test_an_item_that_cannot_be_framed_ends_the_stream_saying_why():
    closed: list[int] = []

    async def feed(queue: asyncio.Queue) -> None:
        queue.put_nowait(Item("a"))
        queue.put_nowait(Item("bad", broken=True))
        queue.put_nowait(Item("never"))

    sent = _drive(_stream(asyncio.Queue(), closed), feed)
    assert _bodies(sent)[-1] == b"event: a\n\nevent: error cannot encode\n\nevent: done\n\n"
    assert sent[-1]["more_body"] is False and closed == [1]
