"""Object ids in OpenAI's shapes: ``asst_…``, ``thread_…``, ``msg_…``, ``run_…``, ``file-…``."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


_RANDOM = secrets.SystemRandom()


def new_id(prefix: str, length: int = 24) -> str:
    # One call for all characters: secrets.choice per character is ten times slower.
    return prefix + "".join(_RANDOM.choices(_ALPHABET, k=length))


def now() -> int:
    """Timestamps on the wire are whole Unix seconds."""
    return int(time.time())
