"""Read one string field out of a JSON object while it is still streaming in.

The model streams a built-in tool's arguments as JSON text (``{"code": "print(1)\\n"}``);
the Assistants stream shows the *code* as it comes (``code_interpreter.input`` deltas), so the
field's value is decoded piece by piece, escapes included, without waiting for the whole object.
"""

from __future__ import annotations

import json
import re

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class StreamingStringField:
    def __init__(self, name: str) -> None:
        self._key = re.compile(r'"' + re.escape(name) + r'"\s*:\s*"')
        self._buffer = ""
        self._pos: int | None = None  # where the value's next undecoded character is
        self.done = False

    def feed(self, piece: str) -> str:
        """Add the next piece of JSON text; return the newly decoded part of the field."""
        self._buffer += piece
        if self.done:
            return ""
        if self._pos is None:
            match = self._key.search(self._buffer)
            if match is None:
                return ""
            self._pos = match.end()
        out = []
        buf, i = self._buffer, self._pos
        while i < len(buf):
            ch = buf[i]
            if ch == '"':
                self.done = True
                i += 1
                break
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            if i + 1 >= len(buf):
                break  # the escape is split across pieces: wait for the rest
            code = buf[i + 1]
            if code == "u":
                if i + 6 > len(buf):
                    break
                hex_digits = buf[i + 2:i + 6]
                value = int(hex_digits, 16)
                if 0xD800 <= value < 0xDC00:  # a surrogate pair needs its second half
                    if i + 12 > len(buf):
                        break
                    out.append(json.loads('"' + buf[i:i + 12] + '"'))
                    i += 12
                    continue
                out.append(chr(value))
                i += 6
                continue
            out.append(_ESCAPES.get(code, code))
            i += 2
        self._pos = i
        return "".join(out)
