"""Run every benchmark suite and print where its report went."""

from __future__ import annotations

SUITES: list[str] = []


def main() -> None:
    if not SUITES:
        print("No benchmark suites yet.")
        return


if __name__ == "__main__":
    main()
