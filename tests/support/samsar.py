"""Drive the real samsar-js client (through node) against a server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).resolve().parents[1] / "js"


def samsar(
    base_url: str, api_key: str | None, calls: list[tuple[str, list[Any]]], **extra: Any
) -> list[dict[str, Any]]:
    plan = {
        "baseUrl": base_url,
        "apiKey": api_key,
        "calls": [{"method": m, "args": a} for m, a in calls],
        **extra,
    }
    done = subprocess.run(
        ["node", str(JS_DIR / "samsar_calls.mjs")],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        cwd=JS_DIR,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"node failed: {done.stderr}")
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results
