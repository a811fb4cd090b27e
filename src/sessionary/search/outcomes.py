"""What the search service's verbs answer: an ingestion, a planned search, a found one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sessionary.billing.ledger import Settlement
from sessionary.search import detection
from sessionary.search.models import EmbeddingTemplate
from sessionary.search.store import Hit


@dataclass
class Ingested:
    template: EmbeddingTemplate
    settlement: Settlement


@dataclass
class Plan:
    """What a search asks before any vector: its template, filters, and the text to embed."""

    template: EmbeddingTemplate
    filters: dict[str, Any]
    semantic: str
    sources: dict[str, str]
    text: str


@dataclass
class Found:
    template: EmbeddingTemplate
    filters: dict[str, Any]
    hits: list[tuple[Hit, float]]
    settlement: Settlement
    semantic_query: str
    sources: dict[str, str]
    path: str = "exact"  # which ranking served (retrieval.Retrieved), for reports

    @property
    def private(self) -> frozenset[str]:
        return detection.private_paths(self.template.schema)
