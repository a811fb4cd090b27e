"""`SESSIONARY_SEARCH__*`: how the search domain extracts filters and bounds a template.

Pure pydantic, so config.py composes it without importing the search domain.
"""

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
    max_fields: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="Fields (dot paths) one template may hold; an upload that would pass it is a "
        "400. It bounds what one query costs to extract, and the size of the listing.",
    )
    query_cache: int = Field(
        default=1024,
        ge=0,
        le=1_000_000,
        description="Query embeddings kept in memory per (model, exact text), least recently "
        "used out first; a repeated query skips the embedding model and is billed as the first "
        "one was. 0 turns the cache off.",
    )
    ann: bool = Field(
        default=True,
        description="SQLite: large templates get an in-memory HNSW graph (faiss) whose candidates "
        "are scored again exactly; false keeps every search exact.",
    )
    ann_min_records: int = Field(
        default=20_000,
        ge=1,
        description="SQLite: templates with fewer records are always scored exactly (NumPy); the "
        "graph is built, in a background thread, once a search meets a larger one.",
    )
    ann_exact_below: int = Field(
        default=20_000,
        ge=0,
        description="SQLite: a filtered search whose filter keeps fewer records (or under a fifth "
        "of the template) is scored exactly over them; broader filters use the graph.",
    )
    ann_ef_search: int = Field(
        default=256,
        ge=10,
        le=4096,
        description="HNSW candidates explored per query, by SQLite's graph and PostgreSQL's "
        "index (`hnsw.ef_search`, at most 1,000 there). SQLite: recall@10 0.998 at 100,000 "
        "records measured with 256, 0.995 with 128; larger is slower and closer to exact.",
    )
