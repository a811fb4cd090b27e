"""Which documents answer a query, best first: the filters narrow, vectors (and words) rank.

PostgreSQL scores exactly up to `exact_limit` candidates and through its HNSW index beyond;
SQLite scores the template's cached matrix (ranking.py), reading the filters from cached columns
when it can. `rerank` fuses the dense ranking with a lexical (BM25) one over a wider pool.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from sessionary.kit.loop_units import leave_the_loop
from sessionary.search.ann import ANN, MIN_SELECTIVITY, AnnPolicy, approximate
from sessionary.search.filters import column_mask
from sessionary.search.models import EmbeddingTemplate
from sessionary.search.outcomes import Plan
from sessionary.search.query import SearchQuery
from sessionary.search.ranking import INDEXES, TemplateIndex, fuse, scores_of
from sessionary.search.store import Hit, SearchStore

# PostgreSQL, beyond the exact limit: the HNSW index's iterative scan reads at most this many
# index tuples (pgvector's default) before a filtered search turns exact.
PG_MAX_SCAN_TUPLES = 20_000


class Retrieved(NamedTuple):
    """The hits, and which path ranked them (`index`, or `exact` and why), for reports."""

    hits: list[tuple[Hit, float]]
    path: str


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
    ann: AnnPolicy | None = None,
) -> Retrieved:
    """The top `limit` documents meeting `filters`, nearest to `query` (fused with `text`'s
    lexical ranking when `rerank`), with their scores."""
    pool = max(num_candidates or 0, limit * 5, 50) if rerank else limit
    index = None
    rows = None
    where: list[Any] = []
    postgres = store.dialect == "postgresql"
    if postgres:
        where = store.where(filters, template.schema)
        ef_search = (ann or AnnPolicy()).ef_search
        dense, path = _dense_postgres(store, template, where, query, pool, exact_limit, ef_search)
    else:
        index = INDEXES.get(store, template.id, template.version)
        if filters:  # SQL conditions are built only if the cached columns cannot answer
            rows = _filtered_rows(store, index, template, filters)
        dense, path = _dense(template.id, index, query, rows, pool, ann or AnnPolicy())
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
    return Retrieved([(found[doc_id], score) for doc_id, score in chosen if doc_id in found], path)


def retrieve_planned(
    store: SearchStore,
    plan: Plan,
    vector: np.ndarray,
    query: SearchQuery,
    *,
    limit: int,
    exact_limit: int,
    ann: AnnPolicy | None,
) -> Retrieved:
    """`retrieve` for a search's plan (template, filters, semantic text) and request options."""
    return retrieve(
        store,
        plan.template,
        plan.filters,
        vector,
        plan.semantic,
        limit=limit,
        num_candidates=query.num_candidates,
        rerank=query.rerank,
        exact_limit=exact_limit,
        ann=ann,
    )


def _dense_postgres(
    store: SearchStore,
    template: EmbeddingTemplate,
    where: list[Any],
    query: np.ndarray,
    k: int,
    exact_limit: int,
    ef_search: int,
) -> tuple[list[tuple[str, float]], str]:
    """PostgreSQL: exact up to `exact_limit` records; beyond, HNSW with iterative scans, and
    exact over the filtered rows when the scan gives up short of `k` (the filter keeps too few
    rows near the query, or too few at all).

    No count decides first any more: counting the filter's rows (up to 20,001) fetched each
    wide row from the heap, 50-350 ms at 1M records and most of a filtered search (the scan
    itself took 3-5 ms); even a count stopped at 2,000 cost 15-80 ms."""
    if template.record_count <= exact_limit:
        return store.nearest(template.id, where, query, k), "exact"
    found = store.approximate_nearest(
        template.id, where, query, k, template.dimension, ef_search, PG_MAX_SCAN_TUPLES
    )
    if len(found) < k:
        return store.nearest(template.id, where, query, k), "exact (index scan short)"
    return found, "index"


def _dense(
    template_id: str,
    index: TemplateIndex,
    query: np.ndarray,
    rows: np.ndarray | None,
    k: int,
    policy: AnnPolicy,
) -> tuple[list[tuple[str, float]], str]:
    """SQLite: the HNSW graph's candidates re-scored exactly from the matrix (ann.py) for a
    large template and a broad or no filter; exact scoring otherwise, or while the graph
    catches up with the template's version, or when it comes back short."""
    total = len(index.ids)
    if not policy.enabled or total < policy.min_records:
        return index.dense(query, rows, k), "exact"
    leave_the_loop("a large template")  # its graph, or exact scoring at its size
    if rows is not None and (rows.size < policy.exact_below or rows.size < MIN_SELECTIVITY * total):
        return index.dense(query, rows, k), "exact (selective filter)"
    served = ANN.snapshot(template_id, index)
    if served is None:
        return index.dense(query, rows, k), "exact (index catching up)"
    keep = None
    if rows is not None:
        keep = np.zeros(total, dtype=bool)
        keep[rows] = True
    vector = query.astype(np.float32)
    found = approximate(
        *served,
        lambda chosen: scores_of(index.matrix[chosen], vector),
        vector,
        keep,
        k,
        policy.ef_search,
    )
    if found is None:
        return index.dense(query, rows, k), "exact (index short)"
    return [(index.ids[row], score) for row, score in found], "index"


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
    leave_the_loop("filters the cached columns cannot answer")  # a scan of the documents
    return index.rows_of(store.candidate_ids(template.id, store.where(filters, template.schema)))
