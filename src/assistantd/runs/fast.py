"""``POST /v1/threads/{thread_id}/runs`` without FastAPI's request machinery, when nothing is wrong
with it; the route answers every other one.

Every run starts here, and until the model's request is sent, what the server does is the time to
the first token it adds: traced on an idle server (cold, a stream every ~100 ms), Starlette's
middleware stack and routing, then FastAPI's request handler before the first dependency, took
~0.35 ms of the ~2.4 ms before the model's request left. This ASGI middleware does the route's
work (:func:`assistantd.runs.router.start_run`) with the same parts and no dispatch:
the body parsed and bounded as :class:`~assistantd.api.body.JSONRequest` parses it, the
tenant, ``include[]``, the body validated as :class:`CreateRunRequest`, the thread read, all in
one :class:`~assistantd.api.dependencies.Scope`.

Anything refused (a bad key, body, thread, assistant, a run already active) is not answered
here: the transaction rolls back (the model request it may have sent is dropped with it) and the
request, its body replayed, goes to the route, which refuses it as always. So a refusal's
status and error body are the route's by construction, at the cost of doing the work twice; and
whatever this path does not handle (a large body, one that is not JSON) goes to the route
untouched. An unexpected exception is not retried: it reaches the app's error handler (a 500), as
it would from the route.
"""

from __future__ import annotations

import logging
import re

from pydantic import ValidationError
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope as ASGIScope, Send

from assistantd.api.auth import require_tenant
from assistantd.api.body import DENSE_CHECK_BYTES, JSONRequest, is_json, replayed
from assistantd.api.dependencies import Scope
from assistantd.api.errors import APIError
from assistantd.runs import service
from assistantd.runs.dependencies import RunStartTarget, search_content_of, writes_of
from assistantd.runs.router import start_run
from assistantd.runs.schemas import CreateRunRequest

log = logging.getLogger("assistantd.runs")

RUNS = re.compile(r"/v1/threads/([^/]+)/runs")


class CreateRunFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or (path := RUNS.fullmatch(scope["path"])) is None:
            return await self.app(scope, receive, send)
        request = JSONRequest(scope, receive)
        body = await request.body()
        if not body or len(body) > DENSE_CHECK_BYTES or not is_json(request):
            log.debug("%s: to the route (an empty, large or not JSON body)", scope["path"])
            return await self.app(scope, replayed(body, receive), send)
        state = request.app.state
        try:
            tenant = await require_tenant(request)
            search_content = search_content_of(QueryParams(scope["query_string"]).getlist("include[]"))
            run_body = CreateRunRequest.model_validate(await request.json())
            async with Scope(tenant, state.db.write(), writes=True) as db_scope:
                thread, last_seq = await service.thread_for_run(db_scope.session, tenant, path[1])
                start = RunStartTarget(db_scope, writes_of(db_scope, state.bus), thread, last_seq, search_content)
                response = await start_run(state, start, run_body)
        except (APIError, ValidationError) as exc:
            log.debug("%s: to the route (%s)", scope["path"], type(exc).__name__)
            return await self.app(scope, replayed(body, receive), send)
        log.debug("%s: answered here", scope["path"])
        await response(scope, receive, send)
