"""Scoring: dense (cosine), lexical (BM25) and their fusion by reciprocal rank.

On SQLite the template's vectors are held in memory as one float32 matrix and scored exactly with
NumPy (recall 1.0); the cache is keyed by the template's version, which every write bumps in the
database, so every process sees a change at its next search. Large templates also get an HNSW
graph built from this matrix (ann.py), in step with the same version. PostgreSQL ranks in SQL
(pgvector).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sessionary.kit.loop_units import leave_the_loop
from sessionary.search.filters import Columns, as_numbers
from sessionary.search.store import Hit, SearchStore

RRF_K = 60
_CACHE_TEMPLATES = 8
# Documents as answers show them, kept per version: a repeated query (a page asked again, a
# retry) then reads no document rows at all. About 1 KB each for the Oslo listings.
_CACHE_SHOWN = 2048
# Row sets of filters met lately, per version (a repeated filtered query skips the column scan).
_CACHE_MASKS = 256


# On the event loop, a search reads at most this many documents not met before (`shown`).
LOOP_SHOWN = 10
_NO_WORDS = object()  # a lexical index of a template whose texts hold no word


@dataclass
class TemplateIndex:
    version: int
    ids: list[str]
    matrix: np.ndarray
    texts: list[str]
    position: dict[str, int] = field(default_factory=dict)
    column_cache: dict[Any, np.ndarray | None] = field(default_factory=dict)
    shown_cache: OrderedDict[str, Hit] = field(default_factory=OrderedDict)
    rows_cache: OrderedDict[str, np.ndarray | None] = field(default_factory=OrderedDict)
    _bm25: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _building: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.position = {doc_id: i for i, doc_id in enumerate(self.ids)}

    def rows_of(self, candidates: Sequence[str]) -> np.ndarray:
        """Row positions of document ids (ids of other versions are skipped)."""
        return np.fromiter(
            (self.position[c] for c in candidates if c in self.position), dtype=np.int64
        )

    def shown(
        self, ids: Sequence[str], load: Callable[[list[str]], dict[str, Hit]]
    ) -> dict[str, Hit]:
        """What answers show of these documents, read with `load` only for those not met yet.

        Safe to keep: every write to a template bumps its version, and a new version gets a
        new index, so what is kept here is what this version's rows hold."""
        with self._lock:
            found = {i: self.shown_cache[i] for i in ids if i in self.shown_cache}
            for doc_id in found:
                self.shown_cache.move_to_end(doc_id)
        missing = [i for i in ids if i not in found]
        if len(missing) > LOOP_SHOWN:  # up to 100 records of up to 100 kB each
            leave_the_loop("many documents to read")
        if missing:
            loaded = load(missing)
            found.update(loaded)
            with self._lock:
                self.shown_cache.update(loaded)
                while len(self.shown_cache) > _CACHE_SHOWN:
                    self.shown_cache.popitem(last=False)
        return found

    def filtered(self, key: str, compute: Callable[[], np.ndarray | None]) -> np.ndarray | None:
        """The rows meeting the filters written as `key`, computed once per version from its
        cached columns (None: the columns cannot answer). The rows are read-only."""
        with self._lock:
            if key in self.rows_cache:
                self.rows_cache.move_to_end(key)
                return self.rows_cache[key]
        leave_the_loop("filters not met before")  # a scan whose cost the request sets
        rows = compute()
        if rows is not None:
            rows.setflags(write=False)
        with self._lock:
            self.rows_cache[key] = rows
            while len(self.rows_cache) > _CACHE_MASKS:
                self.rows_cache.popitem(last=False)
        return rows

    def columns(self, load: Callable[[str], list[tuple[str, Any]]]) -> Columns:
        """This version's filter columns, each read once with `load` (id, folded value)."""
        return _ColumnView(self, load)

    def dense(self, query: np.ndarray, rows: np.ndarray | None, k: int) -> list[tuple[str, float]]:
        """Cosine scores over all rows, or over `rows` (positions) only."""
        if not self.ids or (rows is not None and rows.size == 0):
            return []
        query = query.astype(np.float32)
        if rows is None:
            scores = scores_of(self.matrix, query)
        elif rows.size * 3 > len(self.ids):  # most rows: scoring all beats copying them out
            scores = scores_of(self.matrix, query)[rows]
        else:
            scores = scores_of(self.matrix[rows], query)
        top = _top(scores, k)
        if rows is None:
            return [(self.ids[i], float(scores[i])) for i in top]
        return [(self.ids[rows[i]], float(scores[i])) for i in top]

    def lexical(self, query: str, rows: np.ndarray | None, k: int) -> list[tuple[str, float]]:
        if self._bm25 is None or "bm25s" not in sys.modules:  # its import takes 0.4 s
            leave_the_loop("a lexical index to build")
        import bm25s

        with self._building:  # not `_lock`: the others never wait for a build
            if self._bm25 is None:
                retriever = bm25s.BM25()
                corpus = bm25s.tokenize(self.texts, stopwords="en", show_progress=False)
                if corpus.vocab:  # no word at all (no records, or stopwords only): no index
                    retriever.index(corpus, show_progress=False)
                self._bm25 = retriever if corpus.vocab else _NO_WORDS
        terms = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
        if not terms or self._bm25 is _NO_WORDS:
            return []
        scores = np.asarray(self._bm25.get_scores(terms), dtype=np.float64)
        if rows is not None:
            mask = np.zeros(len(self.ids), dtype=bool)
            mask[rows] = True
            scores = np.where(mask, scores, -np.inf)
        top = [i for i in _top(scores, k) if np.isfinite(scores[i]) and scores[i] > 0]
        return [(self.ids[i], float(scores[i])) for i in top]


@dataclass
class _ColumnView:
    index: TemplateIndex
    load: Callable[[str], list[tuple[str, Any]]]

    def values(self, key: str) -> np.ndarray | None:
        cache = self.index.column_cache
        with self.index._lock:
            if key in cache:
                return cache[key]
        leave_the_loop("a filter column to load")
        pairs = self.load(key)
        column: np.ndarray | None = None
        if [doc_id for doc_id, _ in pairs] == self.index.ids:  # else a write landed between
            column = np.empty(len(pairs), dtype=object)
            column[:] = [value for _, value in pairs]
        with self.index._lock:
            cache[key] = column
        return column

    def numbers(self, key: str) -> np.ndarray | None:
        cache = self.index.column_cache
        with self.index._lock:
            if ("numbers", key) in cache:
                return cache[("numbers", key)]
        leave_the_loop("a filter column to convert")
        values = self.values(key)
        numbers = None if values is None else as_numbers(values)
        with self.index._lock:
            cache[("numbers", key)] = numbers
        return numbers


def scores_of(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Dot products of every row with `query`, on the calling thread.

    `einsum` runs NumPy's own SIMD loop rather than BLAS: a matrix-vector product is bound by
    memory, so BLAS's threads add little speed, and OpenBLAS's spin while waiting for work. At
    10,000 rows of 384 on two busy cores: 0.8 ms wall and 0.7 ms CPU here, 20 ms and 7 ms through
    BLAS. The scores are the same products, summed in another order (within float32 rounding).
    """
    scores: np.ndarray = np.einsum("ij,j->i", matrix, query)
    return scores


def _top(scores: np.ndarray, k: int) -> list[int]:
    if k >= scores.size:
        order = np.argsort(-scores, kind="stable")
    else:
        part = np.argpartition(-scores, k)[:k]
        order = part[np.argsort(-scores[part], kind="stable")]
    return [int(i) for i in order]


# The version of vectors loaded while a write moved the template on: theirs is not known, so they
# are neither kept nor matched by any graph (`ann.AnnIndexes.snapshot`): that search is exact.
UNKNOWN_VERSION = -1


class IndexCache:
    """Process-wide: a few templates' matrices, reloaded when their version moves."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, TemplateIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: SearchStore, template_id: str, version: int) -> TemplateIndex:
        with self._lock:
            entry = self._entries.get(template_id)
            if entry is not None and entry.version == version:
                self._entries.move_to_end(template_id)
                return entry
        leave_the_loop("a template's vectors to load")
        ids, vectors, texts = store.all_vectors(template_id)
        matrix = np.vstack(vectors).astype(np.float32) if vectors else np.zeros((0, 1), np.float32)
        # A write moves the version with its rows, so the same version after the read means the
        # rows are that version's; otherwise they may be any later one's, and labelled `version`
        # they would pair with that version's graph, whose rows are others (recall lost, or a
        # row past the matrix's end).
        if store.version_of(template_id) != version:
            return TemplateIndex(UNKNOWN_VERSION, ids, matrix, texts)
        entry = TemplateIndex(version, ids, matrix, texts)
        with self._lock:
            self._entries[template_id] = entry
            while len(self._entries) > _CACHE_TEMPLATES:
                self._entries.popitem(last=False)
        return entry


INDEXES = IndexCache()


def fuse(
    rankings: Sequence[Sequence[tuple[str, float]]], k: int = RRF_K
) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: each list gives 1 / (k + rank) to its items."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, (doc_id, _) in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
