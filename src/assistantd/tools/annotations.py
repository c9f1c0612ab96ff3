"""Annotations on an assistant message's text, built in one place: ``file_path`` for
``sandbox:/mnt/data/…`` links to files the run's code wrote, ``file_citation`` for the citation
markers ``【i:j†name】`` file search handed out and the model copied into its answer."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MARKER", "annotate", "citation_marker"]

SANDBOX_LINK = re.compile(r"sandbox:(/mnt/data/[^\s)\]\"'<>]+)")
MARKER = re.compile(r"【(\d+):(\d+)†([^】]*)】")
_TRAILING = ".,;:"


def citation_marker(call_number: int, rank: int, filename: str) -> str:
    """The marker heading the ``rank``-th passage of the run's ``call_number``-th file search."""
    return f"【{call_number}:{rank}†{filename}】"


def annotate(text: str, sandbox_files: dict[str, str], sources: dict[str, str]) -> list[dict[str, Any]]:
    """The annotations of ``text``, in the order they appear. ``sandbox_files`` maps a path under
    /mnt/data to the file id it was saved as; ``sources`` maps a marker's ``i:j`` to the cited file."""
    found = []
    for match in SANDBOX_LINK.finditer(text):
        path = match.group(1).rstrip(_TRAILING)
        file_id = sandbox_files.get(path)
        if file_id is not None:
            end = match.start() + len("sandbox:") + len(path)
            found.append({"type": "file_path", "text": text[match.start():end], "start_index": match.start(),
                          "end_index": end, "file_path": {"file_id": file_id}})
    if sources and "【" in text:
        for match in MARKER.finditer(text):
            file_id = sources.get(f"{match.group(1)}:{match.group(2)}")
            if file_id is not None:
                found.append({"type": "file_citation", "text": match.group(0), "start_index": match.start(),
                              "end_index": match.end(), "file_citation": {"file_id": file_id}})
    found.sort(key=lambda a: a["start_index"])
    return found
