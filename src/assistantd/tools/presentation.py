"""How an assistant's tools are shown to the upstream model (fixed by CONTRACT.md): one function
per enabled tool, the built-in ones under their own names with these exact parameters."""

from __future__ import annotations

import json
from typing import Any

BUILTIN_FUNCTIONS: dict[str, dict[str, Any]] = {
    "code_interpreter": {
        "name": "code_interpreter",
        "description": (
            "Run Python code in a stateful sandbox (a Jupyter-like kernel; variables and files "
            "persist across calls in this thread). Files are under /mnt/data. Returns stdout, "
            "stderr and errors; images and files written are shown to the user."
        ),
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    },
    "file_search": {
        "name": "file_search",
        "description": (
            "Search the files attached to this assistant and thread. Returns the most relevant "
            "passages, each with a citation marker to copy into the answer where it is used."
        ),
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


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


def string_argument(arguments: str, name: str) -> str:
    """One string argument of a built-in tool call ('' when the model sent malformed JSON)."""
    try:
        value = json.loads(arguments or "{}").get(name, "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else json.dumps(value)
