"""Cursor pagination exactly as OpenAI lists page: ``limit``, ``order``, ``after``, ``before``.

Rows are ordered by their insertion ``seq`` (``created_at`` has one-second resolution, so it
cannot order objects made in the same second). A cursor is an object id; ``after`` returns the
objects that follow it in the chosen order, ``before`` the ones right before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

from fastapi import Depends, Query, Response
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from assistantd.api.errors import invalid
from assistantd.api.types import ListResponse


# Object ids are a prefix and 24 characters; a cursor longer than this names nothing.
MAX_ID_LENGTH = 64


@dataclass(frozen=True)
class PageParams:
    limit: int
    order: Literal["asc", "desc"]
    after: str | None
    before: str | None


def _checked(limit: int, order: str, max_limit: int) -> None:
    if not 1 <= limit <= max_limit:
        raise invalid(
            f"Invalid 'limit': integer above maximum value, expected a value <= {max_limit}, "
            f"but got {limit} instead." if limit > max_limit else
            f"Invalid 'limit': integer below minimum value, expected a value >= 1, "
            f"but got {limit} instead.",
            param="limit",
            code="integer_above_max_value" if limit > max_limit else "integer_below_min_value",
        )
    if order not in ("asc", "desc"):
        raise invalid(
            f"Invalid value for 'order': expected one of 'asc' or 'desc', but got '{order}'.",
            param="order",
        )


async def page_params(
    limit: int = Query(20),
    order: str = Query("desc"),
    after: str | None = Query(None),
    before: str | None = Query(None),
) -> PageParams:
    """FastAPI dependency for the usual list query (limit 1..100, default 20). ``async``, as
    every dependency is (see :mod:`assistantd.api.dependencies`)."""
    _checked(limit, order, 100)
    return PageParams(limit, order, after or None, before or None)  # type: ignore[arg-type]


async def file_page_params(
    limit: int = Query(10000),
    order: str = Query("desc"),
    after: str | None = Query(None),
) -> PageParams:
    """``GET /files`` pages differently: limit 1..10000, default 10000, and no ``before``."""
    _checked(limit, order, 10000)
    return PageParams(limit, order, after or None, None)  # type: ignore[arg-type]


Page = Annotated[PageParams, Depends(page_params)]
FilePage = Annotated[PageParams, Depends(file_page_params)]


async def paginate(session: AsyncSession, query: Select, model: Any, page: PageParams) -> tuple[list[Any], bool]:
    """Run ``query`` (already filtered to the caller's scope) one page at a time.

    Returns the rows in the requested order and whether more follow.
    """
    seq = model.seq
    ascending = page.order == "asc"
    for cursor, param in ((page.after, "after"), (page.before, "before")):
        if cursor is None:
            continue
        cursor_seq = None
        if len(cursor) <= MAX_ID_LENGTH:  # no id is longer: spare the database the lookup
            scope = query.with_only_columns(seq).where(model.id == cursor).order_by(None)
            cursor_seq = (await session.execute(scope)).scalar_one_or_none()
        if cursor_seq is None:
            shown = cursor if len(cursor) <= MAX_ID_LENGTH else f"{cursor[:MAX_ID_LENGTH]}..."
            raise invalid(f"Invalid '{param}': no object found with id '{shown}'.", param=param)
        if param == "after":
            query = query.where(seq > cursor_seq if ascending else seq < cursor_seq)
        else:
            query = query.where(seq < cursor_seq if ascending else seq > cursor_seq)
    # With only ``before``, walk backwards from the cursor, then restore the requested order.
    backwards = page.before is not None and page.after is None
    forward = ascending != backwards
    query = query.order_by(seq.asc() if forward else seq.desc()).limit(page.limit + 1)
    rows = list((await session.execute(query)).scalars())
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    if backwards:
        rows.reverse()
    return rows, has_more


def listed(found: tuple[list[Any], bool], wire: Callable[[Any], Any]) -> Response:
    """A page :func:`paginate` found, as its list response: each row made a wire object by ``wire``."""
    rows, has_more = found
    return ListResponse.of([wire(r) for r in rows], has_more).response()
