"""The search service, built from the app's state (it opens its own short transactions)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sessionary.billing.pricing import Pricing
from sessionary.search.ann import AnnPolicy
from sessionary.search.service import SearchService


async def get_search_service(request: Request) -> SearchService:
    """Async though it awaits nothing: FastAPI runs a plain `def` dependency in a worker thread,
    a hand-off per request for building an object."""
    state = request.app.state
    settings = state.settings
    return SearchService(
        state.db,
        state.providers,
        Pricing(settings.pricing),
        settings.search_exact_limit,
        settings.search.extractor,
        settings.search.max_fields,
        state.query_vectors,
        AnnPolicy(
            settings.search.ann,
            settings.search.ann_min_records,
            settings.search.ann_exact_below,
            settings.search.ann_ef_search,
        ),
    )


AppSearch = Annotated[SearchService, Depends(get_search_service)]
