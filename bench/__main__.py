"""`make bench`: run the suites and rewrite docs/BENCHMARKS.md.

`python -m bench [--quick] [--only NAME ...]`: with --only, the other suites' sections of the
report are kept as they were.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import re

from bench.common import REPO, machine

SUITES = ["gateway", "providers", "search", "scale"]
MODULES = {"scale": "bench.search_scale"}
REPORT = REPO / "docs" / "BENCHMARKS.md"
_MARK = re.compile(r"<!-- suite:(\w+) -->\n(.*?)<!-- /suite -->\n", re.S)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller inputs")
    parser.add_argument("--only", nargs="*", choices=SUITES, help="run only these suites")
    args = parser.parse_args()
    sections = dict(_MARK.findall(REPORT.read_text())) if REPORT.exists() else {}
    for name in args.only or SUITES:
        print(f"running {name} ...", flush=True)
        stamp = f"Measured {dt.date.today().isoformat()} on {machine()}" + (
            " (quick mode)." if args.quick else "."
        )
        body = importlib.import_module(MODULES.get(name, f"bench.{name}")).run(args.quick)
        sections[name] = f"{body}\n\n{stamp}\n"
    header = [
        "# Benchmarks",
        "",
        "Command: `make bench` (`make bench BENCH_ARGS=--quick` for a short run). Every figure is "
        "a median of several runs, and every comparison was measured side by side in one run on "
        "the same machine.",
        "",
    ]
    blocks = [
        f"<!-- suite:{name} -->\n{sections[name]}<!-- /suite -->\n"
        for name in SUITES
        if name in sections
    ]
    headlines = [
        line.removeprefix("**Headline**: ")
        for name in SUITES
        if name in sections
        for line in sections[name].splitlines()
        if line.startswith("**Headline**: ")
    ]
    closing = ["", "## In short", "", *(f"- {line}" for line in headlines), ""]
    report = "\n".join(header) + "\n".join(blocks) + "\n".join(closing)
    REPORT.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
