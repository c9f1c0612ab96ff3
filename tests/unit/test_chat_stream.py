"""A model turn's answer read by the run's own task (upstream/client.ChatStream), against a small
aiohttp model on loopback: its chunks, its end, and what interrupts it (a cancel, the deadline)
wherever the read is — waiting for the first chunk, waiting for the next, or not reading at all.
Each test runs on both transports: the wire module's connections, and aiohttp's client (what a
configured proxy uses)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from assistantd.upstream.client import END_OF_ANSWER, ChatStream, UpstreamClient, UpstreamError


WIRE = True


@pytest.fixture(autouse=True, params=["wire", "aiohttp"])
def transport(request):
    global WIRE
    WIRE = request.param == "wire"
    return request.param


class Stop(Exception):
    """What the tests interrupt a stream with (the executor uses RunCancelled)."""


def _chunk(text: str, finish: str | None = None) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def _model(request: web.Request) -> web.StreamResponse:
    """``stall_before`` seconds, then the words of ``say`` (``stall_after`` seconds between them),
    then the end (or, with ``break``, a broken connection): as the body's ``messages[0].content``
    says, JSON."""
    body = await request.json()
    if "messages" not in body:
        return web.json_response({"error": {"message": "no messages"}}, status=400)
    plan = json.loads(body["messages"][0]["content"])
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await asyncio.sleep(plan.get("stall_before", 0))
    try:
        for i, word in enumerate(plan["say"]):
            if i:
                await asyncio.sleep(plan.get("stall_after", 0))
            await response.write(_chunk(word))
        if plan.get("break"):  # the connection breaks mid-answer
            await asyncio.sleep(0.05)
            request.transport.abort()
            return response
        await response.write(_chunk("", "stop") + b"data: [DONE]\n\n")
        await asyncio.sleep(plan.get("stall_after_done", 0))  # (the body's end lags behind its [DONE])
        await response.write_eof()
    except ConnectionError:  # (the client gave up on the answer: what the tests do)
        pass
    return response


def _run(test, **plan_defaults):
    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", _model)
        runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        client = UpstreamClient(f"http://127.0.0.1:{port}/v1", None, connect_timeout=5, read_timeout=30, wire=WIRE)
        assert (client._wire is not None) == WIRE
        try:
            await test(client)
        finally:
            await client.aclose()
            await runner.cleanup()

    asyncio.run(main())


def _open(client: UpstreamClient, plan: dict, limit: float = 30) -> ChatStream:
    return client.open_chat({"model": "m", "messages": [{"role": "user", "content": json.dumps(plan)}]},
                            limit, "the turn's time is up")


def _stalled(where: str) -> dict:
    """A plan whose answer stalls before its first chunk, or after it."""
    return {"say": ["a", "b"], "stall_before": 5} if where == "first chunk" else {"say": ["a", "b"], "stall_after": 5}


async def _texts(stream: ChatStream) -> list[str]:
    texts = []
    while (chunk := await stream.next()) is not END_OF_ANSWER:
        texts.append(chunk["choices"][0]["delta"].get("content") or "")
    return texts


def test_the_answer_is_read_to_its_end_and_its_connection_reused():
    async def test(client: UpstreamClient) -> None:
        for _ in range(2):
            stream = _open(client, {"say": ["Hello", ", world"]})
            try:
                assert await _texts(stream) == ["Hello", ", world", ""]
                assert await stream.next() is END_OF_ANSWER
            finally:
                await stream.aclose()
        kept = len(client._wire._idle) if WIRE else len(client._http.connector._conns)
        assert kept == 1, "a connection read to its end goes back to the pool"

    _run(test)


@pytest.mark.parametrize("where", ["first chunk", "next chunk"])
def test_an_interrupt_ends_the_read_waiting_now(where: str):
    async def test(client: UpstreamClient) -> None:
        stream = _open(client, _stalled(where))
        try:
            if where == "next chunk":
                assert (await stream.next())["choices"][0]["delta"]["content"] == "a"
            asyncio.get_running_loop().call_later(0.1, stream.interrupt, Stop("cancelled"))
            started = time.monotonic()
            with pytest.raises(Stop):
                await stream.next()
            assert time.monotonic() - started < 2
        finally:
            await stream.aclose()

    _run(test)


def test_an_interrupt_while_not_reading_is_raised_by_the_next_read_even_with_chunks_waiting():
    async def test(client: UpstreamClient) -> None:
        stream = _open(client, {"say": ["a", "b", "c"]})
        try:
            assert (await stream.next())["choices"][0]["delta"]["content"] == "a"
            await asyncio.sleep(0.2)  # the rest of the answer has arrived meanwhile
            stream.interrupt(Stop("cancelled"))
            stream.interrupt(Stop("second"))  # the first interrupt wins
            with pytest.raises(Stop, match="cancelled"):
                await stream.next()
        finally:
            await stream.aclose()

    _run(test)


def test_what_came_before_a_broken_connection_is_read_even_after_the_break():
    async def test(client: UpstreamClient) -> None:
        stream = _open(client, {"say": ["a", "b", "c"], "break": True})
        try:
            assert (await stream.next())["choices"][0]["delta"]["content"] == "a"
            await asyncio.sleep(0.3)  # the rest of the answer, then the break, arrive meanwhile
            assert [(await stream.next())["choices"][0]["delta"]["content"] for _ in range(2)] == ["b", "c"]
            with pytest.raises(UpstreamError, match="connection to the model broke during its answer"):
                await stream.next()
        finally:
            await stream.aclose()

    _run(test)


@pytest.mark.parametrize("where", ["first chunk", "next chunk"])
def test_the_deadline_ends_the_answer(where: str):
    async def test(client: UpstreamClient) -> None:
        stream = _open(client, _stalled(where), limit=0.3)
        try:
            started = time.monotonic()
            with pytest.raises(UpstreamError, match="the turn's time is up"):
                await _texts(stream)
            assert time.monotonic() - started < 2
        finally:
            await stream.aclose()

    _run(test)


def test_a_dropped_answer_leaves_no_task_or_error_behind():
    async def test(client: UpstreamClient) -> None:
        errors: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        waiting = _open(client, {"say": ["a"], "stall_before": 5})
        failed = client.open_chat({"model": "m"}, 30, "late")  # (no messages: the model refuses it)
        await asyncio.sleep(0.2)
        before = len(asyncio.all_tasks())
        waiting.drop()
        failed.drop()
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert len(asyncio.all_tasks()) <= before - 2
        assert errors == []

    _run(test)


def _take_all_but(declined: set[str], taken: list[str]):
    """A ``take`` (the executor's sink) that takes every chunk but those whose text is in
    ``declined``, recording the texts it took."""

    def take(chunk: dict) -> bool:
        text = chunk["choices"][0]["delta"].get("content") or ""
        if text in declined:
            return False
        taken.append(text)
        return True

    return take


def test_chunks_taken_as_they_arrive_and_those_left_keep_their_order():
    async def test(client: UpstreamClient) -> None:
        words = ["a", "b", "c", "d", "e", "f"]
        stream = _open(client, {"say": words, "stall_after": 0.05})
        taken: list[str] = []
        stream.take = _take_all_but({"c"}, taken)
        seen: list[tuple[str, str]] = []
        try:
            while (chunk := await stream.next()) is not END_OF_ANSWER:
                seen.extend(("taken", t) for t in taken)
                taken.clear()
                text = chunk["choices"][0]["delta"].get("content") or ""
                seen.append(("read", text))
                if text == "c":
                    await asyncio.sleep(0.12)  # busy: what arrives meanwhile waits for the next read
        finally:
            await stream.aclose()
        seen.extend(("taken", t) for t in taken)
        assert [text for _, text in seen] == [*words, ""], "every chunk once, in order"
        assert seen[0] == ("read", "a"), "the first chunk is read by the turn's task"
        assert ("read", "c") in seen, "a chunk the sink leaves is read"
        if WIRE:  # (aiohttp's reader has no sink: every chunk is read)
            assert ("taken", "b") in seen, "a chunk was taken while the task waited"
            assert ("read", "d") in seen, "what came while the task was busy was read"

    _run(test)


def test_an_interrupt_while_chunks_are_being_taken_ends_the_answer():
    async def test(client: UpstreamClient) -> None:
        stream = _open(client, {"say": ["a", "b", "c", "d"], "stall_after": 0.1})
        taken: list[str] = []
        stream.take = _take_all_but(set(), taken)
        try:
            assert (await stream.next())["choices"][0]["delta"]["content"] == "a"
            asyncio.get_running_loop().call_later(0.15, stream.interrupt, Stop("cancelled"))
            with pytest.raises(Stop):
                while True:
                    await stream.next()
            count = len(taken)
            await asyncio.sleep(0.3)
            assert len(taken) == count, "nothing is taken after the interrupt"
        finally:
            await stream.aclose()

    _run(test)


def test_a_failing_sink_fails_the_read_after_what_came_before():
    async def test(client: UpstreamClient) -> None:
        stream = _open(client, {"say": ["a", "b", "c"], "stall_after": 0.05})

        def take(chunk: dict) -> bool:
            raise RuntimeError("the sink broke")

        stream.take = take
        try:
            assert (await stream.next())["choices"][0]["delta"]["content"] == "a"
            if WIRE:
                with pytest.raises(UpstreamError, match="Reading the model's answer failed"):
                    await stream.next()
            else:  # (no sink: read as usual)
                assert (await stream.next())["choices"][0]["delta"]["content"] == "b"
        finally:
            await stream.aclose()

    _run(test)


def test_a_break_after_taken_chunks_fails_the_answer():
    async def test(client: UpstreamClient) -> None:
        stream = _open(client, {"say": ["a", "b", "c"], "break": True, "stall_after": 0.05})
        taken: list[str] = []
        stream.take = _take_all_but(set(), taken)
        try:
            assert (await stream.next())["choices"][0]["delta"]["content"] == "a"
            with pytest.raises(UpstreamError, match="connection to the model broke during its answer"):
                while await stream.next() is not END_OF_ANSWER:
                    pass
            if WIRE:
                assert taken == ["b", "c"]
        finally:
            await stream.aclose()

    _run(test)


def test_an_answer_ends_at_its_done_even_when_the_body_ends_late():
    async def test(client: UpstreamClient) -> None:
        stream = _open(client, {"say": ["a", "b", "c"], "stall_after": 0.05, "stall_after_done": 5})
        taken: list[str] = []
        stream.take = _take_all_but(set(), taken)
        started = time.monotonic()
        try:
            while await stream.next() is not END_OF_ANSWER:
                pass
            assert time.monotonic() - started < 3, "given up on the body's end after DRAIN_SECONDS"
        finally:
            await stream.aclose()

    _run(test)
