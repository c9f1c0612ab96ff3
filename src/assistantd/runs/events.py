"""The run event bus: the fast path from the executor to SSE streams in this process.

The database is the truth; the bus only carries what was just persisted (and the token deltas
that are never persisted one by one). Each event's JSON is serialised once, however many
streams watch the run. Build step 5 puts PostgreSQL LISTEN/NOTIFY behind the same interface.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

from assistantd.api.types import WireModel

# Run events after which a stream has nothing more to say.
FINAL_EVENTS = frozenset({
    "thread.run.completed", "thread.run.failed", "thread.run.cancelled", "thread.run.expired",
    "thread.run.incomplete", "thread.run.requires_action",
})


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    data: str  # JSON text, ready to send

    @classmethod
    def of(cls, name: str, obj: WireModel | str) -> "Event":
        return cls(name, obj if isinstance(obj, str) else obj.model_dump_json(by_alias=True))

    @property
    def final(self) -> bool:
        return self.name in FINAL_EVENTS

    def frame(self) -> bytes:
        """The SSE frame: ``event: <name>`` / ``data: <json>`` (the JSON holds no newline)."""
        return b"event: " + self.name.encode() + b"\ndata: " + self.data.encode() + b"\n\n"


DONE_FRAME = b"event: done\ndata: [DONE]\n\n"


class Subscription:
    """One stream's view of a run's events; ``close()`` it when the stream ends."""

    def __init__(self, bus: "EventBus", run_id: str) -> None:
        self.bus, self.run_id = bus, run_id
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def close(self) -> None:
        subscribers = self.bus._subscribers.get(self.run_id)
        if subscribers is not None:
            subscribers.discard(self.queue)
            if not subscribers:
                del self.bus._subscribers[self.run_id]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[Event]]] = defaultdict(set)

    def subscribe(self, run_id: str) -> Subscription:
        subscription = Subscription(self, run_id)
        self._subscribers[run_id].add(subscription.queue)
        return subscription

    def publish(self, run_id: str, event: Event) -> None:
        for queue in self._subscribers.get(run_id, ()):
            queue.put_nowait(event)

    def watched(self, run_id: str) -> bool:
        return run_id in self._subscribers
