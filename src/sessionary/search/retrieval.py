"""Which documents answer a query, best first: the filters narrow, vectors (and words) rank.

PostgreSQL scores exactly up to `exact_limit` candidates and through its HNSW index beyond;
SQLite scores the template's cached matrix (ranking.py), reading the filters from cached columns
when it can. `rerank` fuses the dense ranking with a lexical (BM25) one over a wider pool.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sessionary.search.filters import column_mask
from sessionary.search.models import EmbeddingTemplate
from sessionary.search.ranking import INDEXES, TemplateIndex, fuse
from sessionary.search.store import Hit, SearchStore


def retrieve(
    store: SearchStore,
    template: EmbeddingTemplate,
    filters: dict[str, Any],
    query: np.ndarray,
    text: str,
    *,
    limit: int,
    num_candidates: int | None,
    rerank: bool,
    exact_limit: int,
) -> list[tuple[Hit, float]]:
    """The top `limit` documents meeting `filters`, nearest to `query` (fused with `text`'s
    lexical ranking when `rerank`), with their scores."""
    pool = max(num_candidates or 0, limit * 5, 50) if rerank else limit
    index = None
    rows = None
    where: list[Any] = []
    postgres = store.dialect == "postgresql"
    if postgres:
        where = store.where(filters, template.schema)
        count = (
            store.count_candidates(template.id, where, exact_limit + 1)
            if where
            else template.record_count
        )
        if count > exact_limit:
            dense = store.approximate_nearest(template.id, where, query, pool, template.dimension)
        else:
            dense = store.nearest(template.id, where, query, pool)
    else:
        index = INDEXES.get(store, template.id, template.version)
        if filters:  # SQL conditions are built only if the cached columns cannot answer
            rows = _filtered_rows(store, index, template, filters)
        dense = index.dense(query, rows, pool)
    ranked = dense
    if rerank:
        index = index or INDEXES.get(store, template.id, template.version)
        if postgres and where:
            rows = index.rows_of(store.candidate_ids(template.id, where))
        lexical = index.lexical(text, rows, pool)
        ranked = fuse([dense, lexical])
    chosen = ranked[:limit]
    ids = [doc_id for doc_id, _ in chosen]
    found = store.hits(ids) if index is None else index.shown(ids, store.hits)
    return [(found[doc_id], score) for doc_id, score in chosen if doc_id in found]


def _filtered_rows(
    store: SearchStore,
    index: TemplateIndex,
    template: EmbeddingTemplate,
    filters: dict[str, Any],
) -> np.ndarray:
    """SQLite: the rows meeting the filters, from the cached columns when the conditions
    allow (a scan of arrays instead of parsing every document's JSON), else from SQL."""
    columns = index.columns(lambda key: store.folded_values(template.id, key))

    def scan() -> np.ndarray | None:
        keep = column_mask(filters, template.schema, columns)
        return None if keep is None else np.flatnonzero(keep)

    # repr, not JSON: values of different types (a date, its ISO text) never share a key.
    rows = index.filtered(repr(filters), scan)
    if rows is not None:
        return rows
    return index.rows_of(store.candidate_ids(template.id, store.where(filters, template.schema)))
