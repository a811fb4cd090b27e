"""Random, prefixed, time-sortable ids (`sess_01J...`): unguessable, and cursor-friendly."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from ulid import ULID


def new_id(prefix: str) -> str:
    """A ULID (48-bit millisecond time + 80 random bits) behind a type prefix."""
    return f"{prefix}_{ULID()}"


# What every id looks like (ours, and the platforms' session ids we accept): a path parameter
# outside this shape is a 400 before any lookup.
ID_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"
ObjectId = Annotated[str, Path(pattern=ID_PATTERN, description="An object id (sess_..., msg_...).")]
