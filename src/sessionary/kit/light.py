"""Whether a request is small enough for its units of work to run on the event loop.

The loop runs a unit only when its cost cannot grow with what the caller sent
(`kit/loop_units.py`): a turn's input and tools, a search's filters and record, each at most
`LIGHT_CHARS` characters (keys included) in at most `LIGHT_VALUES` JSON values. Anything larger
runs on a worker, where a 10 MB body does not hold up every other request.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

LIGHT_CHARS = 16_000
LIGHT_VALUES = 400


def is_light(parts: Any, heavy_types: Collection[str] = ()) -> bool:
    """Whether `parts` (any JSON value) is within the bounds above, with no object whose string
    `"type"` is one of `heavy_types` (a file or an image to decode)."""
    pending: list[Any] = [parts]
    chars = seen = 0
    while pending:
        value = pending.pop()
        seen += 1
        if seen > LIGHT_VALUES:
            return False
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, dict):
            kind = value.get("type")  # JSON Schema's "type" may be a list: ["string", "null"]
            if isinstance(kind, str) and kind in heavy_types:
                return False
            chars += sum(len(key) for key in value if isinstance(key, str))
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return chars <= LIGHT_CHARS
