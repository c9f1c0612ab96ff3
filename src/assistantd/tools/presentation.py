"""How an assistant's tools are shown to the upstream model (fixed by CONTRACT.md): one function
per enabled tool, the built-in ones under their own names with the parameters their classes
define (:mod:`assistantd.tools.registry` lists them)."""

from __future__ import annotations

from typing import Any

from assistantd.tools.registry import TOOL_CLASSES

# How the model sees each built-in tool: as the function its class defines.
BUILTIN_FUNCTIONS: dict[str, dict[str, Any]] = {tool.type: tool.function for tool in TOOL_CLASSES}


def upstream_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if tool["type"] in BUILTIN_FUNCTIONS:
            out.append({"type": "function", "function": BUILTIN_FUNCTIONS[tool["type"]]})
        else:
            function = {k: v for k, v in tool["function"].items() if v is not None}
            out.append({"type": "function", "function": function})
    return out


def upstream_tool_choice(choice: Any) -> Any:
    """Assistants' ``tool_choice`` → chat-completions form (``None``: leave the default)."""
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice["function"]["name"]}}
    return {"type": "function", "function": {"name": choice["type"]}}


def tool_type_of(function_name: str, tools: list[dict[str, Any]]) -> str:
    """The run-step tool-call type for a function name the model called."""
    enabled = {t["type"] for t in tools}
    if function_name in BUILTIN_FUNCTIONS and function_name in enabled:
        return function_name
    return "function"
