"""Object ids in OpenAI's shapes: ``asst_…``, ``thread_…``, ``msg_…``, ``run_…``, ``file-…``."""

from __future__ import annotations

import os
import string
import time

_ALPHABET = string.ascii_letters + string.digits
# Random bytes below this map evenly onto the alphabet (248 = 4 × 62); the rest are redrawn.
_UNBIASED = 256 - 256 % len(_ALPHABET)
_TABLE = bytes((_ALPHABET * 5).encode()[:_UNBIASED]).ljust(256, b"\0")
_DELETE = bytes(range(_UNBIASED, 256))


def new_id(prefix: str, length: int = 24) -> str:
    # One read of the OS's randomness per id (SystemRandom.choices reads it once per character).
    chars = b""
    while len(chars) < length:
        chars += os.urandom(length + 8).translate(_TABLE, _DELETE)
    return prefix + chars[:length].decode()


def now() -> int:
    """Timestamps on the wire are whole Unix seconds."""
    return int(time.time())
