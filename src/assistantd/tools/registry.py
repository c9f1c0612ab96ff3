"""The built-in tools this server has, by type: the one list to extend when a tool is added.

The registry is built once per server with the services tools need (the sandbox pool, the
searcher); the run executor only asks it for a tool by type, and the prompt builder for the
functions the model is shown (:mod:`assistantd.tools.presentation`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from assistantd.sandbox.pool import SandboxPool
from assistantd.tools.base import Tool
from assistantd.tools.code_interpreter import CodeInterpreter
from assistantd.tools.file_search import FileSearch
from assistantd.vector_stores.search import Searcher

__all__ = ["TOOL_CLASSES", "ToolRegistry", "ToolServices"]

# Every built-in tool, in the order the model is shown them.
TOOL_CLASSES: tuple[type[Tool], ...] = (CodeInterpreter, FileSearch)


@dataclass(frozen=True)
class ToolServices:
    """The server's long-lived services a tool may be built with."""

    sandboxes: SandboxPool
    searcher: Searcher
    ready_seconds: float = 60.0  # Settings.file_search_ready_seconds


class ToolRegistry:
    def __init__(self, tools: list[Tool]) -> None:
        self._tools = {tool.type: tool for tool in tools}

    @classmethod
    def build(cls, services: ToolServices) -> "ToolRegistry":
        return cls([CodeInterpreter(services.sandboxes), FileSearch(services.searcher, services.ready_seconds)])

    def get(self, tool_type: str) -> Tool | None:
        return self._tools.get(tool_type)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def streamed_arguments(self) -> dict[str, str]:
        """Per tool type, the argument whose text streams out as the call's input."""
        return {t.type: t.streamed_argument for t in self._tools.values() if t.streamed_argument}
