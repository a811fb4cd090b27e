"""Chroma's side of the search comparison, run by the Python of `bench/.venv-chroma`.

Chroma pins its own dependencies (onnxruntime, grpcio, an older httpx than ours), so it lives in a
virtual environment of its own and talks to the benchmark through files: it reads the vectors,
metadata and queries that `bench/search.py` wrote, loads them into an embedded (persistent,
in-process) Chroma collection with cosine distance, answers every query a few times and writes the
ids it found, the latencies and its resident memory as JSON.

Usage: `python bench/chroma_runner.py WORKDIR`; WORKDIR holds `job.json`, `vectors.npy` and
`metadata.json`, and receives `chroma.json`.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import chromadb
import numpy as np


def rss_bytes() -> int:
    """Resident memory now (Linux), in bytes."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def main(workdir: Path) -> None:
    job = json.loads((workdir / "job.json").read_text())
    base = np.load(workdir / "vectors.npy")
    metadata = json.loads((workdir / "metadata.json").read_text())
    records = int(job["records"])
    before = rss_bytes()
    client = chromadb.PersistentClient(path=str(workdir / "chroma"))
    collection = client.create_collection("bench", metadata={"hnsw:space": "cosine"})
    batch = min(client.get_max_batch_size(), 5_000)
    started = time.perf_counter()
    for start in range(0, records, batch):
        rows = range(start, min(start + batch, records))
        collection.add(
            ids=[f"r{i}" for i in rows],
            embeddings=base[[i % len(base) for i in rows]],
            metadatas=[metadata[i % len(base)] for i in rows],
        )
    load_seconds = time.perf_counter() - started
    answers = []
    for query in job["queries"]:
        vector = np.asarray(query["vector"], dtype=np.float32)
        where = query["where"] or None
        times, ids = [], []
        for _ in range(int(job["repeats"]) + 1):
            began = time.perf_counter()
            found = collection.query(query_embeddings=[vector], n_results=10, where=where)
            times.append((time.perf_counter() - began) * 1000)
            ids = found["ids"][0]
        answers.append({"ids": ids, "ms": times[1:]})  # the first answer warms caches
    result = {
        "load_seconds": load_seconds,
        "rss_growth_bytes": rss_bytes() - before,
        "answers": answers,
        "version": chromadb.__version__,
    }
    (workdir / "chroma.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
