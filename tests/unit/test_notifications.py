"""Run events packed into PostgreSQL notifications and read back (assistantd.runs.notifications),
and the PostgreSQL bus's own bookkeeping that needs no database (assistantd.runs.pgbus)."""

from __future__ import annotations

import json

from assistantd.runs.events import Event
from assistantd.runs.notifications import LIMIT, Inbox, event_line, pack, signal_line
from assistantd.runs.pgbus import PostgresEventBus, event_bus_for
from assistantd.runs.events import LocalEventBus


def _size(payload: str) -> int:
    return len(payload.encode())


def _deliver(inbox: Inbox, payloads: list[str]) -> tuple[list[str], bool]:
    lines, gap = [], False
    for payload in payloads:
        got, missed = inbox.receive(payload)
        lines += got
        gap = gap or missed
    return lines, gap


def test_small_events_share_notifications_in_order_and_every_payload_fits():
    lines = [event_line("run_1", "thread.message.delta", json.dumps({"i": i, "value": f"word{i} "}))
             for i in range(2000)]
    payloads = pack("abc", 0, lines)
    assert 1 < len(payloads) < len(lines) / 20  # packed: many events per notification
    assert all(_size(p) <= LIMIT for p in payloads)
    assert [p.split("\n", 1)[0] for p in payloads] == [f"abc {i}" for i in range(len(payloads))]
    received, gap = _deliver(Inbox("me"), payloads)
    assert received == lines and not gap


def test_an_event_larger_than_a_notification_goes_in_parts_between_the_others():
    # Multi-byte characters on the parts' boundaries must not be cut.
    big = event_line("run_1", "thread.message.completed", json.dumps({"text": "é€😀x" * 9000}, ensure_ascii=False))
    assert _size(big) > 5 * LIMIT
    lines = [signal_line("wake"), event_line("run_1", "thread.message.delta", '{"a":1}'), big,
             event_line("run_1", "thread.run.completed", '{"b":2}')]
    payloads = pack("s1", 7, lines)
    assert all(_size(p) <= LIMIT for p in payloads)
    assert len(payloads) >= 7  # the first two together, the big one's parts, the last one
    received, gap = _deliver(Inbox("me"), payloads)
    assert received == lines and not gap


def test_own_notifications_are_ignored_and_a_resent_one_is_dropped():
    payloads = pack("me", 0, [signal_line("cancel", "run_1")])
    assert Inbox("me").receive(payloads[0]) == ([], False)
    inbox = Inbox("other")
    first = pack("s1", 0, [signal_line("cancel", "run_1")])
    assert inbox.receive(first[0]) == (["s cancel run_1"], False)
    assert inbox.receive(first[0]) == ([], False)  # sent again after a failed send that had arrived


def test_a_gap_in_a_senders_sequence_is_noticed():
    inbox = Inbox("me")
    payloads = pack("s1", 0, [event_line("run_1", "e", "{}")] * 3, limit=84)
    assert len(payloads) == 3
    assert inbox.receive(payloads[0]) == (["e run_1 e {}"], False)
    lines, gap = inbox.receive(payloads[2])  # the second was lost
    assert lines == ["e run_1 e {}"] and gap
    # Another sender's sequence is its own; the first notification heard from a sender is no gap.
    assert inbox.receive(pack("s2", 41, ["s wake "])[0]) == (["s wake "], False)


def test_a_line_whose_parts_stop_short_is_dropped_as_a_gap():
    big = event_line("run_1", "x", "y" * 3 * LIMIT)
    parts = pack("s1", 0, [big])
    after = pack("s1", len(parts), [event_line("run_1", "z", "{}")])
    inbox = Inbox("me")
    inbox.receive(parts[0])
    lines, gap = _deliver(inbox, parts[2:])  # a part lost: the line is not made up of the rest
    assert lines == [] and gap
    assert inbox.receive(after[0]) == (["e run_1 z {}"], False)


def test_parts_of_a_line_begun_before_listening_are_dropped_quietly():
    parts = pack("s1", 0, [event_line("run_1", "x", "y" * 3 * LIMIT)])
    inbox = Inbox("me")
    assert len(parts) >= 4
    assert _deliver(inbox, parts[1:]) == ([], False)
    assert inbox.receive(pack("s1", len(parts), ["s wake "])[0]) == (["s wake "], False)


def test_a_newline_in_event_json_becomes_a_space():
    line = event_line("run_1", "thread.run.step.created", '{\n "a": "b\\nc"\n}')
    assert "\n" not in line and json.loads(line.split(" ", 3)[3]) == {"a": "b\nc"}


def test_the_postgres_bus_delivers_locally_and_queues_for_the_others_unless_only_here():
    bus = PostgresEventBus("postgresql://unused")
    assert bus.watched("run_1")  # another process may stream it
    subscription = bus.subscribe("run_1")
    bus.publish("run_1", Event("thread.run.in_progress", "{}"))
    assert subscription.queue.get_nowait().name == "thread.run.in_progress"
    assert bus._outbox == ['e run_1 thread.run.in_progress {}']
    bus.only_here("run_2")
    assert not bus.watched("run_2")
    local = bus.subscribe("run_2")
    assert bus.watched("run_2")
    bus.publish("run_2", Event("thread.run.in_progress", "{}"))
    assert local.queue.qsize() == 1 and len(bus._outbox) == 1  # not sent: nobody else can stream it
    bus.release("run_2")
    local.close()
    assert bus.watched("run_2")


def test_the_postgres_bus_dispatches_other_processes_events_and_signals():
    bus = PostgresEventBus("postgresql://unused")
    bus._listening = True
    cancelled: list[str] = []
    bus.on_signal("cancel", cancelled.append)
    subscription = bus.subscribe("run_1")
    big = json.dumps({"text": "z" * 20000})
    for payload in pack("other", 0, [event_line("run_1", "thread.message.delta", '{"a":1}'),
                                     event_line("run_9", "thread.message.delta", '{"b":1}'),
                                     signal_line("cancel", "run_1"),
                                     event_line("run_1", "thread.message.completed", big)]):
        bus._received(None, 0, "c", payload)
    got = [subscription.queue.get_nowait() for _ in range(subscription.queue.qsize())]
    assert [(e.name, e.data) for e in got] == [("thread.message.delta", '{"a":1}'),
                                               ("thread.message.completed", big)]
    assert cancelled == ["run_1"]


def test_streams_that_may_have_missed_events_end_with_an_error():
    bus = PostgresEventBus("postgresql://unused")
    bus._listening = True
    remote, local = bus.subscribe("run_1"), bus.subscribe("run_2")
    bus.only_here("run_2")
    bus._received(None, 0, "c", pack("other", 0, ["s wake "])[0])
    bus._received(None, 0, "c", pack("other", 5, ["s wake "])[0])  # 1..4 were lost
    error = remote.queue.get_nowait()
    assert error.name == "error" and error.final and json.loads(error.data)["code"] == "server_error"
    assert local.queue.empty()  # its events all come from this process
    # Subscribed while the listening connection is down: ended once it is back.
    bus._lost()
    assert remote.queue.get_nowait().name == "error"
    later = bus.subscribe("run_3")
    assert bus._unsure and later.queue.empty()


def test_the_bus_is_chosen_by_the_database_and_the_setting():
    assert isinstance(event_bus_for("auto", "sqlite+aiosqlite:////tmp/x.db"), LocalEventBus)
    assert isinstance(event_bus_for("local", "postgresql+asyncpg://u:p@h/db"), LocalEventBus)
    bus = event_bus_for("auto", "postgresql+asyncpg://u:p%40@h:5/db")
    assert isinstance(bus, PostgresEventBus) and bus.dsn == "postgresql://u:p%40@h:5/db"
    for choice, url in (("postgres", "sqlite:///x.db"), ("redis", "postgresql://h/db")):
        try:
            event_bus_for(choice, url)
        except ValueError:
            continue
        raise AssertionError(f"{choice} on {url} was accepted")
