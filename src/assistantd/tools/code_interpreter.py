"""The ``code_interpreter`` tool inside a run: place the run's files in the thread's sandbox, run
the code, and turn what came back into run-step outputs, file objects and the tool message the
model reads (CONTRACT.md: stdout, stderr, errors; files under /mnt/data become files with
purpose ``assistants_output``; images become ``image_file`` content).
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import posixpath
import re
from typing import Any

from sqlalchemy import select

from assistantd.api.text import repair
from assistantd.db.models import File, Message, Run, Thread
from assistantd.files import service as files_service
from assistantd.tools import schemas as wire
from assistantd.sandbox.pool import SandboxBusy, SandboxPool, SandboxUnavailable
from assistantd.tools.base import MadeFile, Tool, ToolContext, ToolFailure, ToolResult, string_argument

log = logging.getLogger("assistantd.sandbox")

DATA = "/mnt/data"
_UNSAFE = re.compile(r"[/\\\x00-\x1f]")
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


class CodeInterpreter(Tool):
    type = "code_interpreter"
    function = {
        "name": "code_interpreter",
        "description": (
            "Run Python code in a stateful sandbox (a Jupyter-like kernel; variables and files "
            "persist across calls in this thread). Files are under /mnt/data. Returns stdout, "
            "stderr and errors; images and files written are shown to the user."
        ),
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    }
    streamed_argument = "code"  # the code streams out as code_interpreter.input
    repeatable = False  # code may do anything once: a cut-off execution cannot be told from a finished one

    def __init__(self, sandboxes: SandboxPool) -> None:
        self.sandboxes = sandboxes

    def opening(self) -> dict[str, Any]:
        return {"input": "", "outputs": []}

    def pending(self, arguments: str) -> dict[str, Any]:
        return {"input": repair(string_argument(arguments, "code")), "outputs": []}

    def input_delta(self, piece: str) -> dict[str, Any]:
        return {"input": piece}

    async def run(self, arguments: str, ctx: ToolContext) -> ToolResult:
        code = repair(string_argument(arguments, "code"))
        try:
            async with self.sandboxes.borrow(ctx.run.thread_id, ctx.run.tenant) as sandbox:
                await _place_files(ctx, sandbox)
                result = await sandbox.execute(code)
        except SandboxBusy as exc:
            raise ToolFailure("server_error", str(exc)) from exc
        except SandboxUnavailable as exc:
            message = f"The code interpreter is unavailable: {exc}"
            return ToolResult(wire.CodeInterpreter(input=code, outputs=[wire.CodeInterpreterLogs(logs=message)]), message)

        if result.get("dropped_bytes"):
            log.info("run %s: %d bytes of code output dropped (ASSISTANTD_SANDBOX_MAX_OUTPUT_BYTES)",
                     ctx.run.id, result["dropped_bytes"])
        outputs: list[wire.CodeInterpreterOutput] = []
        logs = _logs(result)
        if logs:
            outputs.append(wire.CodeInterpreterLogs(logs=logs))
        made: list[MadeFile] = []
        for image in result.get("images") or []:
            row = await _save_output(ctx, image["name"], base64.b64decode(image["data"]))
            outputs.append(_image(row.id))
            made.append(MadeFile(row.id, show=True))
        for item in result.get("files") or []:
            path = item["path"]
            row = await _save_output(ctx, posixpath.basename(path), base64.b64decode(item["data"]))
            shown = row.content_type in IMAGE_TYPES
            if shown:
                outputs.append(_image(row.id))
            made.append(MadeFile(row.id, path=path, show=shown))

        ctx.emit_delta({"outputs": [{"index": i, **o.model_dump()} for i, o in enumerate(outputs)]})
        return ToolResult(wire.CodeInterpreter(input=code, outputs=outputs), _model_text(result, logs, made), files=made)


def _image(file_id: str) -> wire.CodeInterpreterImage:
    return wire.CodeInterpreterImage(image=wire.CodeInterpreterImageFile(file_id=file_id))


def _model_text(result: dict[str, Any], logs: str, made: list[MadeFile]) -> str:
    """What the model reads back."""
    text = logs or "(no output)"
    written = [f.path for f in made if f.path]
    if written:
        text += "\n[files written: " + ", ".join(written) + "]"
    if result.get("images"):
        text += f"\n[{len(result['images'])} image(s) shown to the user]"
    if result.get("restarted") or result.get("timed_out"):
        text += "\n[the execution was stopped" + ("; the kernel was restarted]" if result.get("restarted") else "]")
    return text


async def _file_ids_for(ctx: ToolContext) -> list[str]:
    """Files the run's code may read: the assistant's and the thread's code_interpreter
    resources and the thread's message attachments meant for code_interpreter."""
    run: Run = ctx.run
    wanted: list[str] = list((run.tool_resources or {}).get("code_interpreter", {}).get("file_ids", []))
    async with ctx.db.read() as session:
        thread = await session.scalar(select(Thread).where(Thread.id == run.thread_id, Thread.tenant == run.tenant))
        if thread is not None:
            wanted += (thread.tool_resources or {}).get("code_interpreter", {}).get("file_ids", [])
        rows = await session.scalars(select(Message.attachments).where(
            Message.thread_id == run.thread_id, Message.tenant == run.tenant, Message.seq <= run.history_seq))
        for attachments in rows:
            for attachment in attachments or []:
                if any(t.get("type") == "code_interpreter" for t in attachment.get("tools", [])):
                    wanted.append(attachment["file_id"])
    return list(dict.fromkeys(wanted))


def sandbox_name(filename: str | None, file_id: str) -> str:
    """The name a file gets under /mnt/data: its own base name, unless that is empty, ``.``,
    ``..``, or holds path separators or control characters (then the file's id)."""
    name = posixpath.basename(filename or "")
    if name in ("", ".", "..") or _UNSAFE.search(name):
        return file_id
    return name


async def _place_files(ctx: ToolContext, sandbox) -> None:
    missing = [f for f in await _file_ids_for(ctx) if f not in sandbox.placed_files]
    if not missing:
        return
    async with ctx.db.read() as session:
        rows = (await session.scalars(files_service.live(
            select(File).where(File.id.in_(missing), File.tenant == ctx.run.tenant)))).all()
    for row in rows:
        data = ctx.files.path(row.id).read_bytes()
        await sandbox.put_file(posixpath.join(DATA, sandbox_name(row.filename, row.id)), data)
        sandbox.placed_files.add(row.id)


async def _save_output(ctx: ToolContext, name: str, data: bytes) -> File:
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    row = files_service.new_row(ctx.run.tenant, name, "assistants_output", len(data), content_type, None)
    await ctx.files.write_bytes(row.id, data)
    async with ctx.db.write() as session:
        session.add(row)
    return row


def _logs(result: dict[str, Any]) -> str:
    parts = [result.get("stdout") or "", result.get("stderr") or ""]
    error = result.get("error")
    if error:
        parts.append(error.get("traceback") or f"{error.get('name')}: {error.get('value')}")
        if not error.get("traceback") and error.get("value"):
            parts[-1] = f"{error.get('name')}: {error.get('value')}"
    parts += [f"[{note}]" for note in result.get("notes") or ()]
    return "".join(p if p.endswith("\n") or not p else p + "\n" for p in parts if p).rstrip("\n")
