"""The chat stream's own HTTP/1.1 transport (upstream/wire.py) against a raw server on loopback
that writes its answers byte for byte: bodies framed every way HTTP/1.1 allows, kept and stale
connections, the read timeout, a refused connection, the pool's limit, a long line, TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path

import pytest

from assistantd.upstream.client import END_OF_ANSWER, UpstreamClient, UpstreamError


def _event(text: str, finish: str | None = None) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


ANSWER = _event("Hello") + _event(", world") + _event("", "stop") + b"data: [DONE]\n\n"
SSE = b"Content-Type: text/event-stream\r\n"


def chunked(body: bytes, pieces: int = 3) -> bytes:
    size = max(1, len(body) // pieces)
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


class RawModel:
    """Answers each request read on a connection with the next of ``answers`` (bytes after the
    status line's ``HTTP/1.1 200 OK\\r\\n``; a callable gets the writer and writes itself;
    None closes the connection unanswered).
    ``close_after``: close each connection after that many answers, without saying so."""

    def __init__(self, answers, close_after: int | None = None) -> None:
        self.answers, self.close_after = list(answers), close_after
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0)
                if answer is None:
                    break
                if callable(answer):
                    await answer(writer)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\n" + answer)
                    await writer.drain()
                served += 1
                if self.close_after is not None and served >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _run(model: RawModel, test, **options) -> None:
    async def main() -> None:
        server = await asyncio.start_server(model.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(f"http://127.0.0.1:{port}/v1", "sk-test", connect_timeout=options.get("connect", 5),
                                read_timeout=options.get("read", 30), max_connections=options.get("limit", 1024))
        assert client._wire is not None
        try:
            await test(client)
        finally:
            await client.aclose()
            server.close()

    asyncio.run(main())


async def _texts(client: UpstreamClient) -> list[str]:
    stream = client.open_chat({"model": "m", "messages": []}, 30, "late")
    try:
        texts = []
        while (chunk := await stream.next()) is not END_OF_ANSWER:
            texts.append(chunk["choices"][0]["delta"].get("content") or "")
        return texts
    finally:
        await stream.aclose()


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_an_answer_is_read_whole_and_its_connection_kept(framing: str):
    body = (b"Transfer-Encoding: chunked\r\n" + SSE + b"\r\n" + chunked(ANSWER)) if framing == "chunked" \
        else (b"Content-Length: %d\r\n" % len(ANSWER) + SSE + b"\r\n" + ANSWER)
    model = RawModel([body, body])

    async def test(client: UpstreamClient) -> None:
        for _ in range(2):
            assert await _texts(client) == ["Hello", ", world", ""]
        assert model.connections == 1
        assert len(client._wire._idle) == 1
        request = model.requests[0]
        assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"\r\nAuthorization: Bearer sk-test\r\n" in request
        assert json.loads(request.split(b"\r\n\r\n", 1)[1])["stream"] is True

    _run(model, test)


def test_a_body_ended_by_the_connection_closing_is_an_answer_when_it_finished():
    model = RawModel([SSE + b"\r\n" + ANSWER, SSE + b"\r\n" + _event("cut")], close_after=1)

    async def test(client: UpstreamClient) -> None:
        assert await _texts(client) == ["Hello", ", world", ""]
        with pytest.raises(UpstreamError, match="ended before it finished"):
            await _texts(client)
        assert model.connections == 2 and not client._wire._idle

    _run(model, test)


def test_a_kept_connection_the_model_closed_is_replaced_without_failing_the_turn():
    body = b"Transfer-Encoding: chunked\r\n" + SSE + b"\r\n" + chunked(ANSWER)
    model = RawModel([body, None, body])  # the second request finds its kept connection closing

    async def test(client: UpstreamClient) -> None:
        assert await _texts(client) == ["Hello", ", world", ""]
        assert len(client._wire._idle) == 1  # kept: nothing said it would close
        assert await _texts(client) == ["Hello", ", world", ""]
        assert model.connections == 2 and len(model.requests) == 3

    _run(model, test)


def test_a_model_that_goes_quiet_trips_the_read_timeout():
    async def stall(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + SSE + b"\r\n" + chunked(_event("a"), 1)[:-5])
        await writer.drain()
        await asyncio.sleep(5)

    model = RawModel([stall])

    async def test(client: UpstreamClient) -> None:
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamError, match="sent nothing for 0.3 s"):
            await _texts(client)
        assert 0.25 < asyncio.get_running_loop().time() - started < 2

    _run(model, test, read=0.3)


def test_a_refused_connection_fails_the_turn():
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        client = UpstreamClient(f"http://127.0.0.1:{port}/v1", None, connect_timeout=5, read_timeout=30,
                                max_connections=2)
        try:
            with pytest.raises(UpstreamError, match="Could not reach the model"):
                await _texts(client)
            assert client._wire.slots._value == 2, "a failed connection gives its slot back"
        finally:
            await client.aclose()

    asyncio.run(main())


def test_an_error_answer_gives_its_message_and_the_pool_its_slot():
    error = json.dumps({"error": {"message": "model overloaded", "type": "server_error"}}).encode()
    body = b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(error), error)

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\n" + body)
        await writer.drain()

    model = RawModel([answer])

    async def test(client: UpstreamClient) -> None:
        with pytest.raises(UpstreamError, match="model overloaded"):
            await _texts(client)
        assert client._wire.slots._value == 1

    _run(model, test, limit=1)


def test_the_pool_limit_holds_a_turn_until_a_connection_is_free():
    async def slow(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + SSE + b"\r\n")
        for piece in (_event("a"), _event("", "stop"), b"data: [DONE]\n\n"):
            await asyncio.sleep(0.2)
            writer.write(chunked(piece, 1)[:-5])
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    model = RawModel([slow, slow])

    async def test(client: UpstreamClient) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        ends = []

        async def one() -> None:
            assert await _texts(client) == ["a", ""]
            ends.append(loop.time() - started)

        await asyncio.gather(one(), one())
        assert model.connections == 1, "one connection at a time, reused"
        assert ends[1] > 1.0 > ends[0], "the second waited for the first's connection"

    _run(model, test, limit=1)


def test_a_long_line_arriving_in_many_reads_is_read_whole():
    text = "x" * (1024 * 1024)
    answer = _event(text) + _event("", "stop") + b"data: [DONE]\n\n"
    model = RawModel([b"Transfer-Encoding: chunked\r\n" + SSE + b"\r\n" + chunked(answer, 64)])

    async def test(client: UpstreamClient) -> None:
        assert await _texts(client) == [text, ""]

    _run(model, test)


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` (openssl's command line), and its key."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("trusted", [True, False])
def test_an_https_model_is_read_over_tls_and_its_certificate_checked(tmp_path: Path, trusted: bool):
    cert, key = _certificate(tmp_path)
    body = b"Transfer-Encoding: chunked\r\n" + SSE + b"\r\n" + chunked(ANSWER)
    model = RawModel([body])

    async def main() -> None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        server = await asyncio.start_server(model.handle, "127.0.0.1", 0, ssl=tls)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(f"https://localhost:{port}/v1", None, connect_timeout=5, read_timeout=30)
        if trusted:  # (the default context trusts the system's authorities; this test's certificate is its own)
            client._wire._ssl = ssl.create_default_context(cafile=str(cert))
        try:
            if trusted:
                assert await _texts(client) == ["Hello", ", world", ""]
                assert f"\r\nHost: localhost:{port}\r\n".encode() in model.requests[0]
            else:
                with pytest.raises(UpstreamError, match="Could not reach the model"):
                    await _texts(client)
                assert model.requests == []
        finally:
            await client.aclose()
            server.close()

    asyncio.run(main())
