"""The run event bus: the fast path from the executor to the SSE streams that watch a run.

The database is the truth; the bus only carries what was just persisted (and the token deltas
that are never persisted one by one). Each event's JSON is serialised once, however many
streams watch the run, and :class:`Event` is the one place that turns it into an SSE frame.

:class:`EventBus` is the interface the executor and the run handlers use; :class:`LocalEventBus`
is the in-process implementation (a queue per stream). :class:`~assistantd.runs.pgbus.PostgresEventBus`
carries events between processes over PostgreSQL ``LISTEN/NOTIFY`` (DESIGN.md "Many processes")
with the same four calls, so the executor does not change with it; it also carries the control
signals between processes (:meth:`EventBus.broadcast`), which a bus of one process drops.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from assistantd.api.sse import StreamQueue
from assistantd.api.types import WireModel

# Run events after which a stream has nothing more to say (``error``: the stream itself failed).
FINAL_EVENTS = frozenset({
    "thread.run.completed", "thread.run.failed", "thread.run.cancelled", "thread.run.expired",
    "thread.run.incomplete", "thread.run.requires_action", "error",
})


@dataclass(frozen=True, slots=True)
class Event:
    """One stream event: its name and its JSON text, serialised once when it is made."""

    name: str
    data: str  # JSON text, ready to send

    @classmethod
    def of(cls, name: str, payload: WireModel | Mapping[str, Any] | str) -> Event:
        """The event ``name`` carrying a wire object (with the spec's field names), a plain
        mapping (compact JSON: a delta or an error has no wire model) or JSON text as it is."""
        if isinstance(payload, str):
            return cls(name, payload)
        if isinstance(payload, WireModel):
            return cls(name, payload.model_dump_json(by_alias=True))
        return cls(name, json.dumps(payload, separators=(",", ":")))

    @classmethod
    def each(cls, names: tuple[str, ...], payload: WireModel | Mapping[str, Any] | str) -> list[Event]:
        """The events ``names`` (``thread.run.created`` and ``thread.run.queued``, say), all
        carrying ``payload``: its JSON made once."""
        first = cls.of(names[0], payload)
        return [first, *(cls(name, first.data) for name in names[1:])]

    @property
    def final(self) -> bool:
        return self.name in FINAL_EVENTS

    def frame(self) -> bytes:
        """The SSE frame: ``event: <name>`` / ``data: <json>`` (the JSON holds no newline)."""
        return b"event: " + self.name.encode() + b"\ndata: " + self.data.encode() + b"\n\n"


def stream_error(message: str) -> Event:
    """An ``error`` event: the stream that receives it ends with it (the run goes on)."""
    return Event("error", json.dumps({"code": "server_error", "message": message, "param": None,
                                      "type": "server_error"}))


# What a stream sends after its final event (the SDK stops reading at it).
DONE_FRAME = Event("done", "[DONE]").frame()


class Subscription:
    """One stream's view of a run's events, in the order they were published; ``close()`` it
    when the stream ends (closing twice is harmless)."""

    def __init__(self, bus: EventBus, run_id: str) -> None:
        self.bus, self.run_id = bus, run_id
        self.queue: StreamQueue = StreamQueue()

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus(abc.ABC):
    """Carries a run's events from whoever publishes them to every stream subscribed to it.

    What every implementation guarantees, and what one that crosses processes must keep:

    - **Order per run.** A subscription receives a run's events in the order they were
      published. In one process the event loop makes a run's events (the executor's, and a
      cancel handler's) one sequence; a cross-process bus must keep the order in which each
      process published them (one sending connection per process does: PostgreSQL delivers
      one session's notifications in the order it sent them). Events of different runs, and a
      run's events from different processes, are not ordered with each other.
    - **Nothing published after ``subscribe`` returns is lost.** A run handler subscribes
      *before* its transaction commits the queued run, so the stream sees the run's every event
      from the first one an executor (of any process) emits. ``subscribe`` is a plain call made
      inside that transaction: it cannot wait for a ``LISTEN`` to take effect, so a
      cross-process bus listens once per process before its first subscription, and
      ``subscribe`` only registers the queue.
    - **No call blocks or awaits.** ``publish`` is called on the event loop between two
      statements of a run; a cross-process bus hands the event to a sender of its own (and a
      payload too large for a notification goes by reference, read back from the database).
    - **``watched`` may be conservative.** It lets the executor skip serialising an event no
      stream will read; a bus that cannot know whether another process watches the run
      answers True. It must never answer False while a subscription to the run is open in
      any process.
    """

    @abc.abstractmethod
    def subscribe(self, run_id: str) -> Subscription:
        """A new subscription to ``run_id``'s events published from now on."""

    @abc.abstractmethod
    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to ``subscription`` (what :meth:`Subscription.close` calls); an
        unknown or already closed subscription is ignored."""

    @abc.abstractmethod
    def publish(self, run_id: str, event: Event) -> None:
        """Deliver ``event`` to every open subscription to ``run_id``, after those published
        before it."""

    @abc.abstractmethod
    def watched(self, run_id: str) -> bool:
        """Whether a subscription to ``run_id`` may be open (True when in doubt)."""

    # --- between processes: a bus of one process has nobody to tell ------------------------------

    async def start(self) -> None:
        """Get ready before the first subscription (a cross-process bus listens)."""

    async def close(self) -> None:
        """Send what is still waiting to be sent, then stop."""

    def broadcast(self, signal: str, argument: str = "") -> None:
        """Send a control signal to the handlers of every *other* process (never awaits)."""

    def on_signal(self, signal: str, handler: Callable[[str], object]) -> None:
        """Call ``handler(argument)`` for each ``signal`` another process broadcasts."""

    def only_here(self, run_id: str) -> None:
        """Every stream of ``run_id`` is in this process until :meth:`release`: this process
        queued the run's current stretch of execution and claimed it in the same transaction
        (streams subscribe only in the transaction that queues a run), and executes it. Its
        events need not leave the process, and ``watched`` may answer False."""

    def release(self, run_id: str) -> None:
        """Undo :meth:`only_here` (the stretch is over)."""


class LocalEventBus(EventBus):
    """The bus of one process: each subscription's queue is filled directly by ``publish``."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[StreamQueue]] = {}

    def subscribe(self, run_id: str) -> Subscription:
        subscription = Subscription(self, run_id)
        self._subscribers.setdefault(run_id, set()).add(subscription.queue)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        queues = self._subscribers.get(subscription.run_id)
        if queues is not None:
            queues.discard(subscription.queue)
            if not queues:
                del self._subscribers[subscription.run_id]

    def publish(self, run_id: str, event: Event) -> None:
        for queue in self._subscribers.get(run_id, ()):
            queue.put_nowait(event)

    def watched(self, run_id: str) -> bool:
        return run_id in self._subscribers
