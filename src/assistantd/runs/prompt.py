"""The upstream request for one model turn of a run, built from the database alone.

Messages: a system message with the run's instructions, the thread's history up to the run's
``history_seq`` (truncated per ``truncation_strategy`` and ``max_prompt_tokens``), then — within
the run — each step in order: the assistant's text, its ``tool_calls`` and the ``tool`` messages
that answer them. Because everything comes from rows, a run resumes from what was persisted.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd.db.models import File, Message, Run, RunStep
from assistantd.db.rows import columns_of, load_detached
from assistantd.files.storage import FileStore
from assistantd.runs import tokens
from assistantd.tools.presentation import upstream_tool_choice, upstream_tools

# Context windows of well-known models (tokens); ASSISTANTD_CONTEXT_WINDOWS adds or overrides.
CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-4.1": 1_047_576, "gpt-4.1-mini": 1_047_576, "gpt-4.1-nano": 1_047_576,
    "gpt-4o": 128_000, "gpt-4o-mini": 128_000, "gpt-4-turbo": 128_000, "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385, "o1": 200_000, "o3": 200_000, "o3-mini": 200_000, "o4-mini": 200_000,
    "gpt-5": 400_000, "gpt-5-mini": 400_000, "gpt-5-nano": 400_000,
}
DEFAULT_CONTEXT_WINDOW = 32_768
# Room left for the answer when ``auto`` fits history into the context window.
COMPLETION_RESERVE = 4_096


def context_window(model: str, overrides: dict[str, int]) -> int:
    if model in overrides:
        return overrides[model]
    # Dated snapshots (gpt-4o-2024-08-06) share their family's window; longest prefix wins.
    for name in sorted(CONTEXT_WINDOWS, key=len, reverse=True):
        if model == name or model.startswith(name + "-"):
            return CONTEXT_WINDOWS[name]
    return DEFAULT_CONTEXT_WINDOW


class PromptTooLong(Exception):
    """Even the newest message does not fit ``max_prompt_tokens``."""


@dataclass
class Prompt:
    body: dict[str, Any]
    prompt_tokens: int  # our own count, used when the upstream reports no usage


# Built once with bound parameters: building a statement costs more than running it on SQLite.
_FILE = select(File).where(File.id == bindparam("file_id"), File.tenant == bindparam("tenant"))
_RUN_STEPS = (select(RunStep).where(RunStep.run_id == bindparam("run_id"), RunStep.tenant == bindparam("tenant"))
              .order_by(RunStep.seq))
_MESSAGES_IN = select(Message).where(Message.id.in_(bindparam("ids", expanding=True)), Message.tenant == bindparam("tenant"))
_HISTORY = (select(*columns_of(Message)).where(Message.thread_id == bindparam("thread_id"),
                                               Message.tenant == bindparam("tenant"), Message.seq <= bindparam("seq"))
            .order_by(Message.seq))


def _text(content: list[dict[str, Any]]) -> str:
    return "".join(p["text"]["value"] for p in content if p.get("type") == "text")


async def _image_url(files: FileStore, session: AsyncSession, tenant: str, part: dict[str, Any]) -> dict[str, Any] | None:
    ref = part["image_file"]
    row = await session.scalar(_FILE, {"file_id": ref["file_id"], "tenant": tenant})
    if row is None:
        return None
    data = await to_thread.run_sync(files.path(row.id).read_bytes)
    url = f"data:{row.content_type};base64,{base64.b64encode(data).decode()}"
    image = {"url": url}
    if ref.get("detail"):
        image["detail"] = ref["detail"]
    return {"type": "image_url", "image_url": image}


async def _chat_message(session: AsyncSession, files: FileStore, message: Message) -> tuple[dict[str, Any], int]:
    """A thread message in chat-completions form, and its token count."""
    if message.role == "assistant" or all(p.get("type") == "text" for p in message.content):
        text = _text(message.content)
        return {"role": message.role, "content": text}, tokens.count(text) + tokens.MESSAGE_OVERHEAD
    parts: list[dict[str, Any]] = []
    n = tokens.MESSAGE_OVERHEAD
    for part in message.content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part["text"]["value"]})
            n += tokens.count(part["text"]["value"])
        elif kind == "image_url":
            parts.append({"type": "image_url", "image_url": part["image_url"]})
            n += tokens.IMAGE_TOKENS.get(part["image_url"].get("detail", "auto"), 765)
        elif kind == "image_file":
            image = await _image_url(files, session, message.tenant, part)
            if image is not None:
                parts.append(image)
                n += tokens.IMAGE_TOKENS.get(part["image_file"].get("detail", "auto"), 765)
    return {"role": message.role, "content": parts}, n


async def _run_messages(session: AsyncSession, run: Run) -> list[dict[str, Any]]:
    """What the run itself added: its text, tool calls and tool results, step by step."""
    steps = (await session.scalars(_RUN_STEPS, {"run_id": run.id, "tenant": run.tenant})).all()
    message_ids = [s.step_details["message_creation"]["message_id"] for s in steps if s.type == "message_creation"]
    texts: dict[str, str] = {}
    if message_ids:
        rows = await session.scalars(_MESSAGES_IN, {"ids": message_ids, "tenant": run.tenant})
        texts = {m.id: _text(m.content) for m in rows}
    out: list[dict[str, Any]] = []
    for step in steps:
        if step.type == "message_creation":
            text = texts.get(step.step_details["message_creation"]["message_id"], "")
            if text:
                out.append({"role": "assistant", "content": text})
            continue
        calls = step.step_details.get("tool_calls", [])
        if not calls:
            continue
        tool_io = step.tool_io or {}
        said = [_model_side(c, tool_io.get(c["id"]) or {}) for c in calls]
        out.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": name, "arguments": arguments}}
            for c, (name, arguments, _) in zip(calls, said)
        ]})
        out += [{"role": "tool", "tool_call_id": c["id"], "content": output} for c, (_, _, output) in zip(calls, said)]
    return out


def _model_side(call: dict[str, Any], io: dict[str, Any]) -> tuple[str, str, str]:
    """A step's tool call as the model made it: the function's name, the arguments it wrote and
    the output it was told (a built-in tool's are kept in the step's ``tool_io``)."""
    if call["type"] == "function":
        function = call["function"]
        return function["name"], function.get("arguments") or "", function.get("output") or ""
    return call["type"], io.get("arguments", ""), io.get("output", "")


async def build(session: AsyncSession, files: FileStore, run: Run, upstream_model: str,
                windows: dict[str, int], completion_budget: int | None, first_turn: bool) -> Prompt:
    system = {"role": "system", "content": run.instructions}
    # A run's first turn has no steps of its own yet (usage is recorded at every turn's end).
    in_run = [] if first_turn else await _run_messages(session, run)
    fixed = tokens.count(run.instructions) + tokens.MESSAGE_OVERHEAD + sum(
        tokens.count(m.get("content") or json.dumps(m.get("tool_calls"))) + tokens.MESSAGE_OVERHEAD for m in in_run
    )
    history_rows = [row for row, in await load_detached(
        session, Message, _HISTORY, {"thread_id": run.thread_id, "tenant": run.tenant, "seq": run.history_seq})]
    strategy = run.truncation_strategy or {"type": "auto"}
    if strategy.get("type") == "last_messages" and strategy.get("last_messages"):
        history_rows = history_rows[-int(strategy["last_messages"]):]

    budget = context_window(run.model, windows) - COMPLETION_RESERVE
    if run.max_prompt_tokens is not None:
        budget = min(budget, run.max_prompt_tokens)
    history: list[dict[str, Any]] = []
    used = fixed
    # Keep the newest messages that fit; a message that does not fit ends the walk back.
    for row in reversed(history_rows):
        message, n = await _chat_message(session, files, row)
        if used + n > budget:
            if not history and not in_run and run.max_prompt_tokens is not None:
                raise PromptTooLong()
            break
        history.append(message)
        used += n
    if used > budget and run.max_prompt_tokens is not None:
        raise PromptTooLong()
    history.reverse()

    body: dict[str, Any] = {"model": upstream_model, "messages": [system, *history, *in_run]}
    if run.tools:
        body["tools"] = upstream_tools(run.tools)
        body["parallel_tool_calls"] = run.parallel_tool_calls
        if run.tool_choice is not None:
            body["tool_choice"] = upstream_tool_choice(run.tool_choice)
    for name in ("temperature", "top_p", "reasoning_effort"):
        value = getattr(run, name)
        if value is not None:
            body[name] = value
    if isinstance(run.response_format, dict):
        body["response_format"] = run.response_format
    if completion_budget is not None:
        body["max_completion_tokens"] = completion_budget
    return Prompt(body, used)
