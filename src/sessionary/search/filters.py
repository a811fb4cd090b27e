"""Validated filters, and the same conditions checked in Python.

The store translates them to SQL over a document's folded filter values (`SearchStore.where`).

A condition is a value (equality; strings compare case- and accent-insensitively), `{"min",
"max"}` (inclusive), `{"in": [...]}`, `{"ne": v}`, or true / false. A range name (`age` for
`min_age` / `max_age`) takes a number that must fall inside the record's own range.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from sessionary.kit.errors import InvalidRequest
from sessionary.search.detection import canonical, structured_paths
from sessionary.search.records import fold_value as _fold

Condition = Any


def _number(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"'{param}' needs a number.", param=param)
    return float(value)


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
    if isinstance(condition, dict):
        extra = set(condition) - {"min", "max", "in", "ne", "gte", "lte"}
        if extra or not condition:
            raise InvalidRequest(f"'{where}' takes min, max, in or ne.", param=where)
        cleaned: dict[str, Any] = {}
        for op, value in condition.items():
            op = {"gte": "min", "lte": "max"}.get(op, op)
            if op in ("min", "max"):
                if kind == "date":
                    cleaned[op] = _scalar(value, "date", schema, key, where)
                else:
                    if kind != "number":
                        raise InvalidRequest(
                            f"'{where}' is not numeric: min/max do not apply.", param=where
                        )
                    cleaned[op] = _number(value, where)
            elif op == "in":
                if not isinstance(value, list) or not value:
                    raise InvalidRequest(f"'{where}.in' needs a non-empty list.", param=where)
                cleaned["in"] = [_scalar(v, kind, schema, key, where) for v in value]
            else:
                cleaned["ne"] = _scalar(value, kind, schema, key, where)
        return cleaned
    return _scalar(condition, kind, schema, key, where)


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
    for key, condition in filters.items():
        ranges = schema.get("ranges", {})
        if key in ranges:
            low, high = (
                record_filters.get(ranges[key]["min"]),
                record_filters.get(ranges[key]["max"]),
            )
            if low is None or high is None or not low <= condition <= high:
                return False
            continue
        value = _fold(record_filters.get(key))
        if isinstance(condition, dict):
            if "min" in condition and (value is None or value < condition["min"]):
                return False
            if "max" in condition and (value is None or value > condition["max"]):
                return False
            if "in" in condition and value not in [_fold(v) for v in condition["in"]]:
                return False
            if "ne" in condition and value == _fold(condition["ne"]):
                return False
        elif value != _fold(condition):
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

    It answers what the SQL of `filter_clauses` answers on SQLite, for the conditions whose
    meaning is plain in both: numbers (equality, min/max, in, ne), strings and booleans
    (equality, in, ne). Anything else (tags, min/max on dates, range pairs, a number column
    holding text) gives None, and the caller asks the database instead.
    """
    keep: np.ndarray | None = None
    for key, condition in filters.items():
        if key in schema.get("ranges", {}):
            return None
        kind = schema["fields"][key]["kind"]
        if kind == "number":
            numbers = columns.numbers(key)
            part = None if numbers is None else _numeric_mask(numbers, condition)
        elif kind == "tags":
            return None
        else:
            values = columns.values(key)
            part = None if values is None else _exact_mask(values, condition)
        if part is None:
            return None
        keep = part if keep is None else keep & part
    return keep


def as_numbers(values: np.ndarray) -> np.ndarray | None:
    """A column as floats (NaN for missing), or None when it holds anything but numbers."""
    if any(v is not None and not isinstance(v, int | float) for v in values):
        return None
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _numeric_mask(numbers: np.ndarray, condition: Condition) -> np.ndarray:
    if not isinstance(condition, dict):
        equal: np.ndarray = numbers == float(condition)
        return equal
    keep = np.ones(len(numbers), dtype=bool)
    if "min" in condition:
        keep &= numbers >= condition["min"]
    if "max" in condition:
        keep &= numbers <= condition["max"]
    if "in" in condition:
        keep &= np.isin(numbers, [float(v) for v in condition["in"]])
    if "ne" in condition:
        keep &= np.isnan(numbers) | (numbers != float(condition["ne"]))
    return keep


def _exact_mask(values: np.ndarray, condition: Condition) -> np.ndarray | None:
    def equal(wanted: Any) -> np.ndarray:
        target = _fold(wanted)
        # SQLite's JSON values: text equals text only; true and 1 are the same number.
        same = str if isinstance(target, str) else int | float
        return np.fromiter(
            (isinstance(v, same) and v == target for v in values), dtype=bool, count=len(values)
        )

    if not isinstance(condition, dict):
        return equal(condition)
    if "min" in condition or "max" in condition:
        return None
    keep = np.ones(len(values), dtype=bool)
    if "in" in condition:
        keep &= np.logical_or.reduce([equal(v) for v in condition["in"]])
    if "ne" in condition:
        keep &= ~equal(condition["ne"])
    return keep
