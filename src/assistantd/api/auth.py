"""Bearer keys and tenants, as CONTRACT.md fixes them (``ASSISTANTD_API_KEYS``).

Open mode (no keys configured): any key or none, one shared tenant. Keyed mode: each key is its
own tenant; a row stores a digest of the key, never the key itself.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from assistantd.api.errors import APIError

OPEN_TENANT = "open"


def tenant_for_key(key: str) -> str:
    return "k_" + hashlib.sha256(key.encode()).hexdigest()[:32]


async def require_tenant(request: Request) -> str:
    """FastAPI dependency: the tenant this request acts for (401 when keys are set and it has none)."""
    keys: frozenset[str] = request.app.state.settings.api_keys
    beta = request.headers.get("openai-beta", "")
    if "assistants=v1" in beta:
        raise APIError(
            400,
            "The v1 Assistants API has been deprecated. Please use the v2 API by setting "
            "the 'OpenAI-Beta' header to 'assistants=v2'.",
            code="invalid_beta",
        )
    if not keys:
        return OPEN_TENANT
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise APIError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    if not any(hmac.compare_digest(key, k) for k in keys):
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    return tenant_for_key(key)
