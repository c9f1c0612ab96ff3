"""Text that can be stored and sent back: strings from a model, from sandboxed code or from a
request may hold lone UTF-16 surrogates (``"\\ud800"``), which no UTF-8 database column, JSON
encoder or HTTP response accepts. :func:`repair` replaces each with U+FFFD before it is stored.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def is_clean(text: str) -> bool:
    """True when ``text`` encodes to UTF-8 (holds no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def repair(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (the same string when clean)."""
    if is_clean(text):
        return text
    return "".join(REPLACEMENT if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def repair_json(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with every string, key included, repaired."""
    if isinstance(value, str):
        return repair(value)
    if isinstance(value, dict):
        return {repair(k) if isinstance(k, str) else k: repair_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [repair_json(v) for v in value]
    return value
