"""Tool calls on the wire, as a run step shows them and as they stream (mirroring openai-python's
``types/beta/threads/runs``): the function, code_interpreter and file_search calls, their outputs
and results, and their deltas. Here, in ``tools/``, because a tool builds its own call's body;
the run step objects (:mod:`assistantd.runs.schemas`) are made of these."""

from __future__ import annotations

from typing import Any, Literal, Union

from assistantd.api.types import DeltaPart, OneOf, WirePart, absent_if_none

__all__ = [
    "CodeInterpreter", "CodeInterpreterDelta", "CodeInterpreterImage", "CodeInterpreterImageDelta",
    "CodeInterpreterImageFile", "CodeInterpreterLogs", "CodeInterpreterLogsDelta", "CodeInterpreterOutput",
    "CodeInterpreterOutputDelta", "CodeInterpreterToolCall", "CodeInterpreterToolCallDelta", "FileSearch",
    "FileSearchRankingOptions", "FileSearchResult", "FileSearchResultContent", "FileSearchToolCall",
    "FileSearchToolCallDelta", "Function", "FunctionDelta", "FunctionToolCall", "FunctionToolCallDelta",
    "ToolCall", "ToolCallDelta",
]


class Function(WirePart):
    name: str
    arguments: str
    output: str | None  # null until the client submits it


class FunctionToolCall(WirePart):
    id: str
    type: Literal["function"] = "function"
    function: Function


class CodeInterpreterLogs(WirePart):
    """What the code printed: its stdout, stderr and any error's traceback."""

    type: Literal["logs"] = "logs"
    logs: str


class CodeInterpreterImageFile(WirePart):
    file_id: str


class CodeInterpreterImage(WirePart):
    """An image the code displayed, kept as an ``assistants_output`` file."""

    type: Literal["image"] = "image"
    image: CodeInterpreterImageFile


CodeInterpreterOutput = OneOf[Union[CodeInterpreterLogs, CodeInterpreterImage]]


class CodeInterpreter(WirePart):
    input: str
    outputs: list[CodeInterpreterOutput]


class CodeInterpreterToolCall(WirePart):
    id: str
    type: Literal["code_interpreter"] = "code_interpreter"
    code_interpreter: CodeInterpreter


class FileSearchRankingOptions(WirePart):
    ranker: Literal["auto", "default_2024_08_21"]
    score_threshold: float


class FileSearchResultContent(WirePart):
    type: Literal["text"] = "text"
    text: str


class FileSearchResult(WirePart):
    file_id: str
    file_name: str
    score: float
    # The passage: shown only when the request's include[] asks for it.
    content: list[FileSearchResultContent] | None = absent_if_none()


class FileSearch(WirePart):
    """Empty until the search has run."""

    ranking_options: FileSearchRankingOptions | None = absent_if_none()
    results: list[FileSearchResult] | None = absent_if_none()


class FileSearchToolCall(WirePart):
    id: str
    type: Literal["file_search"] = "file_search"
    file_search: FileSearch


ToolCall = OneOf[Union[CodeInterpreterToolCall, FileSearchToolCall, FunctionToolCall]]



# --- stream deltas ------------------------------------------------------------------------------

class FunctionDelta(WirePart):
    name: str | None = None
    arguments: str | None = None
    output: str | None = None


class _ToolCallDelta(DeltaPart):
    type: str
    id: str | None = None  # in the call's first delta only


class FunctionToolCallDelta(_ToolCallDelta):
    type: Literal["function"]
    function: FunctionDelta | None = None


class CodeInterpreterLogsDelta(DeltaPart):
    type: Literal["logs"]
    logs: str | None = None


class CodeInterpreterImageDelta(DeltaPart):
    type: Literal["image"]
    image: CodeInterpreterImageFile | None = None


CodeInterpreterOutputDelta = OneOf[Union[CodeInterpreterLogsDelta, CodeInterpreterImageDelta]]


class CodeInterpreterDelta(WirePart):
    """The code as the model writes it (``input``), then what it produced (``outputs``)."""

    input: str | None = None
    outputs: list[CodeInterpreterOutputDelta] | None = None


class CodeInterpreterToolCallDelta(_ToolCallDelta):
    type: Literal["code_interpreter"]
    code_interpreter: CodeInterpreterDelta | None = None


class FileSearchToolCallDelta(_ToolCallDelta):
    type: Literal["file_search"]
    file_search: dict[str, Any]  # the spec: "for now, this is always going to be an empty object"


ToolCallDelta = OneOf[Union[CodeInterpreterToolCallDelta, FileSearchToolCallDelta, FunctionToolCallDelta]]
