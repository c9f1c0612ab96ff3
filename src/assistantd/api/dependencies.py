"""What a request acts in: its tenant and its one database session, given to handlers (and to
each domain's loaders, in ``<domain>/dependencies.py``) by FastAPI's ``Depends``.

Tenancy by construction: a loader such as ``thread_of_tenant`` takes the tenant from
:class:`Scope` and answers an object of another tenant with the same 404 as an id that does not
exist, so a handler only ever receives objects of the caller's tenant, already loaded.

One session per request, whoever asks for it (the first to ask opens it, the request keeps it:
see :func:`_scope`): a ``GET`` reads; any other method writes, in one transaction (on SQLite,
behind the process's write lock), committed after the handler returns and *before* the response
is sent, so a stream a handler returns starts after its commit. What must follow the commit
(releasing a sandbox, removing a file's bytes, emitting an event, starting a run) is handed to
:meth:`Scope.after`, and runs once the session is over.

Every dependency here is ``async``: FastAPI runs a plain ``def`` one in its thread pool, a thread
hop per request.
"""

from __future__ import annotations

import inspect
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Annotated, Any, Awaitable, Callable, Generic, TypeVar

from fastapi import Depends, Request
from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd.api.auth import require_tenant
from assistantd.api.errors import APIError, not_found
from assistantd.db.rows import columns_of, load_detached

# Where FastAPI keeps the exit stack it unwinds after the handler returns and before it sends the
# response (the stack a ``Depends(..., scope="function")`` yield dependency is entered on).
FUNCTION_STACK = "fastapi_function_astack"
# Where a request keeps its Scope (in its ASGI scope), so that every dependency gets the same one.
SCOPE_KEY = "assistantd.scope"

# A write whose request body is larger commits in a worker thread (a thread hop costs ~0.1 ms;
# committing a megabyte of rows on SQLite holds the loop for several).
LARGE_BODY_BYTES = 1 << 20

Row = TypeVar("Row")


class Scope:
    """The tenant a request acts for and its one session, and what to do once that session is
    over. An async context manager around the session's own (``Database.read()``/``write()``)."""

    __slots__ = ("tenant", "session", "writes", "_opened", "_after", "_failed")

    def __init__(self, tenant: str, opened: AbstractAsyncContextManager[AsyncSession],
                 writes: bool = False) -> None:
        self.tenant, self.writes = tenant, writes
        self._opened = opened
        self._after: list[Callable[[], Any]] = []
        self._failed: list[Callable[[], None]] = []

    def after(self, action: Callable[[], Any]) -> None:
        """Run ``action`` (a function, or one returning an awaitable) once the session is over and
        nothing failed: after a write's commit, with SQLite's write lock released; after a read's
        close. Never after a rollback."""
        self._after.append(action)

    def on_failure(self, action: Callable[[], None]) -> None:
        """Run ``action`` if the request fails instead: the handler raised, or the commit did."""
        self._failed.append(action)

    async def __aenter__(self) -> Scope:
        self.session = await self._opened.__aenter__()
        return self

    async def __aexit__(self, kind, error, traceback) -> bool:
        try:
            await self._opened.__aexit__(kind, error, traceback)  # commit, or roll back
        except BaseException:
            self._fail()
            raise
        if kind is not None:
            self._fail()
            return False
        # Taken, not kept: the actions' closures often hold the request, whose ASGI scope holds
        # this Scope — a reference cycle that would leave every request to the cyclic GC.
        actions, self._after, self._failed = self._after, [], []
        for action in actions:
            done = action()
            if inspect.isawaitable(done):
                await done
        return False

    def _fail(self) -> None:
        actions, self._after, self._failed = self._failed, [], []
        for action in actions:
            action()


async def _entered(request: Request, scope: Scope) -> Scope:
    """``scope``, entered on FastAPI's function exit stack: what a yield dependency with
    ``scope="function"`` amounts to, without the two generator wrappers and the cancel scope
    FastAPI puts around one (measured in a bare FastAPI app: ~25 µs a request). Like the
    handlers' own ``async with db.write()`` before, its exit is not shielded from cancellation.
    The stack is unwound before the response is sent (pinned by ``tests/test_tenancy_routes.py``)."""
    stack: AsyncExitStack = request.scope[FUNCTION_STACK]
    return await stack.enter_async_context(scope)


async def _scope(request: Request, writes: bool) -> Scope:
    """The request's one Scope: opened by whichever dependency asks first, then kept on the
    request. Loaders call this rather than ``Depends`` on it: FastAPI solves a ``Depends`` again
    at each place it appears in a route's graph, a cached one too (~75 Python calls each;
    measured: a run created and executed made 2 % more calls when its loader depended on it,
    0.8 % this way)."""
    scope = request.scope.get(SCOPE_KEY)
    if scope is None:
        tenant = await require_tenant(request)
        db = request.app.state.db
        opened = db.write(commit_in_thread=_large(request)) if writes else db.read()
        scope = await _entered(request, Scope(tenant, opened, writes))
        request.scope[SCOPE_KEY] = scope
    elif scope.writes != writes:
        raise RuntimeError("one route asked for a read session and for a write session")
    return scope


def _large(request: Request) -> bool:
    """Whether the request's body is large enough that what it writes should be committed off the
    event loop (:meth:`Database.write`'s ``commit_in_thread``)."""
    length = request.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) > LARGE_BODY_BYTES


async def request_scope(request: Request) -> Scope:
    """FastAPI dependency: the request's tenant (401 without a valid key) and its session — a read
    for ``GET``, one transaction for any other method."""
    return await _scope(request, request.method != "GET")


async def read_scope(request: Request) -> Scope:
    """:func:`request_scope` for a ``POST`` that changes nothing (a search): a read, so that no
    write transaction (on SQLite, the write lock) is held while it runs."""
    return await _scope(request, False)


async def loaded(request: Request, get: Callable[..., Awaitable[Row]], *object_ids: str) -> Row:
    """``get(session, tenant, *object_ids)`` in the request's scope: what every loader does."""
    scope = await request_scope(request)
    return await get(scope.session, scope.tenant, *object_ids)


RequestScope = Annotated[Scope, Depends(request_scope)]
ReadScope = Annotated[Scope, Depends(read_scope)]


async def one_or_404(session: AsyncSession, statement: Select, params: dict[str, Any],
                     missing: Callable[[], APIError],
                     parent: Callable[[], Awaitable[object]] | None = None) -> Any:
    """The one row ``statement`` finds (its predicates name the tenant), else ``missing()``
    raised: the query under every loader. An object below another (a thread's run) is found by
    one query on its own table; ``parent`` loads the one above only on a miss, so that a missing
    thread is the 404 named for its missing run, as the path reads."""
    row = await session.scalar(statement, params)
    if row is None:
        if parent is not None:
            await parent()
        raise missing()
    return row


class OneOfTenant(Generic[Row]):
    """``await get(session, tenant, object_id)``: the tenant's row of ``model`` with that id, else
    the 404 of a ``kind`` that does not exist. The statement is built once, with bound parameters:
    building a SQLAlchemy expression costs more than running it on SQLite."""

    def __init__(self, model: type[Row], kind: str) -> None:
        self.kind = kind
        self.statement = select(model).where(model.id == bindparam("object_id"),  # type: ignore[attr-defined]
                                             model.tenant == bindparam("tenant"))  # type: ignore[attr-defined]
        self.model, self.columns = model, select(*columns_of(model)).where(*self.statement.whereclause.clauses)

    async def __call__(self, session: AsyncSession, tenant: str, object_id: str) -> Row:
        return await one_or_404(session, self.statement, {"object_id": object_id, "tenant": tenant},
                                lambda: not_found(self.kind, object_id))

    async def detached(self, session: AsyncSession, tenant: str, object_id: str) -> Row:
        """The same row as a detached object, to read only (:func:`~assistantd.db.rows.load_detached`:
        several times cheaper than the ORM's load), for the paths every run takes."""
        rows = await load_detached(session, self.model, self.columns, {"object_id": object_id, "tenant": tenant})
        if not rows:
            raise not_found(self.kind, object_id)
        return rows[0][0]
