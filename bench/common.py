"""Shared by the benchmark suites: timing, medians, the machine, and the shared data sets."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = work()
    return time.perf_counter() - started, value


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def sentences(limit: int) -> list[str]:
    """Real short texts: Cranfield titles and abstract sentences (public, shipped beside us)."""
    out: list[str] = []
    path = SHARED_DATA / "cranfield" / "docs.jsonl"
    with path.open() as handle:
        for line in handle:
            doc = json.loads(line)
            for piece in [doc.get("title", ""), *doc.get("text", "").split(" . ")]:
                piece = piece.strip()
                if 20 <= len(piece) <= 300:
                    out.append(piece)
                if len(out) >= limit:
                    return out
    return out


def own_venv(path: Path, requirements: list[str]) -> str | None:
    """A virtual environment of its own for a tool whose pins clash with ours, made on first
    use; None when it is ready, else why it could not be made."""
    python = path / "bin" / "python"
    if python.exists():
        return None
    made = subprocess.run([sys.executable, "-m", "venv", str(path)], capture_output=True, text=True)
    if made.returncode == 0:
        made = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *requirements],
            capture_output=True,
            text=True,
        )
    if made.returncode != 0:
        shutil.rmtree(path, ignore_errors=True)
        return f"could not install {' '.join(requirements)}: {made.stderr.strip()[-300:]}"
    return None
