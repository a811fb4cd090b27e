"""Search settings (`SESSIONARY_SEARCH__*`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Extractor = Literal["rules", "llm", "both"]


class SearchSettings(BaseModel):
    extractor: Extractor = Field(
        default="rules",
        description="How filters are extracted from a query: rules (no model call), llm (the "
        "configured chat model, its output constrained to the template's JSON Schema), or both "
        "(rules first, the model adds fields they did not find).",
    )
