"""The chat-completions client every run turn goes through (CONTRACT.md, "How runs talk to the
upstream model"): one streamed ``POST {base}/chat/completions`` per model turn.

Chunks are yielded as plain dicts, straight from the wire: a run relays them token by token,
so no per-chunk model validation sits on that path.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx

from assistantd.runs.failures import RunFailure


CONNECT_RETRIES = 2
# Idle connections kept for the next turns. httpcore's pool scans every connection for each idle
# one on every request and response (measured: a fifth of the server's CPU with 50 idle
# connections at 50 concurrent runs), so a few are kept: enough for steady traffic to skip the
# TCP (and TLS) handshake, few enough that the scan stays cheap.
KEEPALIVE_CONNECTIONS = 16
DRAIN_SECONDS = 1.0  # how long the end of a body may lag behind its [DONE]


class UpstreamError(RunFailure):
    """The upstream failed; ``code`` is the run's ``last_error.code``."""


class UpstreamClient:
    def __init__(self, base_url: str, api_key: str | None, *, connect_timeout: float,
                 read_timeout: float, max_connections: int = 512) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Full URLs parsed once: httpx would otherwise parse and merge a path on every request.
        self._chat_url = httpx.URL(base_url.rstrip("/") + "/chat/completions")
        self._embeddings_url = httpx.URL(base_url.rstrip("/") + "/embeddings")
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=KEEPALIVE_CONNECTIONS),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def stream_chat(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield the chunks of one streamed completion; raise :class:`UpstreamError` on failure.

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
                    raise UpstreamError("server_error", f"Could not reach the model: {exc!r}") from exc

    async def _stream_once(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._http.stream("POST", self._chat_url, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error_for(response)
                # SSE lines are split from the raw bytes (no text decoding pass, json.loads
                # takes bytes): this loop runs once per token of every run.
                buffer = b""
                body = response.aiter_bytes()
                async for data in body:
                    buffer += data
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            await _drain(body)
                            return
                        chunk = json.loads(payload)
                        if isinstance(chunk, dict) and "error" in chunk:
                            raise UpstreamError("server_error", _message(chunk))
                        yield chunk
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            raise
        except httpx.TimeoutException as exc:
            raise UpstreamError("server_error", f"The model did not answer in time ({type(exc).__name__}).") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError("server_error", f"Could not reach the model: {exc!r}") from exc
        except json.JSONDecodeError as exc:
            raise UpstreamError("server_error", f"The model sent a malformed chunk: {exc}") from exc

    async def embeddings(self, model: str, inputs: list[str]) -> list[list[float]]:
        response = await self._http.post(self._embeddings_url, json={"model": model, "input": inputs})
        if response.status_code >= 400:
            raise _error_for(response)
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


def _message(payload: Any) -> str:
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return str(payload)[:500]


def _error_for(response: httpx.Response) -> UpstreamError:
    try:
        detail = _message(response.json())
    except ValueError:
        detail = response.text[:500]
    code = "rate_limit_exceeded" if response.status_code == 429 else "server_error"
    return UpstreamError(code, f"The model returned HTTP {response.status_code}: {detail}")
