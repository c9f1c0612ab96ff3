"""The model's streamed answers over plain HTTP/1.1 connections: httptools' parser on an asyncio
protocol, a small keep-alive pool — the chat stream's transport when no proxy is configured.

Why not aiohttp's client on this path (it still serves embeddings, and every request through a
proxy): a streamed turn is ~20 small reads, and aiohttp's body reader costs more per read than
everything around it. Each read feeds its ``StreamReader`` (a deque, chunk bookkeeping, a waiter
future), and each chunk taken from it calls ``resume_reading``, which runs the parser again on
no data. Measured with bench/relay_floor.py (a bare relay, N=50, 21-chunk answers): 3.10 ms of
CPU per streamed answer through aiohttp's client, 2.46 ms through this one. The parser is the
same kind (httptools is llhttp, as aiohttp's C parser is; uvicorn parses requests with it here);
what this module adds is a list of received bytes and a future for the reader waiting on them.

What it covers, and no more: ``POST`` with a body, answers with chunked, ``Content-Length`` or
close-delimited bodies, ``http`` and ``https`` (the default SSL context, as aiohttp's), a
connect timeout, a read timeout between two reads (aiohttp's ``sock_read``), connections kept
for ``keepalive`` seconds and at most ``limit`` at once. Errors are aiohttp's exception classes,
so callers handle both transports alike.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp
import httptools
import yarl


class Answer:
    """One response: ``status`` and ``headers`` (by lower-case name) once :meth:`HTTP1Pool.post`
    returns, then its body through :meth:`readany` (b"" at its end). A connection that breaks
    raises from the read after the bytes it had received; :meth:`set_exception` (an interrupt)
    raises from the next read at once. :meth:`release` it: its connection goes back to the pool
    if the body was read to its end, else is closed."""

    __slots__ = ("status", "headers", "_conn", "_held", "_waiter", "_failure", "_broken", "_eof", "_started",
                 "_complete", "_on_data")

    def __init__(self, conn: _Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}  # by lower-case name (a repeated header: its values joined by ", ")
        self._conn: _Connection | None = conn
        self._held: list[bytes] = []
        self._waiter: asyncio.Future | None = None
        self._failure: BaseException | None = None  # set_exception's: before anything held
        self._broken: BaseException | None = None  # the connection's: after what it had received
        self._eof = self._complete = False
        self._started: asyncio.Future | None = None  # resolved with the headers
        self._on_data: Callable[[bytes], bool] | None = None  # see take()

    async def readany(self) -> bytes:
        while True:
            if self._failure is not None:
                raise self._failure
            held = self._held
            if held:
                data = held[0] if len(held) == 1 else b"".join(held)
                held.clear()
                return data
            if not await self.wait():
                return b""

    def take(self, on_data: Callable[[bytes], bool] | None) -> None:
        """From now on (None: no longer), the body's bytes go to ``on_data`` as they arrive — in
        the connection's ``data_received``, with no task woken — instead of being held for
        :meth:`readany`: what is held now first. ``on_data`` returns False when the reader has
        something to look at, and :meth:`wait` then returns."""
        self._on_data = on_data
        if on_data is not None and self._held:
            data = b"".join(self._held)
            self._held.clear()
            on_data(data)

    async def wait(self) -> bool:
        """Wait until the connection has something for the reader — bytes held, or (with
        :meth:`take`'s ``on_data``) chunks it left — (True) or the body has ended (False); raises
        an interrupt, or a break."""
        if self._failure is not None:
            raise self._failure
        if self._broken is not None:
            raise self._broken
        if self._eof:
            return False
        conn = self._conn
        if conn is None:
            return False
        conn.resume()
        waiter = self._waiter = conn.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        return True

    def pause(self) -> None:
        """Stop reading from the connection until the reader waits again (flow control)."""
        conn = self._conn
        if conn is not None and not conn.paused and not conn.closed:
            conn.paused = True
            conn.transport.pause_reading()

    def at_eof(self) -> bool:
        """The body was read to its end."""
        return self._eof and not self._held and self._failure is None and self._broken is None

    def set_exception(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            self._wake()
            if self._started is not None and not self._started.done():
                self._started.set_exception(exc)

    def release(self) -> None:
        """Give the connection back (a complete body) or close it (one not read to its end)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.done_with(self, reusable=self._complete and self._broken is None)

    # --- from the connection ------------------------------------------------------------------

    def _data(self, data: bytes) -> None:
        on_data = self._on_data
        if on_data is not None:
            if not on_data(data):
                self._wake()
            return
        self._held.append(data)
        self._wake()

    def _end(self, complete: bool) -> None:
        self._eof, self._complete = True, complete
        self._wake()

    def _break(self, exc: BaseException) -> None:
        if self._eof:
            return
        self._broken = exc
        self._wake()
        if self._started is not None and not self._started.done():
            self._started.set_exception(exc)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _buffered(self) -> int:
        return sum(map(len, self._held))


MAX_HELD = 256 * 1024  # bytes received and not yet read, beyond which the connection stops reading


class _Connection(asyncio.Protocol):
    def __init__(self, pool: HTTP1Pool) -> None:
        self.pool, self.loop = pool, pool.loop
        self.transport: asyncio.Transport | None = None
        self.answer: Answer | None = None
        self.parser: Any = None
        self.closed = False
        self.paused = False
        self.idle_since = 0.0
        self.last_read = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._until_close = False  # the body ends with the connection (no length, not chunked)
        self._keep_alive = False  # the answer's headers allow the connection's reuse

    # --- one request ----------------------------------------------------------------------------

    def send(self, request: bytes) -> Answer:
        answer = self.answer = Answer(self)
        answer._started = self.loop.create_future()
        self.parser = httptools.HttpResponseParser(self)
        self._until_close = self._keep_alive = False
        self.last_read = self.loop.time()
        self._arm()
        self.transport.write(request)
        return answer

    def done_with(self, answer: Answer, reusable: bool) -> None:
        if self.answer is answer:
            self.answer = None
        self._disarm()
        if reusable and self._keep_alive and not self.closed and not self._until_close:
            self.resume()
            self.pool.put_back(self)
        else:
            self.close()
            self.pool.forget(self)
        self.pool.slots.release()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._disarm()
            if self.transport is not None:
                self.transport.close()

    def resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    # --- the read timeout: one timer per answer, moved on only when it fires -------------------------

    def _arm(self) -> None:
        self._disarm()
        self._watchdog = self.loop.call_later(self.pool.read_timeout, self._check_quiet)

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _check_quiet(self) -> None:
        answer = self.answer
        if answer is None or answer._eof:
            self._watchdog = None
            return
        quiet = self.loop.time() - self.last_read
        if quiet < self.pool.read_timeout:
            self._watchdog = self.loop.call_later(self.pool.read_timeout - quiet, self._check_quiet)
            return
        self._watchdog = None
        answer._break(aiohttp.SocketTimeoutError(f"Timeout on reading data from socket ({self.pool.read_timeout:g} s)"))
        self.close()

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None:  # (bytes on an idle connection: nothing can be read from it any more)
            self.close()
            return
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            answer._break(aiohttp.ClientPayloadError(f"The answer was not valid HTTP ({exc})"))
            self.close()
            return
        if len(answer._held) > 16 and answer._buffered() > MAX_HELD:
            answer.pause()

    def eof_received(self) -> bool:
        return False  # (the transport closes; connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        self.pool.forget(self)
        answer = self.answer
        if answer is not None and not answer._eof:
            if self._until_close and exc is None:
                answer._end(complete=True)
            else:
                answer._break(aiohttp.ServerDisconnectedError() if exc is None
                              else aiohttp.ClientOSError(getattr(exc, "errno", None) or 0, str(exc)))

    # --- httptools' callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        headers, key = self.answer.headers, name.decode("latin-1").lower()
        value_ = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {value_}" if key in headers else value_

    def on_headers_complete(self) -> None:
        answer = self.answer
        answer.status = self.parser.get_status_code()
        self._keep_alive = self.parser.should_keep_alive()  # (read here: llhttp resets it once the message ends)
        headers = answer.headers
        self._until_close = ("content-length" not in headers
                             and "chunked" not in headers.get("transfer-encoding", "").lower())
        if not answer._started.done():
            answer._started.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.answer._data(body)

    def on_message_complete(self) -> None:
        self._until_close = False
        self.answer._end(complete=True)


class HTTP1Pool:
    """Connections to one origin, kept alive between answers."""

    def __init__(self, url: yarl.URL, *, connect_timeout: float, read_timeout: float, limit: int,
                 keepalive: float) -> None:
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) URL: {url}")
        self.url = url
        self.connect_timeout, self.read_timeout, self.keepalive = connect_timeout, read_timeout, keepalive
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        self._idle: deque[_Connection] = deque()
        self._open: set[_Connection] = set()
        self.slots = asyncio.Semaphore(limit)
        self._loop: asyncio.AbstractEventLoop | None = None
        host = url.raw_host if url.is_default_port() else f"{url.raw_host}:{url.port}"
        self._target = url.raw_path_qs.encode()
        self._host = host.encode("idna")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def request(self, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [b"POST %s HTTP/1.1" % self._target, b"Host: %s" % self._host,
                 *(f"{name}: {value}".encode("latin-1") for name, value in headers.items()),
                 b"Content-Length: %d" % len(body), b"", b""]
        return b"\r\n".join(lines) + body

    async def post(self, request: bytes) -> Answer:
        """Send ``request`` (:meth:`request`'s bytes) on a kept connection, or a new one; returns
        once the answer's headers have arrived. A kept connection the server has just closed fails
        the request (the caller retries it, as it would aiohttp's)."""
        await self.slots.acquire()  # (released with the answer)
        try:
            conn = self._kept()
            if conn is None:
                conn = await self._connect()
        except BaseException:
            self.slots.release()
            raise
        answer = conn.send(request)
        try:
            await answer._started
        except BaseException:
            answer.release()
            raise
        return answer

    def _kept(self) -> _Connection | None:
        now = self.loop.time()
        while self._idle:
            conn = self._idle.pop()  # (the most recently used: the least likely to have been closed)
            if not conn.closed and now - conn.idle_since < self.keepalive:
                return conn
            conn.close()
            self._open.discard(conn)
        return None

    async def _connect(self) -> _Connection:
        url = self.url
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self), url.host, url.port, ssl=self._ssl,
                    server_hostname=url.host if self._ssl is not None else None)
        except TimeoutError:
            raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url.host}:{url.port}") from None
        except OSError as exc:
            raise aiohttp.ClientOSError(exc.errno or 0, f"Cannot connect to host {url.host}:{url.port} ({exc})") from exc
        self._open.add(conn)
        return conn

    def put_back(self, conn: _Connection) -> None:
        now = conn.idle_since = self.loop.time()
        idle = self._idle
        while idle and now - idle[0].idle_since >= self.keepalive:  # (kept too long: closed)
            idle.popleft().close()
        idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        self._open.discard(conn)
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    async def aclose(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        self._open.clear()
