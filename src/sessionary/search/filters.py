"""Validated filters, and the same conditions checked in Python.

What each operator means lives in `operators` (one table for validation, SQL, NumPy and
Python); this module applies it to a template's schema. A range name (`age` for `min_age` /
`max_age`) takes a number that must fall inside the record's own range.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from sessionary.kit.errors import InvalidRequest
from sessionary.search import operators
from sessionary.search.detection import canonical, structured_paths

Condition = Any


# An `in` list longer than this is refused: PostgreSQL binds each value as a parameter (65,535
# at most per statement), and no person's question names a thousand values.
MAX_IN_VALUES = 1000


def _number(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"'{param}' needs a number.", param=param)
    try:
        number = float(value)
    except OverflowError:  # an integer past any float
        number = math.inf
    if not math.isfinite(number):  # NaN, Infinity or 1e400: no column holds them
        raise InvalidRequest(f"'{param}' needs a finite number.", param=param)
    return number


def validate(raw: Any, schema: dict[str, Any], param: str) -> dict[str, Condition]:
    """Filters checked against the schema: unknown fields and wrong types are a 400 naming them."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest(f"'{param}' must be an object of field conditions.", param=param)
    known = structured_paths(schema)
    ranges = schema.get("ranges", {})
    out: dict[str, Condition] = {}
    for key, condition in raw.items():
        where = f"{param}.{key}"
        if key in ranges:
            out[key] = _number(condition, where)
            continue
        if key not in known:
            raise InvalidRequest(f"Unknown filter field '{key}' for this template.", param=where)
        kind = schema["fields"][key]["kind"]
        out[key] = _validate_condition(condition, kind, schema, key, where)
    return out


def _validate_condition(
    condition: Any, kind: str, schema: dict[str, Any], key: str, where: str
) -> Condition:
    if not isinstance(condition, dict):
        return _scalar(condition, kind, schema, key, where)
    unknown = set(condition) - set(operators.OPERATORS) - set(operators.ALIASES)
    if unknown or not condition or "eq" in condition:
        raise InvalidRequest(f"'{where}' takes {', '.join(operators.NAMES)}.", param=where)
    cleaned: dict[str, Any] = {}
    for name, value in condition.items():
        name = operators.named(str(name))
        operator = operators.OPERATORS[name]
        if kind not in operator.kinds:
            raise InvalidRequest(
                f"'{where}' is a {kind} field: {name} does not apply.", param=where
            )
        if operator.operand == "bound":
            cleaned[name] = (
                _scalar(value, "date", schema, key, where)
                if kind == "date"
                else _number(value, where)
            )
        elif operator.operand == "list":
            if not isinstance(value, list) or not value:
                raise InvalidRequest(f"'{where}.in' needs a non-empty list.", param=where)
            if len(value) > MAX_IN_VALUES:
                raise InvalidRequest(
                    f"'{where}.in' holds at most {MAX_IN_VALUES} values.", param=where
                )
            cleaned[name] = [_scalar(v, kind, schema, key, where) for v in value]
        else:
            cleaned[name] = _scalar(value, kind, schema, key, where)
    return cleaned


def _scalar(value: Any, kind: str, schema: dict[str, Any], key: str, where: str) -> Any:
    if kind == "number":
        return _number(value, where)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidRequest(f"'{where}' needs true or false.", param=where)
        return value
    if not isinstance(value, str):
        raise InvalidRequest(f"'{where}' needs a string.", param=where)
    if kind == "categorical":
        return canonical(schema, key, value) or value
    return value


def matches(
    record_filters: dict[str, Any], filters: dict[str, Condition], schema: dict[str, Any]
) -> bool:
    """The same conditions in Python (used to check results, and by tests)."""
    ranges = schema.get("ranges", {})
    for key, condition in filters.items():
        if key in ranges:
            low, high = (
                record_filters.get(ranges[key]["min"]),
                record_filters.get(ranges[key]["max"]),
            )
            if low is None or high is None or not low <= condition <= high:
                return False
            continue
        kind = schema["fields"][key]["kind"]
        if not operators.test(record_filters.get(key), condition, kind):
            return False
    return True


class Columns(Protocol):
    """A template's folded filter values, one array per field (None when not available)."""

    def values(self, key: str) -> np.ndarray | None: ...

    def numbers(self, key: str) -> np.ndarray | None: ...


def column_mask(
    filters: dict[str, Condition], schema: dict[str, Any], columns: Columns
) -> np.ndarray | None:
    """The conditions evaluated over whole columns instead of row by row in SQL.

    Each operator's `mask` answers what its `sql` answers; where a column cannot (a range pair,
    bounds on dates, a number field holding text) this gives None and the caller asks SQL.
    """
    keep: np.ndarray | None = None
    for key, condition in filters.items():
        if key in schema.get("ranges", {}):
            return None
        kind = schema["fields"][key]["kind"]
        values = columns.values(key)
        if values is None:
            return None
        numbers = None
        if kind == "number":
            numbers = columns.numbers(key)
            if numbers is None:
                return None
        part = operators.mask(values, numbers, condition, kind)
        if part is None:
            return None
        keep = part if keep is None else keep & part
    return keep


def as_numbers(values: np.ndarray) -> np.ndarray | None:
    """A column as floats (NaN for missing), or None when it holds anything but numbers."""
    if any(
        v is not None and (isinstance(v, bool) or not isinstance(v, int | float)) for v in values
    ):
        return None
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
