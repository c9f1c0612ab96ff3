"""tools/: the registry, the interface, annotations — and that tools never reach into runs/."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from assistantd.api.types import WirePart
from assistantd.tools import annotations
from assistantd.tools.base import Tool, ToolContext, ToolResult, string_argument
from assistantd.tools.presentation import BUILTIN_FUNCTIONS, tool_type_of, upstream_tools
from assistantd.tools.registry import TOOL_CLASSES, ToolRegistry

TOOLS = Path(__file__).resolve().parents[2] / "src" / "assistantd" / "tools"


class EchoBody(WirePart):
    text: str


class Echo(Tool):
    type = "echo"
    function = {"name": "echo", "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}
    streamed_argument = "text"

    async def run(self, arguments: str, ctx: ToolContext) -> ToolResult:
        return ToolResult(EchoBody(text=string_argument(arguments, "text")), string_argument(arguments, "text"))


def test_the_builtin_tools_are_registered_and_shown_to_the_model_as_their_classes_say():
    assert [cls.type for cls in TOOL_CLASSES] == ["code_interpreter", "file_search"]
    assert BUILTIN_FUNCTIONS == {cls.type: cls.function for cls in TOOL_CLASSES}
    shown = upstream_tools([{"type": "code_interpreter"}, {"type": "function", "function": {"name": "f", "description": None}}])
    assert shown == [{"type": "function", "function": BUILTIN_FUNCTIONS["code_interpreter"]},
                     {"type": "function", "function": {"name": "f"}}]
    enabled = [{"type": "file_search"}]
    assert (tool_type_of("file_search", enabled), tool_type_of("code_interpreter", enabled)) == ("file_search", "function")


def test_a_registry_looks_tools_up_by_type():
    echo = Echo()
    registry = ToolRegistry([echo])
    assert registry.get("echo") is echo and registry.get("code_interpreter") is None
    assert list(registry) == [echo]
    assert registry.streamed_arguments() == {"echo": "text"}


def test_a_tool_runs_on_its_arguments_alone():
    result = asyncio.run(Echo().run('{"text": "hi"}', None))  # type: ignore[arg-type]
    assert (result.call.model_dump(), result.output, result.sources, result.files) == ({"text": "hi"}, "hi", {}, [])


def test_string_argument_tolerates_what_models_send():
    assert string_argument('{"code": "x"}', "code") == "x"
    assert string_argument('{"code": 1}', "code") == "1"
    assert string_argument("not json", "code") == ""
    assert string_argument("[1]", "code") == ""


def test_annotations_file_paths_and_citations_in_text_order():
    text = "See 【0:1†notes.txt】 and sandbox:/mnt/data/plot.png. Also 【0:9†gone.txt】 sandbox:/mnt/data/other.csv"
    found = annotations.annotate(text, {"/mnt/data/plot.png": "file-plot"}, {"0:1": "file-notes"})
    assert [(a["type"], a["text"]) for a in found] == [
        ("file_citation", "【0:1†notes.txt】"), ("file_path", "sandbox:/mnt/data/plot.png")]
    for a in found:
        assert text[a["start_index"]:a["end_index"]] == a["text"]
    assert found[0]["file_citation"] == {"file_id": "file-notes"}
    assert found[1]["file_path"] == {"file_id": "file-plot"}
    assert annotations.citation_marker(2, 0, "a.md") == "【2:0†a.md】"
    assert annotations.MARKER.fullmatch(annotations.citation_marker(2, 0, "a.md"))


def test_tools_import_nothing_from_runs():
    offenders = []
    for path in TOOLS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("assistantd.runs")]
    assert not offenders, offenders
