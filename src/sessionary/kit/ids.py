"""Random, prefixed, time-sortable ids (`sess_01J...`): unguessable, and cursor-friendly."""

from __future__ import annotations

from ulid import ULID


def new_id(prefix: str) -> str:
    """A ULID (48-bit millisecond time + 80 random bits) behind a type prefix."""
    return f"{prefix}_{ULID()}"
