"""The whole search request as a client sees it: HTTP, auth, extraction, the query's embedding,
the ledger, retrieval and the JSON answer, measured against a real server process.

10,099 Oslo listings go into one template (SQLite) in this process; then `sessionary serve`
processes answer `POST /v1/chat/search_against_embedding` over loopback, one request at a time:

- "uncached": a server with `SESSIONARY_SEARCH__QUERY_CACHE=0`, so every request embeds its
  query with the bundled model and runs the filter extraction in full (the extractor's word
  vectors are warm, as on any live server);
- "repeated": a server with the query cache on, asked queries it has met (no model call);
- with `BENCH_BASELINE_SRC` (a `src` directory of another checkout), the same two servers run
  from that tree too ("before uncached", "before repeated"), to compare a change side by side.

The servers of this checkout run its own source (their PYTHONPATH is set to it), whatever the
environment's installed copy is. Servers take turns query by query (the order rotated each
round), so a slow spell of a shared machine hits all of them. CPU per request is the server
process's user + system CPU over the timed requests, divided by their number: every thread of
the process counts, BLAS's included.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import pickle
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil

import sessionary
from bench.common import SHARED_DATA
from bench.gateway import free_port, start, stop
from bench.search import FILTERED, LOCAL, NONE, QUERIES, Memo, _ingest
from sessionary.accounts.identity import Principal
from sessionary.accounts.service import AccountService
from sessionary.billing.ledger import Ledger, Owner
from sessionary.billing.pricing import Pricing
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.migrate import upgrade
from sessionary.providers.container import Providers
from sessionary.search.service import SearchService

ROUTE = "/v1/chat/search_against_embedding"
OWN_SRC = str(Path(sessionary.__file__).resolve().parents[1])
# (name, label) of every row the report can hold, in its order.
ROWS = (
    ("uncached", "uncached (the model embeds every query)"),
    ("before_uncached", "before: uncached (BENCH_BASELINE_SRC)"),
    ("repeated", "repeated (query cache)"),
    ("before_repeated", "before: repeated (BENCH_BASELINE_SRC)"),
    ("status", "floor: `GET embedding_status` on the same server (auth, one read)"),
)


def queries() -> list[str]:
    dev = json.loads((SHARED_DATA / "listing_queries_dev.json").read_text())["queries"]
    return list(dict.fromkeys([*QUERIES, *FILTERED, *(q["q"] for q in dev)]))


def prepare(data_dir: Path, embedder: Any) -> tuple[str, str]:
    """A funded account's key and a template of every Oslo listing, in `data_dir`."""
    db = Database(Settings(data_dir=data_dir, preload_models=False))
    upgrade(db)
    with db.session() as session:
        account, issued = AccountService(session).create_account("bench")
        Ledger(session).grant(Owner.account(account.id), 10**15)
    service = SearchService(db, Providers(llm=None, embeddings=embedder, images=None), Pricing())
    listings = json.loads((SHARED_DATA / "oslo_listings.json").read_text())
    caller = Principal(account.id, issued.key.id)
    template_id = asyncio.run(_ingest(service, caller, listings, "listings"))
    db.dispose()
    return issued.plaintext, template_id


def serve(data_dir: Path, work: Path, name: str, env: dict[str, str], stack: ExitStack) -> Any:
    port = free_port()
    server_env = {
        "SESSIONARY_DATA_DIR": str(data_dir),
        "SESSIONARY_PORT": str(port),
        "SESSIONARY_LOG_LEVEL": "WARNING",
        "SESSIONARY_PRELOAD_MODELS": "true",
        **env,
    }
    process = start(
        [sys.executable, "-m", "sessionary", "serve"],
        server_env,
        f"http://127.0.0.1:{port}/readyz",
        work / f"{name}.log",
    )
    stack.callback(stop, process)
    return f"http://127.0.0.1:{port}", psutil.Process(process.pid)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def measure(
    servers: dict[str, tuple[str, psutil.Process]],
    key: str,
    template_id: str,
    texts: list[str],
    rounds: int,
) -> dict[str, dict[str, float]]:
    headers = {"Authorization": f"Bearer {key}"}
    clients = {
        n: httpx.Client(base_url=url, headers=headers, timeout=60)
        for n, (url, _) in servers.items()
    }
    # "status" is the floor under any search: the repeated server's cheapest authenticated
    # call (GET embedding_status: auth, one template read, a small JSON answer).
    targets = {**{n: n for n in servers}, "status": "repeated"}
    names = list(targets)

    def ask(name: str, text: str) -> tuple[float, float]:
        """The client's time and the server's own (its `Server-Timing: app;dur=`), seconds."""
        client = clients[targets[name]]
        started = time.perf_counter()
        if name == "status":
            answer = client.get("/v1/chat/embedding_status", params={"template_id": template_id})
        else:
            body = {"template_id": template_id, "search_term": text, "limit": 10}
            answer = client.post(ROUTE, json=body)
        elapsed = time.perf_counter() - started
        answer.raise_for_status()
        timing = answer.headers.get("server-timing", "")
        server = float(timing.partition("dur=")[2]) / 1000 if "dur=" in timing else math.nan
        return elapsed, server

    for name in names:  # warm-up: the matrix cache, the extractor's words, the query cache
        for text in texts:
            ask(name, text)
    latencies: dict[str, list[float]] = {n: [] for n in names}
    server_side: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, float] = dict.fromkeys(names, 0.0)
    load = os.getloadavg()[0]
    for run in range(rounds):
        order = names[run % len(names) :] + names[: run % len(names)]
        for text in texts:
            for name in order:
                process = servers[targets[name]][1]
                before = cpu_seconds(process)
                elapsed, server = ask(name, text)
                latencies[name].append(elapsed)
                server_side[name].append(server)
                cpu[name] += cpu_seconds(process) - before
    for client in clients.values():
        client.close()
    return {
        n: {
            "p50": statistics.median(latencies[n]) * 1000,
            "p95": sorted(latencies[n])[int(0.95 * len(latencies[n]))] * 1000,
            "server_p50": statistics.median(server_side[n]) * 1000,
            "cpu": cpu[n] / len(latencies[n]) * 1000,
            "requests": len(latencies[n]),
            "load": load,
        }
        for n in names
    }


def run_requests(quick: bool, baseline: str | None = None) -> dict[str, dict[str, float]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    providers = Providers.build(NONE, LOCAL, NONE)
    providers.load()
    embedder = Memo(providers.embedder())
    saved = os.environ.get("BENCH_EMBED_CACHE")  # a file of vectors by text, to rerun faster
    if saved and Path(saved).is_file():
        embedder.cache.update(pickle.loads(Path(saved).read_bytes()))
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        key, template_id = prepare(work / "data", embedder)
        if saved:
            Path(saved).write_bytes(pickle.dumps(embedder.cache))
        servers: dict[str, Any] = {}
        for prefix, src in (("", OWN_SRC), ("before_", baseline)):
            if src is None:
                continue
            uncached = {"PYTHONPATH": src, "SESSIONARY_SEARCH__QUERY_CACHE": "0"}
            servers[prefix + "uncached"] = serve(
                work / "data", work, prefix + "uncached", uncached, stack
            )
            repeated = {"PYTHONPATH": src}
            servers[prefix + "repeated"] = serve(
                work / "data", work, prefix + "repeated", repeated, stack
            )
        return measure(servers, key, template_id, queries(), 2 if quick else 5)


def _ms(value: float) -> str:
    """A figure, or a dash where the server sent no Server-Timing (a tree from before it)."""
    return "—" if math.isnan(value) else f"{value:.1f}"


def describe(figures: dict[str, dict[str, float]]) -> list[str]:
    """The report's paragraph and table."""
    some = figures["uncached"]
    before = "before_uncached" in figures
    lines = [
        "**The whole request** (`POST /v1/chat/search_against_embedding`, limit 10, against a "
        "`sessionary serve` process on SQLite holding the 10,099 Oslo listings; "
        f"{len(queries())} distinct queries, with and without extracted filters, "
        f"{some['requests']:.0f} timed requests per server, one at a time over loopback, "
        "servers taking turns). Times are the client's, so HTTP, auth, filter extraction, the "
        "ledger (a balance check and one conditional charge: the bundled model runs in the "
        "server, so nothing is held while it embeds), retrieval and the JSON answer are all in "
        "them, and so is "
        "the query embedding: *uncached* is a server with `SESSIONARY_SEARCH__QUERY_CACHE=0`, "
        "which runs the bundled model and the whole filter extraction on every request; "
        "*repeated* is the default server asked queries it has met, whose vectors and "
        "extracted filters come from its own caches (no model call). Both keep, per template "
        "version, the matrix, the filter columns, the rows a filter set keeps and the documents "
        "as answers show them, so a row of either is a request against a warm server. CPU "
        "is the server process's user + system time over the timed requests, all threads, "
        "divided by their number. *Server p50* is the server's own time, from the app "
        "receiving the request to its answer (the `Server-Timing: app;dur=` header every answer "
        "carries): the same work without uvicorn's HTTP parsing, the loopback and the client's "
        "HTTP stack, which the client's times also hold. The floor row is the cheapest "
        "authenticated call to the same server, what any request pays before search begins. "
        + (
            "The *before* rows are the same servers run from another source tree "
            "(`BENCH_BASELINE_SRC`), in the same run, taking turns with the others. "
            if before
            else ""
        )
        + "The machine's load average "
        f"when the timed requests began: {some['load']:.1f} (on {os.cpu_count()} cores); other "
        "work inflates every row alike, since the servers take turns. The milliseconds follow "
        "the machine, whose speed varies from day to day: the floor row is its yardstick (a "
        "run on 2026-12-02 morning, with the floor at 2.1 ms server-side, measured 9.0 and "
        "3.5 ms for the uncached and the repeated search).",
        "",
        "| server | p50 ms | p95 ms | server p50 ms | CPU ms / request |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, label in ROWS:
        if name in figures:
            f = figures[name]
            lines.append(
                f"| {label} | {f['p50']:.1f} | {f['p95']:.1f} | {_ms(f['server_p50'])} "
                f"| {f['cpu']:.1f} |"
            )
    return lines


if __name__ == "__main__":
    print(
        json.dumps(
            run_requests("--quick" in sys.argv, os.environ.get("BENCH_BASELINE_SRC")), indent=1
        )
    )
