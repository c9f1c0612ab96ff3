"""The chat-completions client every run turn goes through (CONTRACT.md, "How runs talk to the
upstream model"): one streamed ``POST {base}/chat/completions`` per model turn.

Chunks are yielded as plain dicts, straight from the wire: a run relays them token by token,
so no per-chunk model validation sits on that path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import orjson
import yarl

from assistantd.api.text import repair
from assistantd.runs.failures import RunFailure
from assistantd.upstream.wire import Answer, HTTP1Pool

log = logging.getLogger("assistantd.upstream")


CONNECT_RETRIES = 2
# How long an idle connection is kept for the next turn: under uvicorn's 5 s (the usual
# OpenAI-compatible server's), so that the upstream rarely closes one just as it is reused.
KEEPALIVE_SECONDS = 4.0
DRAIN_SECONDS = 1.0  # how long the end of a body may lag behind its [DONE]
END_OF_ANSWER = object()  # what ChatStream.next gives once the answer is over
ERROR_BODY_BYTES = 64 * 1024  # of an error answer's body, read for its message
DETAIL_CHARS = 300  # of the upstream's own error message, shown in last_error


BodyReader = Any  # an answer's body: a wire.Answer, or aiohttp's StreamReader (``readany``, ``set_exception``)


class UpstreamError(RunFailure):
    """The upstream failed; ``code`` is the run's ``last_error.code``. The message says what
    kind of failure it was, never what the request held (details go to the server log)."""


class UpstreamClient:
    """Every turn of every run streams its answer through one pool of keep-alive connections
    (:mod:`assistantd.upstream.wire`); one aiohttp session serves upstream embeddings, and every
    request when a proxy is configured (``HTTPS_PROXY``/``HTTP_PROXY``), or ``wire=False``.

    Not httpx on this path: a streamed turn is read chunk by chunk, and httpx/httpcore's reader
    costs over twice aiohttp's per chunk (measured with the fake model's paced stream: 5.3 ms of
    CPU per 21-chunk answer against 2.3 ms), which costs more than the wire module's.
    """

    def __init__(self, base_url: str, api_key: str | None, *, connect_timeout: float,
                 read_timeout: float, max_connections: int = 1024,
                 max_line_bytes: int = 4 * 1024 * 1024, wire: bool = True) -> None:
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # Full URLs parsed once, not on every request.
        self._chat_url = yarl.URL(base_url.rstrip("/") + "/chat/completions")
        self._embeddings_url = yarl.URL(base_url.rstrip("/") + "/embeddings")
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._max_line = max_line_bytes
        self._max_connections = max_connections
        self._proxy = _proxy_for(self._chat_url)
        self._session: aiohttp.ClientSession | None = None
        self._wire = HTTP1Pool(self._chat_url, connect_timeout=connect_timeout, read_timeout=read_timeout,
                               limit=max_connections, keepalive=KEEPALIVE_SECONDS) \
            if wire and self._proxy is None else None
        self._wire_headers = {**self._headers, "Accept": "*/*", "User-Agent": "assistantd"}

    @property
    def _http(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop it belongs to.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=KEEPALIVE_SECONDS),
                timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout, sock_read=self._read_timeout),
                proxy=self._proxy,
            )
        return self._session

    async def aclose(self) -> None:
        if self._wire is not None:
            await self._wire.aclose()
        if self._session is not None:
            await self._session.close()

    async def stream_chat(self, body: dict[str, Any],
                          reading: ChatStream | None = None) -> AsyncIterator[dict[str, Any]]:
        """Yield the chunks of one streamed completion; raise :class:`UpstreamError` on failure.

        Each chunk yielded has the shape the executor reads (see :func:`_check`), its text
        repaired; the stream is only over once it said so (a ``finish_reason`` or ``[DONE]``).
        A connection that fails before the answer starts (typically a pooled keep-alive
        connection the upstream had just closed) is retried; once a chunk has been relayed,
        a failure ends the run, since the client has already seen part of the answer.
        ``reading``: the :class:`ChatStream` reading it, told each answer's body reader before it
        is read (it interrupts a read through it), and whose ``sink`` may take chunks as they
        arrive (see :meth:`_pushed`).
        """
        payload = _json_bytes({**body, "stream": True, "stream_options": {"include_usage": True}})
        started = False
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                async for chunk in self._stream_once(payload, body, reading):
                    started = True
                    yield chunk
                return
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                if started or attempt == CONNECT_RETRIES:
                    log.warning("the model's connection failed: %r", exc)
                    what = "The connection to the model broke during its answer" if started \
                        else "Could not reach the model"
                    raise UpstreamError("server_error", f"{what} ({type(exc).__name__}).") from exc

    def open_chat(self, body: dict[str, Any], limit: float, expired: str) -> ChatStream:
        """Send a turn's request now; its chunks are read from the :class:`ChatStream` returned,
        which ends the answer with :class:`UpstreamError` (``expired``) after ``limit`` seconds."""
        return ChatStream(self, body, limit, expired)

    async def _stream_once(self, payload: bytes, body: dict[str, Any],
                           reading: ChatStream | None) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._chat_answer(payload) as (status, headers, content):
                if status >= 400:
                    raise _error_for(status, await _read_some(content), body)
                if status != 200:
                    raise UpstreamError("server_error", f"The model answered HTTP {status}, not a stream.")
                content_type = headers.get("content-type")  # (aiohttp's headers: any case)
                if content_type is None or content_type.partition(";")[0].strip().lower() != "text/event-stream":
                    shown = f"content-type {repair(content_type[:100])}" if content_type else "no content-type"
                    raise UpstreamError("server_error", f"The model's answer was not an event stream ({shown}).")
                reader = ChunkReader(self._max_line, body)
                if reading is not None:
                    reading.on_body(content)
                    if isinstance(content, Answer):
                        async for chunk in _pushed(reader, content, reading):
                            yield chunk
                        return
                try:
                    while data := await content.readany():
                        for chunk in reader.feed(data):
                            yield chunk
                        if reader.done:
                            await _drain(content)
                            return
                except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
                    # What the model sent before its connection broke still counts (the run
                    # shows it, incomplete), however late the run reads it.
                    for chunk in reader.feed(_received(content)):
                        yield chunk
                    if reader.done:
                        return
                    raise
                reader.check_end()
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise UpstreamError("server_error", f"Could not connect to the model within {self._connect_timeout:g} s "
                                                    "(ASSISTANTD_UPSTREAM_CONNECT_TIMEOUT).") from exc
            if isinstance(exc, aiohttp.SocketTimeoutError):
                raise UpstreamError("server_error", f"The model sent nothing for {self._read_timeout:g} s "
                                                    "(ASSISTANTD_UPSTREAM_READ_TIMEOUT).") from exc
            if isinstance(exc, TimeoutError):
                raise UpstreamError("server_error", f"The model did not answer in time ({type(exc).__name__}).") from exc
            raise  # (stream_chat retries it if nothing was relayed yet)
        except aiohttp.ClientError as exc:
            log.warning("the model's request failed: %r", exc)
            raise UpstreamError("server_error", f"Could not reach the model ({type(exc).__name__}).") from exc

    @contextlib.asynccontextmanager
    async def _chat_answer(self, payload: bytes) -> AsyncIterator[tuple[int, Any, Any]]:
        """The answer to a chat request: its status, its headers (read by lower-case name), its
        body's reader (``readany``, ``at_eof``, ``set_exception``)."""
        wire = self._wire
        if wire is not None:
            answer = await wire.post(wire.request(payload, self._wire_headers))
            try:
                yield answer.status, answer.headers, answer
            finally:
                answer.release()
        else:
            async with self._http.post(self._chat_url, data=payload, headers=self._headers) as response:
                yield response.status, response.headers, response.content

    async def embeddings(self, model: str, inputs: list[str]) -> list[list[float]]:
        try:
            async with self._http.post(self._embeddings_url, data=_json_bytes({"model": model, "input": inputs}),
                                       headers=self._headers) as response:
                if response.status >= 400:
                    raise _error_for(response.status, await _read_some(response.content), {"input": inputs})
                answer = json.loads(await response.read())
        except aiohttp.ClientError as exc:
            raise UpstreamError("server_error", f"Could not reach the embeddings model ({type(exc).__name__}).") from exc
        data = sorted(answer["data"], key=lambda d: d["index"])
        return [d["embedding"] for d in data]


class ChatStream:
    """One model turn's answer, read by the run's own task: ``await next()`` gives its chunks,
    then :data:`END_OF_ANSWER`.

    The request goes out when the stream is made, and a task of its own waits for the first
    chunk (the run may still be committing its start meanwhile: :meth:`RunExecutor.send_early`);
    every later chunk is read by whoever calls :meth:`next`, with no task or queue between the
    model's connection and the run — or, on the wire transport, taken as it arrives by ``take``
    (the run's sink) while :meth:`next` waits, with no task woken at all (see :func:`_pushed`).
    :meth:`interrupt` ends the answer from outside (a cancel, the turn's deadline): the read in
    progress, or the next one, raises the exception given — only a read, never the run's own
    work between two reads, which is why it goes through the body's reader (its
    ``set_exception``, as aiohttp's own ``StreamReader`` takes a broken connection's error)
    rather than through the task; nothing is taken after it. Always :meth:`aclose` (or
    :meth:`drop`) it: its connection goes back to the pool, or is closed mid-answer.
    """

    def __init__(self, client: UpstreamClient, body: dict[str, Any], limit: float, expired: str) -> None:
        self._failure: BaseException | None = None
        self._body: BodyReader | None = None
        # While the run's task waits in next(): takes a chunk as it arrives (True), or leaves it
        # to be returned by next() (False), and every later one with it (see _pushed).
        self.take: Callable[[dict[str, Any]], bool] | None = None
        self.sink: Callable[[dict[str, Any]], bool] | None = None  # take, while next() waits
        self._chunks = client.stream_chat(body, self)
        loop = asyncio.get_running_loop()
        self._first: asyncio.Task | None = loop.create_task(self._first_chunk())
        self._deadline = loop.call_later(limit, lambda: self.interrupt(UpstreamError("server_error", expired)))

    async def _first_chunk(self) -> Any:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            return END_OF_ANSWER

    def on_body(self, body: BodyReader) -> None:
        self._body = body
        if self._failure is not None:
            body.set_exception(self._failure)

    def interrupt(self, exc: BaseException) -> None:
        """End the answer with ``exc``: the read waiting now raises it, or the next one does
        (the first to come wins; the request is given up on, network only)."""
        if self._failure is not None:
            return
        self._failure = exc
        self.sink = None
        if self._body is not None:
            self._body.set_exception(exc)
        if self._first is not None and not self._first.done():
            self._first.cancel()

    async def next(self) -> Any:
        """The answer's next chunk (a dict), or :data:`END_OF_ANSWER`; raises the interrupting
        exception, or :class:`UpstreamError`."""
        try:
            first, self._first = self._first, None
            if first is not None:
                if not first.done():
                    await asyncio.wait((first,))
                if self._failure is None:
                    return first.result()
                if not first.cancelled():
                    first.exception()  # (retrieved: the interrupt is what the read raises)
            if self._failure is not None:
                raise self._failure
            self.sink = self.take
            try:
                return await anext(self._chunks)
            finally:
                self.sink = None
        except StopAsyncIteration:
            return END_OF_ANSWER
        except Exception as exc:
            if exc is self._failure or isinstance(exc, UpstreamError):
                raise
            log.exception("reading the model's answer failed")
            raise UpstreamError("server_error", f"Reading the model's answer failed "
                                                f"({type(exc).__name__}); see the server log.") from None

    async def aclose(self) -> None:
        """Stop reading: the connection goes back to the pool if the answer was read to its end."""
        self._deadline.cancel()
        first, self._first = self._first, None
        if first is not None:
            if not first.done():
                first.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await first
        with contextlib.suppress(Exception):
            await self._chunks.aclose()

    def drop(self) -> None:
        """:meth:`aclose` it from where nothing can await (an answer whose turn never came)."""
        self._deadline.cancel()
        asyncio.get_running_loop().create_task(self.aclose())


class ChunkReader:
    """The chunks of a chat-completions event stream, from its bytes as they arrive.

    SSE lines are split from the raw bytes (no text decoding pass; json.loads takes bytes): this
    runs once per token of every run. A line's start is held as pieces until its end arrives
    (joined once: no quadratic re-copying), and no longer than ``max_line`` bytes.
    """

    def __init__(self, max_line: int, request: dict[str, Any] | None = None) -> None:
        self.max_line, self.request = max_line, request
        self.done = False  # [DONE] was read
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._chunks = self._finished = False

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """The chunks whose lines ``data`` completes (none after ``[DONE]``), each yielded before
        the next line is read: what the model said before a malformed line still counts."""
        if self.done:
            return
        lines = data.split(b"\n")
        if self._held:  # the read goes on the held line
            self._held.append(lines[0])
            self._held_bytes += len(lines[0])
            if self._held_bytes > self.max_line:
                raise self._too_long()
            if len(lines) == 1:  # and does not end it
                return
            lines[0] = b"".join(self._held)
            self._held, self._held_bytes = [], 0
        rest = lines.pop()
        if rest:
            if len(rest) > self.max_line:
                raise self._too_long()
            self._held, self._held_bytes = [rest], len(rest)
        for line in lines:
            if len(line) > self.max_line:  # one read can hold a whole long line
                raise self._too_long()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                if not self._chunks:
                    raise UpstreamError("server_error", "The model's answer was empty.")
                self.done = True
                return
            try:
                chunk = orjson.loads(payload)
            except ValueError:
                chunk = _loads_lenient(payload)
            if type(chunk) is dict and "error" in chunk:
                log.warning("the model reported an error in its stream: %.2000s", payload)
                raise UpstreamError("server_error", _reported("The model reported an error", chunk, self.request))
            if _check(chunk):
                self._finished = True
            self._chunks = True
            yield chunk

    def check_end(self) -> None:
        """The body ended without [DONE]: complete only if the answer said it was over (some
        servers send no [DONE]); else it was cut off, however cleanly it closed."""
        if not self._chunks:
            raise UpstreamError("server_error", "The model's answer was empty.")
        if not self._finished:
            raise UpstreamError("server_error", "The model's stream ended before it finished "
                                                "(no finish_reason, no [DONE]).")

    def _too_long(self) -> UpstreamError:
        return UpstreamError("server_error", f"The model's stream held a line longer than {self.max_line} bytes "
                                             "(ASSISTANTD_UPSTREAM_MAX_LINE_BYTES).")


def _proxy_for(url: yarl.URL) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``, ``NO_PROXY``),
    as httpx and the openai SDK honour them. Read once: aiohttp's own ``trust_env`` reads the
    environment (and ``~/.netrc``) again for every request, in a worker thread."""
    if url.host is None or urllib.request.proxy_bypass(url.host):
        return None
    return urllib.request.getproxies().get(url.scheme)


def _loads_lenient(payload: bytes) -> Any:
    """A chunk orjson refused: the stdlib's parser takes what JSON allows and orjson does not
    (an escaped lone surrogate, ``\\ud800``, which :func:`_check` then repairs)."""
    try:
        return json.loads(payload)
    except ValueError:
        raise UpstreamError("server_error", "The model's stream was malformed: a chunk is not JSON.") from None


def _json_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # (orjson refuses what the stdlib writes: lone surrogates, non-str keys)
        return json.dumps(value).encode()


PENDING_CHUNKS = 256  # chunks parsed and waiting for the run's task, beyond which the connection stops reading


async def _pushed(reader: ChunkReader, answer: Answer, reading: ChatStream) -> AsyncIterator[dict[str, Any]]:
    """An answer's chunks, parsed as its bytes arrive (in the connection's ``data_received``) and
    offered to ``reading.sink`` while the run's task waits for the next one: a token the sink
    takes (the run's text going on) is relayed with no task woken. What it leaves, and whatever
    comes after that, is yielded in order; so is what arrives while no sink is set (the run's
    task busy, or the first chunk, which the turn's own task reads). What was parsed before an
    error or a break still comes first, as from the pulling reader (an interrupt wins at once:
    :meth:`ChatStream.next` raises it before reading).

    (``stream_chat`` retries a connection that failed before a chunk was yielded: the first
    chunk always is, since a sink is set only once :meth:`ChatStream.next` has had it.)"""
    pending: deque[dict[str, Any]] = deque()
    failed: list[BaseException] = []

    def on_data(data: bytes) -> bool:
        if failed:
            return True
        try:
            for chunk in reader.feed(data):
                sink = reading.sink
                if pending or sink is None or not sink(chunk):
                    pending.append(chunk)
        except Exception as exc:  # (the reader's, or the sink's: raised by the run's task)
            failed.append(exc)
            return False
        if len(pending) > PENDING_CHUNKS:
            answer.pause()
        return not pending and not reader.done  # ([DONE]: the reader drains the body's end, within DRAIN_SECONDS)

    answer.take(on_data)
    try:
        while True:
            while pending:
                yield pending.popleft()
            if failed:
                raise failed[0]
            if reader.done:
                answer.take(None)
                await _drain(answer)
                return
            if not await answer.wait():
                reader.check_end()
                return
    finally:
        answer.take(None)


def _received(content: BodyReader) -> bytes:
    """The bytes a broken connection's body had received and not yet given out: aiohttp raises
    the break (``set_exception``) ahead of them, in every read, so they are taken from its buffer
    (private: a unit test pins it, tests/unit/test_chat_stream.py)."""
    if not isinstance(content, aiohttp.StreamReader):  # (the wire module's reader gives them before the break)
        return b""
    try:
        return content._read_nowait(-1) if content._buffer else b""
    except Exception:  # (not a reader of this aiohttp's shape)
        log.exception("reading what a broken connection had received failed")
        return b""


async def _drain(content: Any) -> None:
    """Read what follows ``[DONE]`` (the end of the chunked body, normally already received).

    A connection goes back to the pool only when its response was read to its end; leaving the
    stream at ``[DONE]`` would close it, and every model turn would pay a new TCP connection. An
    upstream that keeps the body open after ``[DONE]`` is given up on after a moment (the
    connection is then closed).
    """
    if content.at_eof():  # (as usual: the body's end came with [DONE])
        return
    # The answer is complete: a connection that breaks now costs nothing but itself.
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while await content.readany():
                pass


def _malformed(what: str) -> UpstreamError:
    return UpstreamError("server_error", f"The model's stream was malformed: {what}.")


def _check(chunk: Any) -> bool:
    """Check that ``chunk`` has the shape the executor reads, and repair its text in place (a
    JSON ``\\ud800`` escape decodes to a lone surrogate, which nothing can store or send on);
    True when it ends a choice. Cheap on purpose: a handful of type checks per token."""
    if type(chunk) is not dict:
        raise _malformed("a chunk is not a JSON object")
    finished = False
    choices = chunk.get("choices")
    if choices is not None:
        if type(choices) is not list:
            raise _malformed("a chunk's choices are not a list")
        for choice in choices:
            if type(choice) is not dict:
                raise _malformed("a choice is not an object")
            delta = choice.get("delta")
            if delta is not None:
                if type(delta) is not dict:
                    raise _malformed("a choice's delta is not an object")
                content = delta.get("content")
                if content is not None:
                    if type(content) is not str:
                        raise _malformed("a delta's content is not a string")
                    if not content.isascii():
                        delta["content"] = repair(content)
                calls = delta.get("tool_calls")
                if calls is not None:
                    if type(calls) is not list:
                        raise _malformed("a delta's tool_calls are not a list")
                    for call in calls:
                        _check_call(call)
            reason = choice.get("finish_reason")
            if reason is not None:
                if type(reason) is not str:
                    raise _malformed("a choice's finish_reason is not a string")
                finished = True
    usage = chunk.get("usage")
    if usage is not None:
        if type(usage) is not dict or not all(
                type(usage.get(k, 0)) in (int, float) or usage.get(k) is None
                for k in ("prompt_tokens", "completion_tokens")):
            raise _malformed("its usage is not an object of token counts")
    return finished


def _check_call(call: Any) -> None:
    if type(call) is not dict:
        raise _malformed("a tool call is not an object")
    if type(call.get("index", 0)) is not int:
        raise _malformed("a tool call's index is not an integer")
    function = call.get("function")
    if function is None:
        return
    if type(function) is not dict:
        raise _malformed("a tool call's function is not an object")
    for key in ("name", "arguments"):
        value = function.get(key)
        if value is not None:
            if type(value) is not str:
                raise _malformed(f"a tool call's {key} is not a string")
            if not value.isascii():
                function[key] = repair(value)


async def _read_some(content: Any, limit: int = ERROR_BODY_BYTES) -> bytes:
    """The start of an error answer's body (an upstream may answer an error with any amount)."""
    kept, size = [], 0
    while size < limit:
        data = await content.readany()
        if not data:
            break
        kept.append(data)
        size += len(data)
    return b"".join(kept)[:limit]


def _error_for(status: int, content: bytes, request: dict[str, Any] | None) -> UpstreamError:
    code = "rate_limit_exceeded" if status == 429 else "server_error"
    log.warning("the model returned HTTP %s: %.2000s", status, content.decode("utf-8", "replace"))
    try:
        payload = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace").strip()
        # A short plain-text reason is worth showing; an HTML error page is not.
        payload = {"error": text} if text and len(text) <= DETAIL_CHARS and "<" not in text else None
    return UpstreamError(code, _reported(f"The model returned HTTP {status}", payload, request))


def _reported(what: str, payload: Any, request: dict[str, Any] | None) -> str:
    """``what``, with the start of the upstream's own error message unless that quotes the
    request (servers' validation errors often repeat the prompt or the tools back)."""
    detail = _detail(payload)
    if not detail:
        return f"{what}."
    detail = " ".join(repair(detail).split())
    if len(detail) > DETAIL_CHARS:
        detail = detail[:DETAIL_CHARS - 1] + "…"
    if _repeats(detail, request):
        return f"{what} (its message quoted the request, so it is only in the server log)."
    return f"{what}: {detail}"


def _detail(payload: Any) -> str | None:
    """The message of an OpenAI-style (``{"error": {"message"}}``), vLLM-style
    (``{"message"}``) or FastAPI-style (``{"detail"}``) error body."""
    if not isinstance(payload, dict):
        return None
    err = payload.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"]
    if isinstance(err, str):
        return err
    for key in ("message", "detail"):
        if isinstance(payload.get(key), str):
            return payload[key]
    return None


_NOT_ALNUM = re.compile(r"[\W_]+")
QUOTE_CHARS = 16
_ECHO_MARKS = ("rolesystem", "roleuser", "roleassistant", "roletool", "toolcallid")


def _repeats(detail: str, request: dict[str, Any] | None) -> bool:
    """Whether ``detail`` (a few hundred characters) quotes the request: its message structure,
    or any stretch of QUOTE_CHARS letters and digits of its texts' starts (compared on letters
    and digits only, so quoting and escaping do not hide it)."""
    seen = _NOT_ALNUM.sub("", detail).lower()
    if any(mark in seen for mark in _ECHO_MARKS):
        return True
    if request is None:
        return False
    for text in _texts(request):
        plain = _NOT_ALNUM.sub("", text[:4000]).lower()
        if len(plain) >= 12 and len(plain) < QUOTE_CHARS and plain in seen:
            return True
        # A quote of 2 × QUOTE_CHARS or more holds a whole aligned stretch.
        if any(plain[i:i + QUOTE_CHARS] in seen for i in range(0, len(plain) - QUOTE_CHARS + 1, QUOTE_CHARS)):
            return True
    return False


def _texts(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
