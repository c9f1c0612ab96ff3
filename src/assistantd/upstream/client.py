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
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx

from assistantd.api.text import repair
from assistantd.runs.failures import RunFailure

log = logging.getLogger("assistantd.upstream")


CONNECT_RETRIES = 2
# Idle connections kept for the next turns. httpcore's pool scans every connection for each idle
# one on every request and response (measured: a fifth of the server's CPU with 50 idle
# connections at 50 concurrent runs), so a few are kept: enough for steady traffic to skip the
# TCP (and TLS) handshake, few enough that the scan stays cheap.
KEEPALIVE_CONNECTIONS = 16
DRAIN_SECONDS = 1.0  # how long the end of a body may lag behind its [DONE]
END_OF_ANSWER = object()  # what pump_chat puts on its queue once the answer is over
ERROR_BODY_BYTES = 64 * 1024  # of an error answer's body, read for its message
DETAIL_CHARS = 300  # of the upstream's own error message, shown in last_error


class UpstreamError(RunFailure):
    """The upstream failed; ``code`` is the run's ``last_error.code``. The message says what
    kind of failure it was, never what the request held (details go to the server log)."""


class UpstreamClient:
    def __init__(self, base_url: str, api_key: str | None, *, connect_timeout: float,
                 read_timeout: float, max_connections: int = 512,
                 max_line_bytes: int = 4 * 1024 * 1024) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Full URLs parsed once: httpx would otherwise parse and merge a path on every request.
        self._chat_url = httpx.URL(base_url.rstrip("/") + "/chat/completions")
        self._embeddings_url = httpx.URL(base_url.rstrip("/") + "/embeddings")
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._max_line = max_line_bytes
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=KEEPALIVE_CONNECTIONS),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def stream_chat(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield the chunks of one streamed completion; raise :class:`UpstreamError` on failure.

        Each chunk yielded has the shape the executor reads (see :func:`_check`), its text
        repaired; the stream is only over once it said so (a ``finish_reason`` or ``[DONE]``).
        A connection that fails before the answer starts (typically a pooled keep-alive
        connection the upstream had just closed) is retried; once a chunk has been relayed,
        a failure ends the run, since the client has already seen part of the answer.
        """
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        started = False
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                async for chunk in self._stream_once(body):
                    started = True
                    yield chunk
                return
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if started or attempt == CONNECT_RETRIES:
                    log.warning("the model's connection failed: %r", exc)
                    what = "The connection to the model broke during its answer" if started \
                        else "Could not reach the model"
                    raise UpstreamError("server_error", f"{what} ({type(exc).__name__}).") from exc

    async def pump_chat(self, body: dict[str, Any], queue: asyncio.Queue, limit: float, expired: str) -> None:
        """Put the chunks of :meth:`stream_chat` on ``queue`` within ``limit`` seconds, then
        :data:`END_OF_ANSWER`; a failure goes on the queue as an :class:`UpstreamError` (``expired``
        when the time is up). Network only: cancelling it is always safe."""
        try:
            async with asyncio.timeout(limit):
                async for chunk in self.stream_chat(body):
                    queue.put_nowait(chunk)
            queue.put_nowait(END_OF_ANSWER)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            queue.put_nowait(UpstreamError("server_error", expired))
        except UpstreamError as exc:
            queue.put_nowait(exc)
        except Exception as exc:
            log.exception("reading the model's answer failed")
            queue.put_nowait(UpstreamError("server_error", f"Reading the model's answer failed "
                                                           f"({type(exc).__name__}); see the server log."))

    async def _stream_once(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._http.stream("POST", self._chat_url, json=body) as response:
                if response.status_code >= 400:
                    raise _error_for(response.status_code, await _read_some(response), body)
                if response.status_code != 200:
                    raise UpstreamError("server_error", f"The model answered HTTP {response.status_code}, "
                                                        "not a stream.")
                content_type = response.headers.get("content-type")
                if content_type is None or content_type.partition(";")[0].strip().lower() != "text/event-stream":
                    shown = f"content-type {repair(content_type[:100])}" if content_type else "no content-type"
                    raise UpstreamError("server_error", f"The model's answer was not an event stream ({shown}).")
                # SSE lines are split from the raw bytes (no text decoding pass, json.loads
                # takes bytes): this loop runs once per token of every run. A line's start is
                # held as pieces until its end arrives (joined once: no quadratic re-copying),
                # and no longer than max_line bytes.
                held: list[bytes] = []
                held_bytes = 0
                chunks = finished = False
                stream = response.aiter_bytes()
                async for data in stream:
                    lines = data.split(b"\n")
                    if held:  # the read goes on the held line
                        held.append(lines[0])
                        held_bytes += len(lines[0])
                        if held_bytes > self._max_line:
                            raise self._line_too_long()
                        if len(lines) == 1:  # and does not end it
                            continue
                        lines[0] = b"".join(held)
                        held, held_bytes = [], 0
                    rest = lines.pop()
                    if rest:
                        if len(rest) > self._max_line:
                            raise self._line_too_long()
                        held, held_bytes = [rest], len(rest)
                    for line in lines:
                        if len(line) > self._max_line:  # one read can hold a whole long line
                            raise self._line_too_long()
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            if not chunks:
                                raise UpstreamError("server_error", "The model's answer was empty.")
                            await _drain(stream)
                            return
                        try:
                            chunk = json.loads(payload)
                        except ValueError:
                            raise UpstreamError("server_error", "The model's stream was malformed: "
                                                                "a chunk is not JSON.") from None
                        if type(chunk) is dict and "error" in chunk:
                            log.warning("the model reported an error in its stream: %.2000s", payload)
                            raise UpstreamError("server_error", _reported("The model reported an error",
                                                                          chunk, body))
                        if _check(chunk):
                            finished = True
                        chunks = True
                        yield chunk
                # The body ended without [DONE]: complete only if the answer said it was over
                # (some servers send no [DONE]); else it was cut off, however cleanly it closed.
                if not chunks:
                    raise UpstreamError("server_error", "The model's answer was empty.")
                if not finished:
                    raise UpstreamError("server_error", "The model's stream ended before it finished "
                                                        "(no finish_reason, no [DONE]).")
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            raise
        except httpx.ConnectTimeout as exc:
            raise UpstreamError("server_error", f"Could not connect to the model within {self._connect_timeout:g} s "
                                                "(ASSISTANTD_UPSTREAM_CONNECT_TIMEOUT).") from exc
        except httpx.ReadTimeout as exc:
            raise UpstreamError("server_error", f"The model sent nothing for {self._read_timeout:g} s "
                                                "(ASSISTANTD_UPSTREAM_READ_TIMEOUT).") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamError("server_error", f"The model did not answer in time ({type(exc).__name__}).") from exc
        except httpx.HTTPError as exc:
            log.warning("the model's request failed: %r", exc)
            raise UpstreamError("server_error", f"Could not reach the model ({type(exc).__name__}).") from exc

    def _line_too_long(self) -> UpstreamError:
        return UpstreamError("server_error", f"The model's stream held a line longer than {self._max_line} bytes "
                                             "(ASSISTANTD_UPSTREAM_MAX_LINE_BYTES).")

    async def embeddings(self, model: str, inputs: list[str]) -> list[list[float]]:
        response = await self._http.post(self._embeddings_url, json={"model": model, "input": inputs})
        if response.status_code >= 400:
            raise _error_for(response.status_code, response.content, {"input": inputs})
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        return [d["embedding"] for d in data]


async def _drain(body: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (the end of the chunked body, normally already received).

    httpx returns a connection to its pool only when the response was read to its end; leaving
    the stream at ``[DONE]`` closed it, so every model turn paid a new TCP connection. An
    upstream that keeps the body open after ``[DONE]`` is given up on after a moment (the
    connection is then closed, as before).
    """
    # The answer is complete: a connection that breaks now costs nothing but itself.
    with anyio.move_on_after(DRAIN_SECONDS), contextlib.suppress(httpx.HTTPError, httpx.StreamError):
        async for _ in body:
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


async def _read_some(response: httpx.Response, limit: int = ERROR_BODY_BYTES) -> bytes:
    """The start of an error answer's body (an upstream may answer an error with any amount)."""
    kept, size = [], 0
    async for data in response.aiter_bytes():
        kept.append(data)
        size += len(data)
        if size >= limit:
            break
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
