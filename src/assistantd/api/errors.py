"""OpenAI's error envelope, ``{"error": {"message", "type", "param", "code"}}``, for every failure.

Handlers raise :class:`APIError` (or one of its helpers); FastAPI's own validation errors, HTTP
errors and anything unexpected are turned into the same envelope here, so a 422 or an HTML page
never reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistantd.api.text import repair

log = logging.getLogger("assistantd")


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict:
        # A message or param may quote the request, lone surrogates included: never send those.
        return {
            "error": {
                "message": repair(self.message),
                "type": self.type,
                "param": None if self.param is None else repair(self.param),
                "code": self.code,
            }
        }


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(kind: str, object_id: str) -> APIError:
    return APIError(404, f"No {kind} found with id '{object_id}'.")


def _param(loc: tuple, body: Any) -> str | None:
    """The request path an error sits at, as OpenAI writes it: ``tools[0].function.name``.

    Pydantic's ``loc`` also names union branches (``str``, ``function``…); walking the request
    body along it tells real keys and indexes from those labels.
    """
    text, node = "", body
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    tag_skipped = None
    for i, part in enumerate(parts):
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            text, node = f"{text}[{part}]", node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            if part == node.get("type") and i + 1 < len(parts) and tag_skipped is not node:
                tag_skipped = node
                continue  # a discriminated union's tag, not the field of the same name
            text, node = (f"{text}.{part}" if text else part), node[part]
        elif loc and loc[0] == "query" and not text:
            text, node = str(part), None
    return text or None


# Pydantic error types → OpenAI's wording and code for the same mistake.
def _describe(err: dict, param: str) -> tuple[str, str | None]:
    kind, ctx, value = err.get("type", ""), err.get("ctx") or {}, err.get("input")
    if kind == "string_too_long":
        limit = ctx.get("max_length")
        return (f"Invalid '{param}': string too long. Expected a string with maximum length "
                f"{limit}, but got a string with length {len(value)} instead.", "string_above_max_length")
    if kind == "too_long":
        limit = ctx.get("max_length")
        return (f"Invalid '{param}': array too long. Expected an array with maximum length "
                f"{limit}, but got an array with length {len(value)} instead.", "array_above_max_length")
    if kind == "too_short":
        limit = ctx.get("min_length")
        return (f"Invalid '{param}': empty array. Expected an array with minimum length "
                f"{limit}, but got an empty array instead." if not value else
                f"Invalid '{param}': array too short. Expected an array with minimum length "
                f"{limit}.", "empty_array" if not value else "array_below_min_length")
    if kind in ("less_than_equal", "less_than"):
        limit = ctx.get("le", ctx.get("lt"))
        return (f"Invalid '{param}': number above maximum value. Expected a value <= {limit}, "
                f"but got {value} instead.", "decimal_above_max_value")
    if kind in ("greater_than_equal", "greater_than"):
        limit = ctx.get("ge", ctx.get("gt"))
        return (f"Invalid '{param}': number below minimum value. Expected a value >= {limit}, "
                f"but got {value} instead.", "decimal_below_min_value")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return (f"Invalid type for '{param}': {err.get('msg', 'wrong type')}.", "invalid_type")
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"Invalid value for '{param}': {message}", "invalid_value"


def validation_error(exc: RequestValidationError) -> APIError:
    body = getattr(exc, "body", None)
    ranked = []
    for err in exc.errors():
        param = _param(tuple(err.get("loc", ())), body)
        kind = err.get("type", "")
        # The error nearest the root wins; among a union's branches, a type mismatch is the
        # least telling (``content=[]`` is "too short", not "not a string"; an object given
        # for ``response_format`` is not "not 'auto'").
        depth = (param or "").count(".") + (param or "").count("[")
        mismatch = kind.endswith("_type") or (
            kind == "literal_error" and isinstance(err.get("input"), (dict, list)))
        ranked.append((mismatch, depth, err, param))
    _, _, first, param = min(ranked, key=lambda r: (r[0], r[1]))
    kind = first.get("type", "")
    if kind in ("json_invalid", "model_attributes_type", "dict_type") and param is None:
        return invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)",
        )
    if kind == "openai":
        return invalid(str(first.get("msg")), param=param)
    if kind == "extra_forbidden":
        name = str(first["loc"][-1])
        return invalid(f"Unrecognized request argument supplied: {name}", param=param)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        # A tagged union's bad or missing tag is the tag field's fault: ``tools[0].type``.
        ctx = first.get("ctx") or {}
        tag = str(ctx.get("discriminator", "'type'")).strip("'")
        full = f"{param}.{tag}" if param else tag
        if kind == "union_tag_not_found":
            return invalid(f"Missing required parameter: '{full}'.", param=full)
        return invalid(f"Invalid value: '{ctx.get('tag')}'. Supported values are: "
                       f"{ctx.get('expected_tags')}.", param=full, code="invalid_value")
    if kind == "missing" and tuple(first.get("loc", ())) == ("body",):
        return invalid("This request requires a JSON body; none was sent.")
    if kind == "missing":
        name = str(first["loc"][-1])
        full = f"{param}.{name}" if param else name
        return invalid(f"Missing required parameter: '{full}'.", param=full)
    message, code = _describe(first, param or "body")
    return invalid(message, param=param, code=code)


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = "Invalid URL: the requested path does not exist."
        elif exc.status_code == 405:
            message = "Method not allowed for this URL."
        else:
            message = str(exc.detail)
        err = APIError(exc.status_code, message)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        err = APIError(500, "The server had an error while processing your request.",
                       type="server_error")
        return JSONResponse(err.body(), status_code=500)
