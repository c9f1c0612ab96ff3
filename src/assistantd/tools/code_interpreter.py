"""The ``code_interpreter`` tool inside a run: place the run's files in the thread's sandbox, run
the code, and turn what came back into run-step outputs, file objects and the tool message the
model reads (CONTRACT.md: stdout, stderr, errors; files under /mnt/data become files with
purpose ``assistants_output``; images become ``image_file`` content).
"""

from __future__ import annotations

import logging
import mimetypes
import posixpath
import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from assistantd.db.models import File, Message, Thread
from assistantd.files import service as files_service
from assistantd.runs.failures import RunFailure
from assistantd.sandbox.pool import SandboxBusy, SandboxUnavailable

if TYPE_CHECKING:
    from assistantd.runs.executor import RunContext, RunExecutor, Turn

log = logging.getLogger("assistantd.sandbox")

DATA = "/mnt/data"
_UNSAFE = re.compile(r"[/\\\x00-\x1f]")
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


async def _file_ids_for(executor: "RunExecutor", ctx: "RunContext") -> list[str]:
    """Files the run's code may read: the assistant's and the thread's code_interpreter
    resources and the thread's message attachments meant for code_interpreter."""
    run = ctx.run
    wanted: list[str] = list((run.tool_resources or {}).get("code_interpreter", {}).get("file_ids", []))
    async with executor.db.read() as session:
        thread = await session.scalar(select(Thread).where(Thread.id == run.thread_id))
        if thread is not None:
            wanted += (thread.tool_resources or {}).get("code_interpreter", {}).get("file_ids", [])
        rows = await session.scalars(select(Message.attachments).where(
            Message.thread_id == run.thread_id, Message.seq <= run.history_seq))
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


async def _place_files(executor: "RunExecutor", ctx: "RunContext", sandbox) -> None:
    missing = [f for f in await _file_ids_for(executor, ctx) if f not in sandbox.placed_files]
    if not missing:
        return
    async with executor.db.read() as session:
        rows = (await session.scalars(files_service.live(
            select(File).where(File.id.in_(missing), File.tenant == ctx.run.tenant)))).all()
    for row in rows:
        data = executor.files.path(row.id).read_bytes()
        await sandbox.put_file(posixpath.join(DATA, sandbox_name(row.filename, row.id)), data)
        sandbox.placed_files.add(row.id)


async def _save_output(executor: "RunExecutor", ctx: "RunContext", name: str, data: bytes) -> File:
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    row = files_service.new_row(ctx.run.tenant, name, "assistants_output", len(data), content_type, None)
    await executor.files.write_bytes(row.id, data)
    async with executor.db.write() as session:
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


async def run(executor: "RunExecutor", ctx: "RunContext", turn: "Turn", call: dict[str, Any]) -> dict[str, Any]:
    import base64

    code = call["code_interpreter"]["input"]
    try:
        async with executor.sandboxes.borrow(ctx.run.thread_id, ctx.run.tenant) as sandbox:
            await _place_files(executor, ctx, sandbox)
            result = await sandbox.execute(code)
    except SandboxBusy as exc:
        raise RunFailure("server_error", str(exc)) from exc
    except SandboxUnavailable as exc:
        message = f"The code interpreter is unavailable: {exc}"
        return {**call, "code_interpreter": {"input": code, "outputs": [{"type": "logs", "logs": message}]},
                "_output": message}

    if result.get("dropped_bytes"):
        log.info("run %s: %d bytes of code output dropped (ASSISTANTD_SANDBOX_MAX_OUTPUT_BYTES)",
                 ctx.run.id, result["dropped_bytes"])
    outputs: list[dict[str, Any]] = []
    logs = _logs(result)
    if logs:
        outputs.append({"type": "logs", "logs": logs})
    written: list[str] = []
    for image in result.get("images") or []:
        row = await _save_output(executor, ctx, image["name"], base64.b64decode(image["data"]))
        outputs.append({"type": "image", "image": {"file_id": row.id}})
        ctx.images.append(row.id)
    for item in result.get("files") or []:
        path, data = item["path"], base64.b64decode(item["data"])
        row = await _save_output(executor, ctx, posixpath.basename(path), data)
        ctx.sandbox_files[path] = row.id
        written.append(path)
        if row.content_type in IMAGE_TYPES:
            outputs.append({"type": "image", "image": {"file_id": row.id}})
            ctx.images.append(row.id)

    # What the model reads back.
    text = logs or "(no output)"
    if written:
        text += "\n[files written: " + ", ".join(written) + "]"
    if result.get("images"):
        text += f"\n[{len(result['images'])} image(s) shown to the user]"
    if result.get("restarted") or result.get("timed_out"):
        text += "\n[the execution was stopped" + ("; the kernel was restarted]" if result.get("restarted") else "]")
    executor.emit_raw(ctx.run.id, "thread.run.step.delta", {
        "id": turn.tool_step.id, "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": [{
            "index": call["_index"], "type": "code_interpreter",
            "code_interpreter": {"outputs": [{"index": i, **o} for i, o in enumerate(outputs)]},
        }]}},
    })
    return {**call, "code_interpreter": {"input": code, "outputs": outputs}, "_output": text}
