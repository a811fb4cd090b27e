"""Approximate nearest neighbours for large templates on SQLite: an HNSW graph (faiss) beside the
template's cached matrix, whose candidates are scored again exactly from that matrix.

Why: exact scoring reads every vector, about 150 MB at 100,000 records of 384 dimensions, which
is 15-20 ms of memory traffic a query; the graph visits a few hundred of them (under 1 ms).

What keeps it correct:
- The graph only proposes candidates. A label stands for one distinct vector and maps to the
  rows holding it in the cached matrix of the exact version being searched (`Snapshot.rows`);
  a label whose documents were all deleted or changed maps to no row and is dropped, and every
  score comes from the matrix, so a result is never stale, deleted or another template's (one
  graph per template, built from that template's rows only).
- A graph serves only the version it was brought in step with. When the template's version
  moves (a write here or in another process: the same version check as the matrix cache), the
  search is exact and a worker thread catches the graph up: vectors it lacks are added under
  new labels, labels left without rows are excluded from the search (and the graph is rebuilt
  when they pass a quarter of it).
- Filters: a filtered search uses the graph (restricted to the matching labels) only when the
  filter keeps many rows; a selective filter is scored exactly over its rows (HNSW under a
  restrictive filter loses recall: 0.3-0.5 measured at 100k).

Storage is 8-bit scalar-quantised (one byte per dimension, a quarter of the matrix), since
candidates are re-scored from the float32 matrix: at 100k, with M=32, efConstruction=64 and
ef_search=256, recall@10 0.998 over 103 queries measured against exact search (0.995 with 128,
which missed one of the benchmark's three), about 1.2 ms a query.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

M = 32  # graph links per node (16 lost recall on near-duplicate listings: min 0.3 a query)
EF_CONSTRUCTION = 64
OVERSAMPLE = 4  # candidates asked of the graph per result wanted (at least 40)
MIN_SELECTIVITY = 0.2  # a filter keeping a smaller share of the rows is scored exactly
REBUILD_DEAD_SHARE = 0.25  # dropped labels beyond this share of the graph: build it afresh
ADD_CHUNK = 2_000  # vectors added per turn of the graph's lock, so searches interleave
_GRAPHS = 8  # templates whose graphs one process keeps (as the matrix cache)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnnPolicy:
    """When the graph serves (settings: `SESSIONARY_SEARCH__ANN_*`)."""

    enabled: bool = True
    min_records: int = 20_000
    exact_below: int = 20_000
    ef_search: int = 256


@dataclass(frozen=True)
class Snapshot:
    """A graph in step with one version of a template. A label stands for one distinct vector;
    its rows in the version's matrix are `members[starts[label]:starts[label + 1]]` (none when
    every document holding it was since deleted or changed). `label_of_row` goes back."""

    version: int
    starts: np.ndarray
    members: np.ndarray
    label_of_row: np.ndarray
    live: Any  # a faiss selector of the labels with rows, or None when every label has some

    @property
    def labels(self) -> int:
        return len(self.starts) - 1

    def rows(self, labels: np.ndarray) -> np.ndarray:
        """The rows of `labels` (labels added since this snapshot are not this version's)."""
        labels = labels[labels < self.labels]
        parts = [self.members[self.starts[la] : self.starts[la + 1]] for la in labels]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class Graph:
    """One template's HNSW graph; labels only grow (faiss HNSW cannot remove)."""

    def __init__(self, dimension: int) -> None:
        faiss = _faiss()
        self.index = faiss.IndexHNSWSQ(
            dimension, faiss.ScalarQuantizer.QT_8bit, M, faiss.METRIC_INNER_PRODUCT
        )
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        # One label per distinct vector, by digest: exact duplicates (the same text embedded
        # twice) share it, since HNSW prunes the links between identical points and would
        # reach few of them (recall 0.667 with ten copies of each vector).
        self.label_of: dict[int, int] = {}
        self.lock = threading.Lock()  # faiss does not search and add at once safely
        self.snapshot: Snapshot | None = None
        self.build_seconds = 0.0

    @property
    def labels(self) -> int:
        return int(self.index.ntotal)

    def memory_bytes(self) -> int:
        """Codes (one byte a dimension) and level-0 links (2M four-byte ids) per label, plus
        the id map: what the graph adds to the matrix cache, near enough for a report."""
        per_label = self.index.d + 2 * M * 4 + 8 + 8
        return int(self.labels * (per_label + 60))

    def add(self, vectors: np.ndarray, digests: list[int]) -> None:
        if not self.index.is_trained:
            self.index.train(vectors)
        first = self.labels
        for start in range(0, len(digests), ADD_CHUNK):
            with self.lock:
                self.index.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK]))
        for offset, digest in enumerate(digests):
            self.label_of[digest] = first + offset

    def search(self, query: np.ndarray, k: int, ef_search: int, selector: Any) -> np.ndarray:
        faiss = _faiss()
        params = faiss.SearchParametersHNSW(efSearch=max(ef_search, k), sel=selector)
        with self.lock:
            _, labels = self.index.search(query.reshape(1, -1), k, params=params)
        found: np.ndarray = labels[0]
        return found[found >= 0]


def _faiss() -> Any:
    """faiss, imported on first use: most templates never need it (its import is ~0.3 s)."""
    import importlib

    return importlib.import_module("faiss")


def _digests(matrix: np.ndarray) -> np.ndarray:
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
            for row in matrix
        ),
        dtype=np.uint64,
        count=len(matrix),
    )


def _selector(keep: np.ndarray) -> Any:
    """A faiss selector over labels from a boolean array (the bitmap is kept alive on it)."""
    faiss = _faiss()
    bitmap = np.packbits(keep, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bitmap))
    selector.bitmap_ref = bitmap  # faiss holds a raw pointer: the array must outlive it
    return selector


class AnnIndexes:
    """Process-wide: each large template's graph, caught up by one worker thread."""

    def __init__(self) -> None:
        self._graphs: OrderedDict[str, Graph] = OrderedDict()
        self._wanted: dict[str, Any] = {}  # template id -> the newest entry to catch up to
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._busy = False
        self._failed: dict[str, int] = {}  # template id -> a version whose build failed
        self.unavailable = False  # faiss failed to load: searches stay exact

    def snapshot(self, template_id: str, entry: Any) -> tuple[Graph, Snapshot] | None:
        """The graph in step with `entry` (a ranking.TemplateIndex), or None after asking the
        worker to catch it up (the caller then scores exactly). An entry of no known version
        (`ranking.UNKNOWN_VERSION`, below 0) is scored exactly, and no graph is built from it."""
        if entry.version < 0:
            return None
        with self._lock:
            graph = self._graphs.get(template_id)
            snap = graph.snapshot if graph is not None else None
            if graph is not None and snap is not None and snap.version == entry.version:
                self._graphs.move_to_end(template_id)
                return graph, snap
            if (
                self.unavailable
                or (snap is not None and snap.version > entry.version)
                or self._failed.get(template_id) == entry.version
            ):
                return None  # no library, an older version than the graph's, or a failed one
            current = self._wanted.get(template_id)
            if current is None or current.version < entry.version:
                self._wanted[template_id] = entry
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="ann-index", daemon=True)
                self._worker.start()
        return None

    def wait(self, timeout: float = 600.0) -> bool:
        """Block until no catch-up is pending (benchmarks and tests; never in a request)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._wanted or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def graph(self, template_id: str) -> Graph | None:
        with self._lock:
            return self._graphs.get(template_id)

    def clear(self) -> None:
        with self._lock:
            self._graphs.clear()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._wanted:
                    self._busy = False
                    self._idle.notify_all()
                    self._worker = None
                    return
                template_id, entry = next(iter(self._wanted.items()))
                del self._wanted[template_id]
                graph = self._graphs.get(template_id)
                done = graph.snapshot if graph is not None else None
                if done is not None and done.version >= entry.version:
                    continue  # asked again by searches made while this version was building
                self._busy = True
            try:
                fresh = self._catch_up(graph, entry)
            except ImportError:
                fresh, self.unavailable = None, True
                log.warning("faiss is not importable: searches stay exact")
            except Exception:  # searches stay exact; the next version is tried again
                fresh = None
                log.exception("HNSW graph of %s (version %s) failed", template_id, entry.version)
            with self._lock:
                if fresh is None:
                    self._failed[template_id] = entry.version
                else:
                    self._graphs[template_id] = fresh
                    self._graphs.move_to_end(template_id)
                    while len(self._graphs) > _GRAPHS:
                        self._graphs.popitem(last=False)
                self._busy = False
                self._idle.notify_all()

    def _catch_up(self, graph: Graph | None, entry: Any) -> Graph:
        """Labels for this version's rows, adding the vectors the graph lacks (rebuilding it
        when labels without rows pass a quarter of it)."""
        began = time.perf_counter()
        matrix: np.ndarray = entry.matrix
        digests = [int(d) for d in _digests(matrix)]
        stale = (
            graph is None
            or graph.index.d != matrix.shape[1]
            or len(graph.label_of) - len(set(digests) & graph.label_of.keys())
            > REBUILD_DEAD_SHARE * len(graph.label_of)
        )
        if graph is None or stale:
            graph = Graph(matrix.shape[1])
        fresh: dict[int, int] = {}  # digest -> its first row, for vectors the graph lacks
        for row, digest in enumerate(digests):
            if digest not in graph.label_of and digest not in fresh:
                fresh[digest] = row
        if fresh:
            graph.add(matrix[list(fresh.values())], list(fresh))
        labels = np.fromiter((graph.label_of[d] for d in digests), np.int64, len(digests))
        graph.snapshot = _snapshot(entry.version, labels, graph.labels)
        if fresh:
            graph.build_seconds = time.perf_counter() - began
        return graph


def _snapshot(version: int, labels: np.ndarray, total: int) -> Snapshot:
    """`labels[row]` is each row's label; the snapshot groups rows by label."""
    members = np.argsort(labels, kind="stable").astype(np.int64)
    counts = np.bincount(labels, minlength=total)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    live = None if bool((counts > 0).all()) else _selector(counts > 0)
    return Snapshot(version, starts, members, labels, live)


def approximate(
    graph: Graph,
    snap: Snapshot,
    score: Callable[[np.ndarray], np.ndarray],
    query: np.ndarray,
    keep: np.ndarray | None,
    k: int,
    ef_search: int,
) -> list[tuple[int, float]] | None:
    """The top `k` rows (meeting `keep`, a boolean mask over rows) by exact score, among the
    graph's candidates; None when the graph found fewer than it should (then score exactly)."""
    selector = snap.live
    allowed = len(snap.label_of_row) if keep is None else int(keep.sum())
    if keep is not None:
        by_label = np.zeros(snap.labels, dtype=bool)
        by_label[snap.label_of_row[keep]] = True
        selector = _selector(by_label)
    wanted = max(OVERSAMPLE * k, 40)
    labels = graph.search(query, wanted, max(ef_search, wanted), selector)
    rows = snap.rows(labels)
    if keep is not None:
        rows = rows[keep[rows]]
    if rows.size < min(k, allowed):
        return None
    rows = np.sort(rows)  # ties (exact twins) then fall in row order
    scores = score(rows)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(rows[i]), float(scores[i])) for i in order]


ANN = AnnIndexes()
