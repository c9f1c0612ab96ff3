"""What a built-in tool is: the interface every tool implements, what it is given, what it returns.

A tool (code_interpreter, file_search) is called by the model as a function of its own name
(CONTRACT.md). The run executor looks the tool up in the :class:`~assistantd.tools.registry.ToolRegistry`,
gives it a :class:`ToolContext` and records the :class:`ToolResult` on the run step; a tool never
sees the executor. Client-side ``function`` tools are not tools here: the executor hands them to
the client through ``requires_action``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from assistantd.api.types import WirePart
from assistantd.db import Database
from assistantd.db.models import Run
from assistantd.files.storage import FileStore

__all__ = ["MadeFile", "Tool", "ToolContext", "ToolFailure", "ToolResult", "string_argument"]


class ToolFailure(Exception):
    """Raised by a tool when the whole run must end ``failed`` (``code`` is one of last_error's:
    server_error, rate_limit_exceeded, invalid_prompt). A failure the model can read about and
    work around is a :class:`ToolResult` saying so instead."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class ToolContext:
    """What a tool gets for one call."""

    run: Run  # the run making the call (read it; the executor owns its state)
    db: Database
    files: FileStore
    step_id: str  # the tool_calls step the call belongs to
    earlier_in_step: list[str]  # the tool types of the calls before it in the step
    emit_delta: Callable[[dict[str, Any]], None]  # stream a step delta of this call: the body under its type
    cancelled: Callable[[], bool] = lambda: False  # whether the run was asked to stop (a long wait gives up)


@dataclass(frozen=True)
class MadeFile:
    """A file a tool made (already stored as a file object)."""

    file_id: str
    path: str | None = None  # where the tool wrote it (sandbox:/mnt/data/… links to it become file_path annotations)
    show: bool = False  # shown to the user as image_file content of the run's next message


@dataclass
class ToolResult:
    call: WirePart  # the call's body in the step, under its type (tools/schemas.py: CodeInterpreter, FileSearch)
    output: str  # what the model is told the tool returned
    sources: dict[str, str] = field(default_factory=dict)  # citation marker "i:j" → the cited file's id
    files: list[MadeFile] = field(default_factory=list)


class Tool(ABC):
    """A built-in tool. Subclasses set ``type`` and ``function`` and implement :meth:`run`."""

    type: ClassVar[str]
    function: ClassVar[dict[str, Any]]  # the function definition the upstream model sees
    streamed_argument: ClassVar[str | None] = None  # an argument whose text streams as the call's input
    # May a call that was cut off mid-way (its server process died) simply run again? Only when
    # running it twice does what running it once does; otherwise its effects are unknown and the
    # run that made it cannot be resumed.
    repeatable: ClassVar[bool] = False

    def opening(self) -> dict[str, Any]:
        """The call's body in its first step delta and in its step until it has run."""
        return {}

    def pending(self, arguments: str) -> dict[str, Any]:
        """The call's body in its step once the model has written all of it, until it has run."""
        return self.opening()

    def input_delta(self, piece: str) -> dict[str, Any]:
        """The body of a step delta carrying more of the streamed argument."""
        return {}

    @abstractmethod
    async def run(self, arguments: str, ctx: ToolContext) -> ToolResult:
        """Execute the call whose JSON ``arguments`` the model wrote."""


def string_argument(arguments: str, name: str) -> str:
    """One string argument of a built-in tool call ('' when the model sent malformed JSON)."""
    try:
        value = json.loads(arguments or "{}").get(name, "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else json.dumps(value)
