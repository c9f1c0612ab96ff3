"""A scripted, OpenAI-compatible chat-completions server for tests and benchmarks.

It streams text and tool calls in the chat-completions chunk format, and can be slow, fail with
an HTTP status, or drop the connection, on cue. Nothing here is used by the server itself.

Scripting: a request is matched to a script by a tag ``[[fake:TAG]]`` written anywhere in its
messages (the last one found wins). ``POST /__fake/script {"tag", "turns": [...]}`` queues the
turns for a tag; each model request with that tag takes the next one. A turn is a dict:

    text            the answer, streamed in word-sized pieces (or ``chunks``: the exact pieces)
    tool_calls      [{"name", "arguments" (str or object), "id"?}], arguments streamed in pieces
    delay           seconds between chunks; first_delay: seconds before the first chunk
    status          answer this HTTP status with an OpenAI error body instead
    fail_after      drop the connection after this many chunks
    drop_after_done drop the connection right after ``data: [DONE]`` (no end of the chunked body)
    finish_reason   override ("length" to imitate hitting max tokens)
    usage           {"prompt_tokens", "completion_tokens"} to report
    hang            never answer (until the client gives up)
    omit            frames to leave out of a streamed turn: any of "finish" (the chunk with the
                    finish_reason), "usage", "done" (``data: [DONE]``)
    keepalive_forever  after the turn's chunks, send an SSE comment ``: ping`` every
                    ``keepalive_interval`` seconds (default 1) and never finish
    echo_request_in_error  with ``status``: the error message repeats the whole request body
                    (as some servers' validation errors do)
    raw             send exactly these strings (a list, UTF-8 encoded) as a 200 body instead of
                    a stream, with ``content_type`` (default ``text/event-stream``; null: no
                    content-type header); ``pad_bytes``: then this many bytes of ``x`` (no
                    newline), in 64 KiB pieces

A tag ``pace-FIRST-DELAY-CHUNKS`` with no script queued (``[[fake:pace-100-50-20]]``) answers
CHUNKS pieces of ``word `` (5 characters each), the first after FIRST ms, the others DELAY ms apart:
a model's realistic pace, for benchmarks, without scripting each request.

With no script the model calls ``code_interpreter`` when it is offered and the user asks
something, else ``file_search`` (with the user's words as the query) when that is offered; it
answers a file_search result by quoting the first passage and copying its citation marker, any
other tool result with "The tool returned: …", and otherwise echoes the last user message.
``GET /__fake/requests`` lists the request bodies it received, ``GET /__fake/ports`` the client
address (host and port) each came from, ``GET /__fake/ends`` when each streamed answer ended and how:
``done`` (sent to its end) or ``closed`` (stopped before: the client went away, or a scripted drop).
``GET /__fake/embedded`` lists every text it embedded. A text to embed holding ``[[slow-embed:MS]]``
makes its request answer MS milliseconds late (a slow ingestion).

    python -m assistantd.testing.fake_upstream --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import zlib
from collections import defaultdict, deque
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TAG = re.compile(r"\[\[fake:([A-Za-z0-9_.-]+)\]\]")
PACE = re.compile(r"pace-(\d+)-(\d+)-(\d+)")
MARKER = re.compile(r"【\d+:\d+†[^】]*】")

_scripts: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
_requests: list[dict[str, Any]] = []
_ports: list[tuple[str | None, str | None, int]] = []  # (tag, client host, client port) of each chat request
_ends: list[tuple[str | None, float, str]] = []  # (tag, time.time(), "done" | "closed") of each stream
_embedded: list[str] = []  # every text embedded, in order of arrival
RECORD = True  # benchmarks turn this off (--no-record) so memory stays flat


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def find_tag(body: dict[str, Any]) -> str | None:
    tag = None
    for message in body.get("messages", []):
        for match in TAG.finditer(_text_of(message.get("content"))):
            tag = match.group(1)
    return tag


def paced_turn(tag: str | None) -> dict[str, Any] | None:
    """The turn a ``pace-FIRST-DELAY-CHUNKS`` tag asks for (None for any other tag)."""
    match = PACE.fullmatch(tag or "")
    if match is None:
        return None
    first, delay, chunks = (int(g) for g in match.groups())
    return {"chunks": ["word "] * chunks, "first_delay": first / 1000, "delay": delay / 1000}


def default_turn(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages", [])
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        result = _text_of(last.get("content"))
        cited = MARKER.search(result)
        if cited:
            passage = result[cited.end():].strip().split("\n")[0][:200]
            return {"text": f"The files say: {passage} {cited.group(0)}"}
        return {"text": f"The tool returned: {result}"}
    tool_names = {t.get("function", {}).get("name") for t in body.get("tools") or []}
    user_text = _text_of(last.get("content")) if last.get("role") == "user" else ""
    if "code_interpreter" in tool_names and user_text:
        return {"tool_calls": [{"name": "code_interpreter",
                                "arguments": {"code": "x = (14 - 11) / 3\nprint(x)"}}]}
    if "file_search" in tool_names and user_text:
        return {"tool_calls": [{"name": "file_search", "arguments": {"query": TAG.sub("", user_text).strip()}}]}
    return {"text": f"You said: {user_text}" if user_text else "Hello!"}


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text) or [text]


def _chunk(cid: str, model: str, delta: dict[str, Any] | None = None, finish: str | None = None,
           usage: dict[str, int] | None = None) -> bytes:
    payload: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                               "model": model, "choices": []}
    if delta is not None or finish is not None:
        payload["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    if usage is not None:
        payload["usage"] = usage
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _pieces(turn: dict[str, Any]) -> list[dict[str, Any]]:
    """The deltas of a turn, in order."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    chunks = turn.get("chunks") or (_words(turn["text"]) if turn.get("text") else [])
    deltas += [{"content": c} for c in chunks]
    for i, call in enumerate(turn.get("tool_calls") or []):
        args = call.get("arguments", "")
        args = args if isinstance(args, str) else json.dumps(args)
        call_id = call.get("id") or f"call_fake{i}{int(time.time() * 1000) % 100000}"
        deltas.append({"tool_calls": [{"index": i, "id": call_id, "type": "function",
                                       "function": {"name": call["name"], "arguments": ""}}]})
        step = max(1, len(args) // 4) if len(args) > 8 else max(1, len(args))
        for start in range(0, len(args), step):
            deltas.append({"tool_calls": [{"index": i, "function": {"arguments": args[start:start + step]}}]})
    return deltas


async def chat_completions(request: Request) -> Response:
    body = await request.json()
    tag = find_tag(body)
    if RECORD:
        _requests.append(body)
        _ports.append((tag, request.client.host if request.client else None,
                       request.client.port if request.client else 0))
    turn = _scripts[tag].popleft() if tag and _scripts.get(tag) else paced_turn(tag) or default_turn(body)
    if turn.get("raw") is not None:
        return _raw(turn)
    if turn.get("status"):
        message = turn.get("message", "scripted failure")
        if turn.get("echo_request_in_error"):
            message = f"Invalid request: {json.dumps(body)}"
        return JSONResponse({"error": {"message": message,
                                       "type": "server_error", "param": None, "code": None}},
                            status_code=int(turn["status"]))
    model = body.get("model", "fake")
    cid = f"chatcmpl-{int(time.time() * 1e6)}"
    deltas = _pieces(turn)
    finish = turn.get("finish_reason") or ("tool_calls" if turn.get("tool_calls") else "stop")
    prompt_chars = sum(len(_text_of(m.get("content"))) for m in body.get("messages", []))
    usage = turn.get("usage") or {"prompt_tokens": max(1, prompt_chars // 4),
                                  "completion_tokens": max(1, len(deltas) - 1)}
    usage = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}

    async def stream():
        ended = "closed"
        try:
            async for chunk in _stream():
                yield chunk
            ended = "done"
        finally:
            if RECORD:
                _ends.append((tag, time.time(), ended))

    async def _stream():
        if turn.get("hang"):
            await asyncio.sleep(3600)
        if turn.get("first_delay"):
            await asyncio.sleep(float(turn["first_delay"]))
        delay = float(turn.get("delay") or 0)
        for n, delta in enumerate(deltas):
            if turn.get("fail_after") is not None and n >= int(turn["fail_after"]):
                raise ConnectionResetError("scripted drop")
            if delay and n:
                await asyncio.sleep(delay)
            yield _chunk(cid, model, delta)
        if turn.get("keepalive_forever"):
            while True:
                yield b": ping\n\n"
                await asyncio.sleep(float(turn.get("keepalive_interval") or 1))
        omit = set(turn.get("omit") or ())
        if "finish" not in omit:
            yield _chunk(cid, model, {}, finish)
        if "usage" not in omit:
            yield _chunk(cid, model, usage=usage)
        if "done" not in omit:
            yield b"data: [DONE]\n\n"
        if turn.get("drop_after_done"):
            await asyncio.sleep(0.05)  # let the [DONE] frame go out first
            raise ConnectionResetError("scripted drop after [DONE]")

    return StreamingResponse(stream(), media_type="text/event-stream")


def _raw(turn: dict[str, Any]) -> Response:
    """A 200 answer of exactly the scripted bytes, whatever they are."""
    pieces = [p.encode() for p in turn["raw"]]
    pad = int(turn.get("pad_bytes") or 0)

    async def body():
        for piece in pieces:
            yield piece
        block = b"x" * 65536
        for start in range(0, pad, len(block)):
            yield block[:pad - start]

    response = StreamingResponse(body(), media_type=None)
    content_type = turn.get("content_type", "text/event-stream")
    if content_type is not None:
        response.headers["content-type"] = content_type  # as given: no charset appended
    return response


SLOW_EMBED = re.compile(r"\[\[slow-embed:(\d+)\]\]")


async def embeddings(request: Request) -> Response:
    """Deterministic bag-of-words embeddings (for ``ASSISTANTD_EMBEDDINGS=upstream:<model>`` tests)."""
    body = await request.json()
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    if RECORD:
        _embedded.extend(inputs)
    late = max((int(m) for text in inputs for m in SLOW_EMBED.findall(text)), default=0)
    until = time.monotonic() + late / 1000
    while time.monotonic() < until:  # (a client that went away ends the wait: the fake can stop)
        if await request.is_disconnected():
            return Response(status_code=499)
        await asyncio.sleep(min(0.1, until - time.monotonic()))
    dims = 64
    data = []
    for i, text in enumerate(inputs):
        vec = [0.0] * dims
        for word in re.findall(r"\w+", text.lower()):
            vec[zlib.crc32(word.encode()) % dims] += 1.0
        norm = sum(v * v for v in vec) ** 0.5 or 1.0
        data.append({"object": "embedding", "index": i, "embedding": [v / norm for v in vec]})
    return JSONResponse({"object": "list", "data": data, "model": body.get("model"),
                         "usage": {"prompt_tokens": 0, "total_tokens": 0}})


async def add_script(request: Request) -> Response:
    body = await request.json()
    _scripts[body["tag"]].extend(body["turns"])
    return JSONResponse({"queued": len(_scripts[body["tag"]])})


async def list_requests(request: Request) -> Response:
    tag = request.query_params.get("tag")
    return JSONResponse([r for r in _requests if tag is None or find_tag(r) == tag])


async def list_ports(request: Request) -> Response:
    """The client address each chat request came from, with its tag: a client that keeps its
    connections alive sends several requests from one port; the host tells servers apart when
    several (replicas in containers) share one fake."""
    return JSONResponse([{"tag": tag, "host": host, "port": port} for tag, host, port in _ports])


async def list_ends(request: Request) -> Response:
    tag = request.query_params.get("tag")
    return JSONResponse([{"tag": t, "at": at, "how": how} for t, at, how in _ends if tag is None or t == tag])


async def list_embedded(request: Request) -> Response:
    """Every text the embeddings endpoint was given, as often as it was given."""
    return JSONResponse(_embedded)


async def reset(request: Request) -> Response:
    _ends.clear()
    _embedded.clear()
    _scripts.clear()
    _requests.clear()
    _ports.clear()
    return JSONResponse({"reset": True})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/__fake/script", add_script, methods=["POST"]),
    Route("/__fake/requests", list_requests, methods=["GET"]),
    Route("/__fake/ports", list_ports, methods=["GET"]),
    Route("/__fake/ends", list_ends, methods=["GET"]),
    Route("/__fake/embedded", list_embedded, methods=["GET"]),
    Route("/__fake/reset", reset, methods=["POST"]),
    Route("/healthz", health, methods=["GET"]),
])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--no-record", action="store_true", help="do not keep request bodies (benchmarks)")
    args = parser.parse_args()
    global RECORD
    RECORD = not args.no_record
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
