"""Validate every JSON response body against its operation in the shared OpenAPI subset.

The tests' HTTP clients (the openai SDK's and raw httpx) carry a response hook that finds the
operation for the request's method and path and checks the body against that operation's
``200`` schema, so any drift from the wire contract fails the test that saw it.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

SPEC_PATH = Path(os.environ.get(
    "ASSISTANTD_SPEC",
    Path(__file__).resolve().parents[3] / "shared" / "spec" / "assistants-v2.openapi.yaml",
))
# A copy ships in the repo, so the tests run where ../shared is not laid out beside the checkout.
BUNDLED = Path(__file__).resolve().parent / "assistants-v2.openapi.yaml"


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` (still used by some schemas of this 3.1 document) means
    "or null"; JSON Schema 2020-12 ignores the keyword, so spell it out as ``anyOf [..., null]``."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    all_of = node.get("allOf")
    if isinstance(all_of, list) and {"nullable": True} in all_of:
        rest = [s for s in all_of if s != {"nullable": True}]
        node = {k: v for k, v in node.items() if k != "allOf"}
        node["allOf"] = rest
        node["nullable"] = True
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    node.pop("nullable", None)
    return node


@lru_cache
def spec() -> dict[str, Any]:
    path = SPEC_PATH if SPEC_PATH.exists() else BUNDLED
    return _nullable(yaml.safe_load(path.read_text()))


@lru_cache
def _routes() -> list[tuple[str, re.Pattern, dict]]:
    routes = []
    for template, ops in spec()["paths"].items():
        pattern = re.compile("^/v1" + re.sub(r"\{[^}]+\}", r"[^/]+", template) + "$")
        for method, op in ops.items():
            if isinstance(op, dict) and "responses" in op:
                routes.append((method.upper(), pattern, op))
    # Literal segments beat parameters: /threads/runs must not match /threads/{thread_id}.
    routes.sort(key=lambda r: r[1].pattern.count("[^/]+"))
    return routes


def operation_for(method: str, path: str) -> dict | None:
    for m, pattern, op in _routes():
        if m == method.upper() and pattern.match(path):
            return op
    return None


@lru_cache(maxsize=None)
def _validator(operation_id: str, status: str) -> Draft202012Validator | None:
    for _, _, op in _routes():
        if op.get("operationId") == operation_id:
            response = op["responses"].get(status) or {}
            schema = (response.get("content") or {}).get("application/json", {}).get("schema")
            if schema is None:
                return None
            root = {**schema, "components": spec()["components"]}
            return Draft202012Validator(root)
    return None


def _error_validator() -> Draft202012Validator:
    return Draft202012Validator({"$ref": "#/components/schemas/ErrorResponse",
                                 "components": spec()["components"]})


def _evals_erratum(data: Any) -> Any:
    """Spec erratum: POST /files accepts purpose ``evals`` but ``OpenAIFile.purpose`` does not list
    it; a file uploaded so is shown as it was uploaded (validated here as ``assistants``)."""
    def fix(obj: Any) -> Any:
        if isinstance(obj, dict) and obj.get("object") == "file" and obj.get("purpose") == "evals":
            return {**obj, "purpose": "assistants"}
        return obj
    if isinstance(data, dict) and data.get("object") == "list" and isinstance(data.get("data"), list):
        return {**data, "data": [fix(o) for o in data["data"]]}
    return fix(data)


class SpecViolation(AssertionError):
    pass


def validate_response(method: str, path: str, status: int, content_type: str, body: bytes) -> str | None:
    """Raise :class:`SpecViolation` when a JSON body breaks its schema; return the operationId."""
    if not content_type.startswith("application/json"):
        return None
    op = operation_for(method, path)
    if op is None or op.get("operationId") == "downloadFile":
        return None  # file content is the file's own bytes (a .json file is not a spec object)
    data = json.loads(body)
    if status >= 400:
        validator = _error_validator()
    else:
        validator = _validator(op["operationId"], str(status))
        if validator is None:
            return op["operationId"]
        data = _evals_erratum(data)
        if isinstance(data, dict) and data.get("object") == "list" and data.get("data") == []:
            # Spec erratum: list schemas type first_id/last_id as string, but an empty page has
            # no first or last object; OpenAI itself answered null there, as we do.
            data = {**data, "first_id": data.get("first_id") or "", "last_id": data.get("last_id") or ""}
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        detail = "\n".join(f"  at {list(e.absolute_path)}: {e.message[:300]}" for e in errors[:5])
        raise SpecViolation(f"{method} {path} ({op['operationId']}) -> {status} breaks the spec:\n{detail}")
    return op["operationId"]


@lru_cache
def _event_validator() -> Draft202012Validator:
    return Draft202012Validator({"$ref": "#/components/schemas/AssistantStreamEvent",
                                 "components": spec()["components"]})


def validate_event(name: str, data: str) -> Any:
    """Check one SSE frame against ``AssistantStreamEvent``; return its parsed data."""
    parsed = data if name == "done" else json.loads(data)
    errors = list(_event_validator().iter_errors({"event": name, "data": parsed}))
    if errors:
        best = min(errors, key=lambda e: len(list(e.absolute_path)))
        raise SpecViolation(f"event {name} breaks AssistantStreamEvent: {best.message[:500]}")
    return parsed
