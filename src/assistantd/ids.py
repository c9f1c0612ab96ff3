"""Object ids in OpenAI's shapes: ``asst_…``, ``thread_…``, ``msg_…``, ``run_…``, ``file-…``."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def now() -> int:
    """Timestamps on the wire are whole Unix seconds."""
    return int(time.time())
