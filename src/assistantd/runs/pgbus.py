"""The event bus of several processes on one PostgreSQL: ``LISTEN/NOTIFY`` (DESIGN.md "Many processes").

Each process listens on one channel, on a connection of its own, from start-up on (so a
``subscribe`` made later needs no round trip), and sends on another connection. A run's event is
given to this process's subscriptions at once, as :class:`~assistantd.runs.events.LocalEventBus`
does, and queued for the other processes: a sender task drains the queue, packing as many events
as fit into each notification (:mod:`assistantd.runs.notifications`; token deltas come at the
model's rate), so ``publish`` never awaits. PostgreSQL delivers one session's notifications in
the order it sent them, so each process's events keep their order everywhere; each process
ignores its own notifications. An event too large for one notification goes as consecutive
parts, joined by the receivers.

The same notifications carry control signals: a cancel for the process that executes the run
(its durable ``cancelling`` flag stays the truth) and a wake-up for the claim loops when a run
was queued that its process did not claim.

A stream that may have missed events says so: when the listening connection is lost (it is
checked every :data:`HEALTH_INTERVAL` seconds and replaced), or a sender's sequence shows a gap,
every open stream of a run not executed here and queued here ends with an ``error`` event (the
run goes on: the client reads it), instead of hanging or skipping what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

import asyncpg
from sqlalchemy.engine import make_url

from assistantd.runs.events import Event, EventBus, LocalEventBus, Subscription, stream_error
from assistantd.runs.notifications import Inbox, event_line, pack, signal_line

__all__ = ["CHANNEL", "PostgresEventBus"]

log = logging.getLogger("assistantd.bus")

CHANNEL = "assistantd_runs"
APPLICATION_NAME = "assistantd-bus"  # pg_stat_activity shows assistantd-bus-listener-<pid>, …-sender-<pid>
HEALTH_INTERVAL = 2.0  # seconds between checks of the listening connection
CONNECT_TIMEOUT = 10.0
SEND_ATTEMPTS = 5  # then a batch is dropped: its receivers see the gap and end the streams concerned
LOST = stream_error("This stream may have missed events of the run: the server's connection to the "
                    "database's notifications was interrupted. The run goes on; retrieve it to follow it.")


class PostgresEventBus(LocalEventBus):
    """The process's own streams are served as the local bus serves them; what the process
    publishes also goes to the others, and what they publish comes in through LISTEN."""

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn
        self.id = os.urandom(6).hex()
        self._only_here: set[str] = set()
        self._handlers: dict[str, Callable[[str], object]] = {}
        self._outbox: list[str] = []
        self._outbox_ready = asyncio.Event()
        self._seq = 0
        self._lines_sent = 0
        self._inbox = Inbox(self.id)
        self._listener: asyncpg.Connection | None = None
        self._listening = False
        self._broken = asyncio.Event()
        self._unsure: list[tuple[str, asyncio.Queue[Event]]] = []  # subscribed while not listening
        self._closing = False
        self._tasks: list[asyncio.Task] = []

    # --- the interface -----------------------------------------------------------------------

    def subscribe(self, run_id: str) -> Subscription:
        subscription = super().subscribe(run_id)
        if not self._listening:
            self._unsure.append((run_id, subscription.queue))
        return subscription

    def publish(self, run_id: str, event: Event) -> None:
        super().publish(run_id, event)
        if run_id not in self._only_here:
            self._outbox.append(event_line(run_id, event.name, event.data))
            self._outbox_ready.set()

    def watched(self, run_id: str) -> bool:
        # Another process may stream any run but those whose every stream is known to be here.
        return run_id in self._subscribers or run_id not in self._only_here

    def broadcast(self, signal: str, argument: str = "") -> None:
        line = signal_line(signal, argument)
        if not self._outbox or self._outbox[-1] != line:  # the same signal twice in a row says no more
            self._outbox.append(line)
            self._outbox_ready.set()

    def on_signal(self, signal: str, handler: Callable[[str], object]) -> None:
        self._handlers[signal] = handler

    def only_here(self, run_id: str) -> None:
        self._only_here.add(run_id)

    def release(self, run_id: str) -> None:
        self._only_here.discard(run_id)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (before the first subscription: a failure here stops the start-up), then keep
        the listening connection alive and send what is published."""
        await self._listen()
        self._tasks = [asyncio.create_task(self._keep_listening(), name="bus-listener"),
                       asyncio.create_task(self._send_loop(), name="bus-sender")]

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is waiting (for up to ``timeout`` seconds), then close both connections."""
        self._closing = True
        self._outbox_ready.set()
        if self._tasks:
            sender = self._tasks[1]
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(sender), timeout)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
        log.info("the event bus sent %d events and signals in %d notifications", self._lines_sent, self._seq)

    async def _connect(self, role: str) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT,
                                     server_settings={"application_name": f"{APPLICATION_NAME}-{role}-{os.getpid()}"})

    # --- listening ---------------------------------------------------------------------------

    async def _listen(self) -> None:
        connection = await self._connect("listener")
        try:
            await connection.add_listener(CHANNEL, self._received)
        except BaseException:
            connection.terminate()
            raise
        connection.add_termination_listener(lambda closed: self._broken.set() if closed is self._listener else None)
        self._broken.clear()
        self._inbox.reset()
        self._listener, self._listening = connection, True
        # A subscription made while nobody listened may have missed an event, whoever sent it.
        unsure, self._unsure = self._unsure, []
        for run_id, queue in unsure:
            if queue in self._subscribers.get(run_id, ()) and run_id not in self._only_here:
                queue.put_nowait(LOST)

    async def _keep_listening(self) -> None:
        """Check the listening connection; replace it when it is gone."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._broken.wait(), HEALTH_INTERVAL)
            if not self._broken.is_set():
                try:
                    await self._listener.fetchval("SELECT 1", timeout=HEALTH_INTERVAL * 2)
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception:
                    pass
            if self._closing:
                return
            log.warning("the event bus lost its listening connection; reconnecting")
            self._lost()
            with contextlib.suppress(Exception):
                self._listener.terminate()
            delay = 0.2
            while True:
                try:
                    await self._listen()
                    log.info("the event bus listens again")
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("the event bus cannot listen yet (%r); retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    def _lost(self) -> None:
        """The listening connection is gone: streams that may miss events end."""
        self._listening = False
        self._end_streams()

    def _end_streams(self) -> None:
        """Events may have been missed: end every stream that could have been sent one."""
        for run_id, queues in self._subscribers.items():
            if run_id not in self._only_here:
                for queue in queues:
                    queue.put_nowait(LOST)

    def _received(self, _connection, _pid: int, _channel: str, payload: str) -> None:
        try:
            lines, gap = self._inbox.receive(payload)
        except Exception:
            log.exception("a notification could not be read")
            lines, gap = [], True
        if gap:
            log.warning("the event bus missed notifications of another process")
            self._end_streams()
        for line in lines:
            try:
                self._dispatch(line)
            except Exception:
                log.exception("a notification's line could not be handled")

    def _dispatch(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "e":
            run_id, _, event = rest.partition(" ")
            queues = self._subscribers.get(run_id)
            if queues:
                name, _, data = event.partition(" ")
                delivered = Event(name, data)
                for queue in queues:
                    queue.put_nowait(delivered)
        elif kind == "s":
            signal, _, argument = rest.partition(" ")
            handler = self._handlers.get(signal)
            if handler is not None:
                handler(argument)

    # --- sending -----------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        connection: asyncpg.Connection | None = None
        try:
            while True:
                await self._outbox_ready.wait()
                self._outbox_ready.clear()
                lines, self._outbox = self._outbox, []
                if lines:
                    payloads = pack(self.id, self._seq, lines)
                    self._seq += len(payloads)
                    self._lines_sent += len(lines)
                    connection = await self._send(connection, payloads)
                if self._closing and not self._outbox:
                    return
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=2)

    async def _send(self, connection: asyncpg.Connection | None, payloads: list[str]) -> asyncpg.Connection | None:
        """Send ``payloads`` in one transaction (so in order, together); on failure connect
        again and resend them (a receiver drops what it already has, by seq)."""
        delay = 0.1
        for attempt in range(SEND_ATTEMPTS):
            try:
                if connection is None or connection.is_closed():
                    connection = await self._connect("sender")
                if len(payloads) == 1:
                    await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, payloads[0])
                else:
                    await connection.executemany("SELECT pg_notify($1, $2)", [(CHANNEL, p) for p in payloads])
                return connection
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("the event bus could not send %d notification(s) (%r)", len(payloads), exc)
                if connection is not None:
                    connection.terminate()
                    connection = None
                if attempt + 1 < SEND_ATTEMPTS:
                    await asyncio.sleep(delay)
                    delay *= 3
        log.error("the event bus dropped %d notification(s); streams of other processes end with an error",
                  len(payloads))
        return connection


def event_bus_for(choice: str, database_url: str) -> EventBus:
    """The bus ``ASSISTANTD_EVENT_BUS`` asks for: ``auto`` (PostgreSQL's when the database is
    PostgreSQL, else the in-process one), ``local`` or ``postgres``; ``database_url`` is the
    SQLAlchemy URL."""
    url = make_url(database_url)
    postgres = url.get_backend_name() == "postgresql"
    if choice not in ("auto", "local", "postgres"):
        raise ValueError(f"ASSISTANTD_EVENT_BUS must be auto, local or postgres, not {choice!r}")
    if choice == "postgres" and not postgres:
        raise ValueError("ASSISTANTD_EVENT_BUS=postgres needs a PostgreSQL database")
    if choice == "local" or not postgres:
        return LocalEventBus()
    return PostgresEventBus(url.set(drivername="postgresql").render_as_string(hide_password=False))
