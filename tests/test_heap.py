"""A started server freezes its start-up objects out of full collections (`kit/heap.py`), once
per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import asyncio, gc, json, os
from sessionary.app import create_app
from sessionary.kit.heap import freeze_once

async def main():
    app = create_app()
    async with app.router.lifespan_context(app):
        frozen, live = gc.get_freeze_count(), len(gc.get_objects())
        again = freeze_once()
    print(json.dumps({"frozen": frozen, "live": live, "again": again}))

asyncio.run(main())
"""


def test_a_started_server_leaves_its_start_up_objects_out_of_collections(
    tmp_path: Path,
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "SESSIONARY_DATA_DIR": str(tmp_path / "data"),
        "SESSIONARY_PRELOAD_MODELS": "false",
        "SESSIONARY_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["frozen"] > 50_000  # the modules, classes and structures of a server
    assert counts["live"] < counts["frozen"] / 10  # what a full collection still walks
    assert counts["again"] == 0  # once per process
