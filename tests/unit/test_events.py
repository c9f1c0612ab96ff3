"""The in-process event bus and the SSE frames of its events (assistantd.runs.events)."""

from __future__ import annotations

import asyncio

from assistantd.api.types import Deleted
from assistantd.runs.events import DONE_FRAME, Event, EventBus, LocalEventBus


def _drain(queue: asyncio.Queue[Event]) -> list[str]:
    names = []
    while not queue.empty():
        names.append(queue.get_nowait().name)
    return names


def test_a_subscription_receives_the_runs_events_in_publication_order():
    bus: EventBus = LocalEventBus()
    subscription = bus.subscribe("run_1")
    names = [f"thread.message.delta.{i}" for i in range(100)]
    for name in names:
        bus.publish("run_1", Event(name, "{}"))
    assert _drain(subscription.queue) == names


def test_every_subscription_to_a_run_gets_every_event_and_no_other_runs():
    bus = LocalEventBus()
    first, second = bus.subscribe("run_1"), bus.subscribe("run_1")
    other = bus.subscribe("run_2")
    event = Event("thread.run.in_progress", '{"id":"run_1"}')
    bus.publish("run_1", event)
    bus.publish("run_1", Event("thread.run.completed", "{}"))
    assert _drain(first.queue) == _drain(second.queue) == ["thread.run.in_progress", "thread.run.completed"]
    assert other.queue.empty()
    # One object for every stream: the JSON was serialised once.
    bus.publish("run_1", event)
    assert first.queue.get_nowait() is second.queue.get_nowait() is event


def test_only_events_published_after_subscribing_are_delivered():
    bus = LocalEventBus()
    bus.publish("run_1", Event("thread.run.queued", "{}"))  # nobody listens: dropped
    subscription = bus.subscribe("run_1")
    bus.publish("run_1", Event("thread.run.in_progress", "{}"))
    assert _drain(subscription.queue) == ["thread.run.in_progress"]


def test_close_unsubscribes_and_the_run_is_unwatched_once_its_last_stream_closes():
    bus = LocalEventBus()
    assert not bus.watched("run_1")
    first, second = bus.subscribe("run_1"), bus.subscribe("run_1")
    assert bus.watched("run_1")
    first.close()
    assert bus.watched("run_1")
    bus.publish("run_1", Event("thread.run.in_progress", "{}"))
    assert first.queue.empty() and _drain(second.queue) == ["thread.run.in_progress"]
    bus.unsubscribe(second)  # what close() calls
    assert not bus.watched("run_1")
    second.close()  # twice, and on a run nobody watches: harmless
    first.close()
    bus.publish("run_1", Event("thread.run.completed", "{}"))
    assert first.queue.empty() and second.queue.empty() and not bus.watched("run_1")


def test_events_of_wire_models_mappings_and_text_frame_as_sse():
    receipt = Deleted(id="thread_1", object="thread.deleted")
    assert Event.of("thread.deleted", receipt).data == '{"id":"thread_1","object":"thread.deleted","deleted":true}'
    delta = Event.of("thread.message.delta", {"id": "msg_1", "delta": {"text": "é\n"}})
    assert delta.data == '{"id":"msg_1","delta":{"text":"\\u00e9\\n"}}'  # compact, one line
    assert delta.frame() == b'event: thread.message.delta\ndata: ' + delta.data.encode() + b"\n\n"
    assert Event.of("thread.run.queued", '{"id":"run_1"}').data == '{"id":"run_1"}'
    assert DONE_FRAME == b"event: done\ndata: [DONE]\n\n"
    assert Event.of("thread.run.requires_action", "{}").final
    assert not Event.of("thread.run.step.completed", "{}").final


def test_events_of_one_object_under_several_names_share_its_json_made_once():
    receipt = Deleted(id="run_1", object="thread.run.deleted")
    created, queued = Event.each(("thread.run.created", "thread.run.queued"), receipt)
    assert (created.name, queued.name) == ("thread.run.created", "thread.run.queued")
    assert created.data == receipt.model_dump_json(by_alias=True)
    assert queued.data is created.data, "serialised once per name, not once"
    assert [e.name for e in Event.each(("thread.run.completed",), receipt)] == ["thread.run.completed"]
