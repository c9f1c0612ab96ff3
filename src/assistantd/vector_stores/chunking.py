"""Chunking strategies (validated here, stored in their ``static`` form) and token chunking.

``auto`` is 800 tokens with 400 overlap, and is shown as that ``static`` strategy, as OpenAI
showed it. Tokens are o200k_base (:mod:`assistantd.runs.tokens`).
"""

from __future__ import annotations

from typing import Any

from assistantd.api.errors import invalid
from assistantd.runs import tokens

AUTO = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}
MIN_CHUNK, MAX_CHUNK = 100, 4096


def normalize(value: Any, param: str = "chunking_strategy") -> dict[str, Any]:
    """A request's chunking strategy (a dict or ``None``) → its stored ``static`` form, or 400."""
    if value is None:
        return {"type": AUTO["type"], "static": dict(AUTO["static"])}
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if not isinstance(value, dict):
        raise invalid(f"Invalid type for '{param}': expected an object.", param=param, code="invalid_type")
    kind = value.get("type")
    if kind == "auto":
        return normalize(None)
    if kind != "static":
        raise invalid(f"Invalid value: '{kind}'. Supported values are: 'auto' and 'static'.",
                      param=f"{param}.type", code="invalid_value")
    static = value.get("static")
    if not isinstance(static, dict):
        raise invalid(f"Missing required parameter: '{param}.static'.", param=f"{param}.static")
    out = {}
    for name in ("max_chunk_size_tokens", "chunk_overlap_tokens"):
        item = static.get(name)
        if item is None:
            raise invalid(f"Missing required parameter: '{param}.static.{name}'.",
                          param=f"{param}.static.{name}")
        if isinstance(item, bool) or not isinstance(item, int):
            raise invalid(f"Invalid type for '{param}.static.{name}': expected an integer.",
                          param=f"{param}.static.{name}", code="invalid_type")
        out[name] = item
    size, overlap = out["max_chunk_size_tokens"], out["chunk_overlap_tokens"]
    if not MIN_CHUNK <= size <= MAX_CHUNK:
        raise invalid(
            f"Invalid '{param}.static.max_chunk_size_tokens': expected a value between {MIN_CHUNK} "
            f"and {MAX_CHUNK}, but got {size} instead.",
            param=f"{param}.static.max_chunk_size_tokens", code="invalid_value")
    if overlap < 0 or overlap > size // 2:
        raise invalid(
            f"Invalid '{param}.static.chunk_overlap_tokens': expected a value between 0 and half "
            f"of max_chunk_size_tokens ({size // 2}), but got {overlap} instead.",
            param=f"{param}.static.chunk_overlap_tokens", code="invalid_value")
    return {"type": "static", "static": out}


def chunk(text: str, strategy: dict[str, Any]) -> list[tuple[str, int]]:
    """Split ``text`` into ``(chunk text, token count)`` windows of the strategy's size/overlap."""
    size = int(strategy["static"]["max_chunk_size_tokens"])
    overlap = int(strategy["static"]["chunk_overlap_tokens"])
    stride = max(1, size - overlap)
    encoding = tokens._encoding()
    if encoding is None:  # no ranks: windows of ~3 characters per token
        csize, cstride = size * 3, stride * 3
        out = []
        for start in range(0, max(1, len(text)), cstride):
            piece = text[start:start + csize]
            if piece.strip():
                out.append((piece, tokens.count(piece)))
            if start + csize >= len(text):
                break
        return out
    ids = encoding.encode_ordinary(text)
    out = []
    for start in range(0, max(1, len(ids)), stride):
        window = ids[start:start + size]
        piece = encoding.decode_bytes(window).decode("utf-8", errors="ignore")
        if piece.strip():
            out.append((piece, len(window)))
        if start + size >= len(ids):
            break
    return out
