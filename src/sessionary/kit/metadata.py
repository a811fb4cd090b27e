"""OpenAI's metadata rules: at most 16 pairs, keys up to 64 characters, string values up to 512."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from sessionary.kit.errors import InvalidRequest

MAX_PAIRS = 16
MAX_KEY = 64
MAX_VALUE = 512
_FILTER_KEY = re.compile(r"^metadata\[(.+)\]$")


def check_metadata(value: Any, param: str = "metadata") -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("metadata must be an object of string keys and values.", param=param)
    if len(value) > MAX_PAIRS:
        raise InvalidRequest(f"metadata holds at most {MAX_PAIRS} pairs.", param=param)
    for key, item in value.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY:
            raise InvalidRequest(f"metadata keys are 1 to {MAX_KEY} characters.", param=param)
        if not isinstance(item, str) or len(item) > MAX_VALUE:
            raise InvalidRequest(
                f"metadata values are strings of at most {MAX_VALUE} characters ('{key}' is not).",
                param=f"{param}.{key}",
            )
    return dict(value)


def dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def metadata_filter(query: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The `metadata[key]=value` pairs of a list's query string (how OpenAI's SDKs send a
    metadata filter), checked like metadata."""
    pairs = {m.group(1): value for key, value in query if (m := _FILTER_KEY.match(key))}
    return check_metadata(pairs) or {}
