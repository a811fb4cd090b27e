"""What the server's PostgreSQL backends do during a load run: running, waiting for a row lock,
flushing the WAL at commit.

Sampled every `EVERY_S` from `pg_stat_activity` on a connection of its own (left out of the
counts), for one database's client backends. The figures are mean numbers of backends in each
state over the run, so 0.5 is half a backend on average: by Little's law, the turns a second
times the time each turn spends in that state.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

EVERY_S = 0.01
STATES = {
    "running": "running",
    "row lock": "waiting for a row lock",
    "wal": "flushing the WAL at commit",
    "other": "waiting for anything else",
}
_SAMPLE = """
SELECT CASE
         WHEN wait_event_type IS NULL THEN 'running'
         WHEN wait_event_type = 'Lock' THEN 'row lock'
         WHEN wait_event IN ('WalSync', 'WalWrite') THEN 'wal'
         ELSE 'other'
       END,
       count(*)
FROM pg_stat_activity
WHERE datname = %s AND backend_type = 'client backend' AND state = 'active'
  AND pid <> pg_backend_pid()
GROUP BY 1
"""


def during(uri: str, database: str, load: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """`load()`'s answer, and the mean number of `database`'s active backends in each state
    while it ran."""
    import psycopg

    counts: Counter[str] = Counter()
    samples = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal samples
        with psycopg.connect(uri, autocommit=True) as connection:
            while not done.is_set():
                for state, number in connection.execute(_SAMPLE, (database,)).fetchall():
                    counts[state] += number
                samples += 1
                done.wait(EVERY_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        answer = load()
    finally:
        done.set()
        sampler.join()
    return answer, {state: counts[state] / max(samples, 1) for state in STATES}


def fdatasync_ms(directory: Path, times: int = 200) -> float:
    """The median time of writing 8 KB to a file in `directory` and flushing it to the disk,
    as a commit flushes the WAL."""
    path = directory / "fdatasync-probe"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    took = []
    try:
        for n in range(times):
            os.pwrite(descriptor, b"x" * 8192, (n % 16) * 8192)
            began = time.perf_counter()
            os.fdatasync(descriptor)
            took.append(time.perf_counter() - began)
    finally:
        os.close(descriptor)
        path.unlink()
    return statistics.median(took) * 1000


def describe(means: dict[str, float]) -> str:
    """'0.31 running, 0.52 waiting for a row lock, ...'."""
    return ", ".join(f"{means[state]:.2f} {label}" for state, label in STATES.items())
