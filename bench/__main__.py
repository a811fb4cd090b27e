"""`make bench`: run the suites and rewrite docs/BENCHMARKS.md.

`python -m bench [--quick] [--only NAME ...]`
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib

from bench.common import REPO, machine

SUITES = ["providers"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller inputs")
    parser.add_argument("--only", nargs="*", choices=SUITES, help="run only these suites")
    args = parser.parse_args()
    chosen = args.only or SUITES
    sections = []
    for name in chosen:
        print(f"running {name} ...", flush=True)
        sections.append(importlib.import_module(f"bench.{name}").run(args.quick))
    header = [
        "# Benchmarks",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine()}.",
        f"Command: `make bench`{' (quick mode)' if args.quick else ''}. "
        "Every figure is a median of several runs, "
        "and every comparison was measured side by side in the same run.",
        "",
    ]
    report = "\n".join(header) + "\n\n".join(sections) + "\n"
    (REPO / "docs" / "BENCHMARKS.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
