"""OpenAI's cursor pagination: `after` / `before` ids, `limit`, `order`, and the list envelope."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field

from sessionary.kit.errors import InvalidRequest

T = TypeVar("T")
Order = Literal["asc", "desc"]


class PageParams(BaseModel):
    after: str | None = None
    before: str | None = None
    limit: int = Field(default=20, ge=1, le=100)
    order: Order = "desc"


def page_params(
    after: str | None = None,
    before: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Order = "desc",
) -> PageParams:
    return PageParams(after=after, before=before, limit=limit, order=order)


# The query parameters of every cursor-paginated list route.
Page = Annotated[PageParams, Depends(page_params)]


def ascending_page_params(
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Order = "asc",
) -> PageParams:
    return PageParams(after=after, limit=limit, order=order)


# The lists OpenAI pages forward only, oldest first unless asked (stored chat completions).
AscendingPage = Annotated[PageParams, Depends(ascending_page_params)]


def travels_backwards(params: PageParams) -> bool:
    """A page asked for with `before` alone is the `limit` items just before that cursor (the
    previous page); with `after` too it starts right after `after`, as the SDKs' auto-pagination
    sends it (`after=last_id`, the original `before` kept), and stops at `before`."""
    return params.before is not None and params.after is None


def paginate(
    items: Sequence[T], key: Callable[[T], str], params: PageParams
) -> tuple[list[T], bool]:
    """One page of items (given in ascending id order) and whether more lie beyond it in the
    direction of travel; for lists small enough to hold in memory (stores page in SQL)."""
    ordered = list(items) if params.order == "asc" else list(reversed(items))
    ids = [key(item) for item in ordered]
    start, end = 0, len(ordered)
    if params.after is not None:
        if params.after not in ids:
            raise InvalidRequest(f"No item '{params.after}' to page after.", param="after")
        start = ids.index(params.after) + 1
    if params.before is not None:
        if params.before not in ids:
            raise InvalidRequest(f"No item '{params.before}' to page before.", param="before")
        end = ids.index(params.before)
    window = ordered[start:end]
    if travels_backwards(params):
        return window[-params.limit :], len(window) > params.limit
    return window[: params.limit], len(window) > params.limit


def envelope(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
