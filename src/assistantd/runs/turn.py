"""One model turn, read from the upstream's chat-completion chunks: pure, no database, no I/O.

:class:`TurnReader` takes the chunks as they arrive and says, for each, what happened in the
terms of a run — text went on, a tool call began, a tool call's input went on — and keeps what
the turn produced so far (its text, its tool calls, the upstream's usage and finish reason). The
executor turns those happenings into messages, steps and stream events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from assistantd.api.text import repair
from assistantd.runs import tokens
from assistantd.tools.partial_json import StreamingStringField

__all__ = ["InputDelta", "TextDelta", "ToolCallDraft", "ToolCallStarted", "TurnReader"]


@dataclass(slots=True)
class ToolCallDraft:
    """A tool call as the model is still writing it."""

    index: int  # its place among the turn's calls: the ``index`` of its step deltas
    id: str
    name: str
    type: str  # "function", or the built-in tool the name stands for
    arguments: str = ""
    streamed: StreamingStringField | None = None  # the argument shown as the call's input


@dataclass(slots=True, frozen=True)
class TextDelta:
    value: str


@dataclass(slots=True, frozen=True)
class ToolCallStarted:
    call: ToolCallDraft


@dataclass(slots=True, frozen=True)
class InputDelta:
    """More of a call's input as the client sees it: a function's raw arguments, or the decoded
    text of a built-in tool's streamed argument (code_interpreter's ``code``)."""

    call: ToolCallDraft
    piece: str


Happening = TextDelta | ToolCallStarted | InputDelta


@dataclass
class TurnReader:
    """``tool_type_of(name)`` maps a called function's name to its tool type; ``streamed``
    names, per built-in tool type, the argument whose text streams out as the call's input;
    ``new_call_id()`` makes a call's public id."""

    tool_type_of: Callable[[str], str]
    new_call_id: Callable[[], str]
    streamed: Mapping[str, str] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)
    calls: dict[int, ToolCallDraft] = field(default_factory=dict)  # upstream index → call
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None

    def feed(self, chunk: dict[str, Any]) -> list[Happening]:
        """Take one chunk (a parsed ``chat.completion.chunk``); say what it changed."""
        happened: list[Happening] = []
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:  # one answer per turn: the first choice
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self.text.append(content)
                happened.append(TextDelta(content))
            for call_delta in delta.get("tool_calls") or ():
                self._call_delta(call_delta, happened)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return happened

    def _call_delta(self, call_delta: dict[str, Any], happened: list[Happening]) -> None:
        upstream_index = call_delta.get("index", 0)
        function = call_delta.get("function") or {}
        call = self.calls.get(upstream_index)
        if call is None:
            name = function.get("name") or ""
            kind = self.tool_type_of(name)
            argument = self.streamed.get(kind)
            call = ToolCallDraft(index=len(self.calls), id=self.new_call_id(), name=name, type=kind,
                                 streamed=StreamingStringField(argument) if argument else None)
            self.calls[upstream_index] = call
            happened.append(ToolCallStarted(call))
        elif function.get("name"):
            call.name += function["name"]
        piece = function.get("arguments") or ""
        if not piece:
            return
        call.arguments += piece
        if call.type == "function":
            happened.append(InputDelta(call, piece))
        elif call.streamed is not None:
            decoded = repair(call.streamed.feed(piece))  # its JSON may escape a lone surrogate
            if decoded:
                happened.append(InputDelta(call, decoded))

    @property
    def answer(self) -> str:
        return "".join(self.text)

    def ordered_calls(self) -> list[ToolCallDraft]:
        return sorted(self.calls.values(), key=lambda c: c.index)

    def final_usage(self, prompt_tokens: int) -> dict[str, int]:
        """The turn's usage: the upstream's when it reported one, else our own count (the
        prompt as we counted it, the answer's text and tool arguments)."""
        usage = self.usage or {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": tokens.count(self.answer) + sum(tokens.count(c.arguments)
                                                                 for c in self.calls.values()),
        }
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
