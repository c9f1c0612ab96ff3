"""Request bodies: their size is bounded before they are read whole, and JSON bodies are parsed
once, here, with bounds on what the parse may cost and on how deep a value may nest.

* :class:`BodyLimitMiddleware` (pure ASGI): a JSON request whose ``Content-Length`` says more
  than ``max_request_bytes``, or whose chunked body grows past it, is answered 413 in OpenAI's
  envelope without reading further (``connection: close``, so the server does not drain the
  rest). Uploads (``POST /v1/files``) are bounded by their handler with ``max_upload_bytes``.
* :class:`JSONRoute`: every route parses its body with orjson, which refuses lone surrogates
  (``"\\ud800"``) and invalid UTF-8, NaN and infinities, so no such text reaches the database.
  Before parsing, a body dense with JSON values is counted off the event loop (the parse of
  8 MiB of tiny values holds the GIL for ~130 ms; the count, in a worker thread, gives the GIL
  up every few ms) and refused above a bound; a value nested deeper than ``max_json_depth`` is
  refused with the ``param`` where it nests (what is stored can then always be read back); and
  a request carries at most ``max_messages_per_request`` messages.
"""

from __future__ import annotations

import asyncio

import json
import re
import time
from typing import Any, Callable, Coroutine

import orjson
from anyio import to_thread
from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistantd.api.errors import APIError, invalid
from assistantd.api.text import is_clean

# Bodies up to this size are parsed on the event loop whatever they hold (at most a few ms).
DENSE_CHECK_BYTES = 64 * 1024
# Values (``,`` ``[`` ``{`` outside strings) a body may hold: ``max_json_values`` (a setting,
# 40,000 by default). orjson parses ~8 million a second holding the GIL (in whichever thread, so
# the loop waits for it), so bodies with more than PARSE_FACTOR times that (~20 ms of parse, twice
# that on a fresh process) are refused unparsed, after an exact count in a worker thread (which
# gives the GIL up between slices); those between are parsed only to report a bound that fires
# first (too many messages: 50,000 one-word messages are 150,001 values), then refused, since
# validating, storing and answering each value costs several times its parse.
PARSE_FACTOR = 4
# Where a request carries messages.
MESSAGE_LISTS = (("messages",), ("additional_messages",), ("thread", "messages"))
# Uploads have their own bound (``max_upload_bytes``), enforced while their form is read.
UNBOUNDED_ROUTES = frozenset({("POST", "/v1/files")})

_STRING = re.compile(rb'"[^"]*"')  # once escapes are gone
COUNT_SLICE = 256 * 1024

NOT_JSON = ("We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what "
            "was sent was not valid JSON.)")


def too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is too large: at most {limit} bytes are accepted.",
                    code="request_too_large", headers={"connection": "close"})


def _too_many_values(limit: int) -> APIError:
    return APIError(413, f"The request body holds too many JSON values: at most {limit} are accepted.",
                    code="request_too_large")


# --- the size bound ----------------------------------------------------------------------------

class BodyLimitMiddleware:
    """Reads a request's body up to ``max_bytes`` before the app runs, then hands it on."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") \
                or (scope["method"], scope["path"]) in UNBOUNDED_ROUTES:
            return await self.app(scope, receive, send)
        limit = self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    return await _answer(too_large(limit), send)
                break
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _answer(too_large(limit), send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replayed(chunks[0] if len(chunks) == 1 else b"".join(chunks), receive), send)


def replayed(body: bytes, receive: Receive) -> Receive:
    """``receive`` for an app after the body was read: ``body`` in one message, then what
    follows it (a disconnect: streams watch for it)."""
    done = False

    async def replay() -> Message:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(error: APIError, send: Send) -> None:
    payload = orjson.dumps(error.body())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (error.headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


# --- parsing -----------------------------------------------------------------------------------

def count_values(body: bytes, stop_after: int) -> int:
    """JSON values in ``body`` (commas and openings outside strings), counted up to ``stop_after``.

    Escapes are dropped first, so every quote left delimits a string; then the body is taken in
    slices, each stripped of its strings and counted by C code (~3 ms a slice). Between slices a
    worker thread gives the GIL up, so the event loop never waits for it long."""
    cleaned = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    count, inside = 0, False
    for start in range(0, len(cleaned), COUNT_SLICE):
        piece = cleaned[start:start + COUNT_SLICE]
        if inside:  # the slice starts within a string the last one opened
            piece = b'"' + piece
        inside = piece.count(b'"') % 2 == 1
        if inside:  # and it ends within one: what follows its last quote is string
            piece = piece[:piece.rindex(b'"')]
        piece = _STRING.sub(b"", piece)
        count += piece.count(b",") + piece.count(b"[") + piece.count(b"{")
        if count > stop_after:
            break
        time.sleep(0)
    return count


def _path_text(path: list[Any]) -> str | None:
    text = ""
    for part in path:
        text = f"{text}[{part}]" if isinstance(part, int) else (f"{text}.{part}" if text else str(part))
    return text or None


def _too_deep(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        items = node.values() if isinstance(node, dict) else node
        for item in items:
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1))
    return False


def _deep_path(value: Any, limit: int) -> list[Any]:
    """The path to the first value nested deeper than ``limit`` (only called when one is)."""
    stack: list[tuple[Any, list[Any]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if len(path) >= limit:
            return path
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, item in items:
            if isinstance(item, (dict, list)):
                stack.append((item, [*path, key]))
    return []


def _depth_error(value: Any, limit: int) -> APIError:
    path = _deep_path(value, limit)
    # Name the request field, not the spot deep inside a free-form value: keep the path down
    # to the first free-form object (a tool's ``parameters``, a ``schema``...) or four steps.
    cut = next((i + 1 for i, p in enumerate(path) if p in ("parameters", "schema", "filters",
                                                               "chunking_strategy", "attributes")), 4)
    param = _path_text(path[:cut])
    return invalid(f"Invalid value for '{param or 'body'}': the JSON value is nested too deeply "
                   f"(at most {limit} levels are accepted).", param=param, code="invalid_value")


def _surrogate_path(value: Any, path: list[Any]) -> list[Any] | None:
    if isinstance(value, str):
        return None if is_clean(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            if not is_clean(key):
                return [*path, key]
            found = _surrogate_path(item, [*path, key])
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_path(item, [*path, i])
            if found is not None:
                return found
    return None


def _not_json(body: bytes, error: orjson.JSONDecodeError, depth_limit: int) -> APIError:
    """Why orjson refused ``body``: a lone surrogate escape is named by its field."""
    if "depth limit" in str(error):
        return invalid(f"Invalid body: the JSON value is nested too deeply (at most {depth_limit} "
                       f"levels are accepted).", code="invalid_value")
    if "surrogate" in str(error):
        try:
            # Strict UTF-8 first (raw surrogate bytes are not JSON text); then the stdlib parser,
            # which takes a "\ud800" escape, so the field holding it can be named.
            value = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return invalid(NOT_JSON)
        path = _surrogate_path(value, [])
        if path is not None:
            param = _path_text(path)
            return invalid(f"Invalid value for '{param or 'body'}': the string holds a lone UTF-16 "
                           f"surrogate, which is not valid Unicode text.", param=param, code="invalid_value")
    return invalid(NOT_JSON)


def _messages_error(value: Any, limit: int) -> APIError | None:
    if not isinstance(value, dict):
        return None
    for path in MESSAGE_LISTS:
        node: Any = value
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, list) and len(node) > limit:
            param = ".".join(path)
            return invalid(f"Invalid '{param}': array too long. Expected an array with maximum length "
                           f"{limit}, but got an array with length {len(node)} instead.",
                           param=param, code="array_above_max_length")
    return None


def parse(body: bytes, *, max_depth: int, max_messages: int, max_values: int, openings: int,
          dense: bool) -> Any:
    """``body`` (holding ``openings`` bytes ``{`` and ``[``) parsed and checked against every
    bound; raises :class:`APIError`."""
    values = count_values(body, PARSE_FACTOR * max_values) if dense else 0
    if values > PARSE_FACTOR * max_values:
        raise _too_many_values(max_values)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _not_json(body, exc, max_depth) from None
    error = _messages_error(value, max_messages)
    if error is None and values > max_values:
        error = _too_many_values(max_values)
    if error is not None:
        # Freed here, in the worker thread: the traceback keeps this frame, and the loop thread
        # would otherwise free 100,000 messages' objects when it handles the error (~20 ms).
        value = None
        raise error
    # A value can nest no deeper than the body has openings: most bodies skip the walk.
    if openings > max_depth and _too_deep(value, max_depth):
        raise _depth_error(value, max_depth)
    return value


def is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type")
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JSONRequest(Request):
    """A request whose ``json()`` is :func:`parse` (FastAPI's documented custom-request hook)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            settings = self.app.state.settings
            openings = body.count(b"{") + body.count(b"[")  # ~0.3 ms a MiB each
            max_values = settings.max_json_values
            dense = len(body) > DENSE_CHECK_BYTES and openings + body.count(b",") > max_values
            run = (lambda: parse(body, max_depth=settings.max_json_depth, openings=openings,
                                 max_messages=settings.max_messages_per_request, max_values=max_values,
                                 dense=dense))
            # A dense body is counted (and parsed) in a worker thread; the rest costs little.
            self._json = await to_thread.run_sync(run) if dense else run()
            if len(body) > DENSE_CHECK_BYTES:
                await asyncio.sleep(0)  # the loop's turn between the parse and the handler's work
        return self._json


class JSONRoute(APIRoute):
    """Parses a JSON body before FastAPI does, so a bound it breaks is answered as an
    :class:`APIError` (FastAPI turns any other failure in its own parse into a bare 400)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def parse_first(request: Request) -> Response:
            request = JSONRequest(request.scope, request.receive)
            if await request.body() and is_json(request):
                await request.json()
            return await handler(request)

        return parse_first
