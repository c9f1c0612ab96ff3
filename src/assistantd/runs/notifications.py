"""Run events and control signals packed into PostgreSQL notifications, and read back (pure).

A notification's payload is text of at most :data:`LIMIT` bytes: a header line
``<sender> <seq>`` (the sending process's id and the notification's number in its sequence)
and one or more *lines*, each one event or one signal:

    e <run_id> <event name> <event JSON>        an event of a run
    s <signal> <argument>                       a control signal (cancel a run, wake claim loops)

A line too long for one notification travels as *parts*, each alone in a notification of its
own and numbered in the sender's sequence like any other: ``p <i> <n> <piece>``; the receiver
joins the ``n`` pieces back into the line. So a big event needs no storage: it stays in the
sender's order with its other events, and a notification that is lost shows as a gap in the
sequence.

:class:`Inbox` is one listener's side: it drops its own process's notifications and the
duplicates of a notification sent again, notices a gap in a sender's sequence, and joins parts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = ["LIMIT", "Inbox", "event_line", "pack", "signal_line"]

LIMIT = 7900  # payload bytes per notification: PostgreSQL refuses 8000 or more
_HEADER_ROOM = 64  # "<sender> <seq>\n": a sender id of up to 32 characters, a seq of up to 20 digits
_PART_ROOM = 32  # "p <i> <n> " for a line of up to a billion parts
_SKIP: list[str] = []  # in Inbox._parts: the rest of this line's parts are dropped


def event_line(run_id: str, name: str, data: str) -> str:
    # JSON text holds a newline only as whitespace between tokens (inside a string it is
    # escaped), so turning it into a space changes nothing it means.
    if "\n" in data:
        data = data.replace("\n", " ")
    return f"e {run_id} {name} {data}"


def signal_line(signal: str, argument: str = "") -> str:
    return f"s {signal} {argument}"


def _size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (the payload's encoding)."""
    return len(text) if text.isascii() else len(text.encode())


def _pieces(line: str, room: int) -> Iterator[str]:
    """``line`` cut into pieces of at most ``room`` UTF-8 bytes, never inside a character."""
    data = line.encode()
    start = 0
    while start < len(data):
        end = min(start + room, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte: back off
            end -= 1
        yield data[start:end].decode()
        start = end


def pack(sender: str, seq: int, lines: Iterable[str], limit: int = LIMIT) -> list[str]:
    """Payloads carrying ``lines`` in order, numbered from ``seq`` on: as many lines in each as
    fit in ``limit`` bytes, a line that fits in none as parts."""
    room = limit - _HEADER_ROOM
    bodies: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        n = _size(line) + 1
        if size + n <= room:
            current.append(line)
            size += n
            continue
        if current:
            bodies.append("\n".join(current))
            current, size = [], 0
        if n <= room:
            current, size = [line], n
            continue
        pieces = list(_pieces(line, room - _PART_ROOM))
        bodies.extend(f"p {i} {len(pieces)} {piece}" for i, piece in enumerate(pieces))
    if current:
        bodies.append("\n".join(current))
    return [f"{sender} {seq + i}\n{body}" for i, body in enumerate(bodies)]


class Inbox:
    """What one listening process makes of the notifications it receives."""

    def __init__(self, me: str) -> None:
        self.me = me
        self._next: dict[str, int] = {}  # sender → the seq expected next from it
        self._parts: dict[str, list[str]] = {}  # sender → the parts of a line received so far, or _SKIP

    def reset(self) -> None:
        """Forget every sender (the listening connection was replaced: what was sent meanwhile
        is not expected)."""
        self._next.clear()
        self._parts.clear()

    def receive(self, payload: str) -> tuple[list[str], bool]:
        """The lines a notification completes, and whether something sent before it was lost
        (a gap in its sender's sequence, or parts of a line that never all came)."""
        header, _, body = payload.partition("\n")
        sender, _, seq_text = header.partition(" ")
        if sender == self.me:
            return [], False
        seq = int(seq_text)
        expected = self._next.get(sender)
        if expected is not None and seq < expected:
            return [], False  # sent again after a failure that had in fact delivered it
        gap = expected is not None and seq > expected
        self._next[sender] = seq + 1
        if gap:
            self._parts.pop(sender, None)
        parts = self._parts.get(sender)
        if not body.startswith("p "):
            if parts is not None:
                del self._parts[sender]
                gap = gap or parts is not _SKIP  # a line's parts stopped short
            return body.split("\n"), gap
        _, i_text, n_text, piece = body.split(" ", 3)
        i, n = int(i_text), int(n_text)
        if i == 0:
            gap = gap or (parts is not None and parts is not _SKIP)
            parts = self._parts[sender] = []
        elif parts is None or parts is _SKIP or len(parts) != i:
            # The rest of a line that began before this process listened (nobody here waits
            # for it), or whose earlier parts were lost (a gap, said once): dropped.
            gap = gap or (parts is not _SKIP and expected is not None)
            if i == n - 1:
                self._parts.pop(sender, None)
            else:
                self._parts[sender] = _SKIP
            return [], gap
        parts.append(piece)
        if len(parts) < n:
            return [], gap
        del self._parts[sender]
        return ["".join(parts)], gap
