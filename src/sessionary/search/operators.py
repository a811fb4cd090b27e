"""One table of filter operators: what each accepts, and what it means in SQL, NumPy and Python.

A condition is a value (`eq`), or an object of operators: `min` / `max` (inclusive; `gte` /
`lte` are the same), `in` (a non-empty list) and `ne`. Values are compared folded (`fold_value`:
case and accents removed from strings), on both sides. A missing value meets `ne` and nothing
else. Each operator below is the single place that says so for validation (`kinds`, `operand`),
for SQL on SQLite and PostgreSQL (`sql`), for whole NumPy columns (`mask`, None when a column
cannot answer it exactly) and for one record in Python (`test`); `tests/test_search_operators.py`
proves the three agree on tricky values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import and_, false, or_
from sqlalchemy.sql.elements import ColumnElement

from sessionary.search.records import fold_value

ALIASES = {"gte": "min", "lte": "max", "eq": "eq"}
SCALAR_KINDS = frozenset({"number", "boolean", "date", "categorical", "text", "tags"})


def _same(value: Any, target: Any) -> bool:
    """Equality as JSON values compare in SQL: text equals text only, numbers and booleans
    compare as numbers (SQLite reads `true` as 1)."""
    if value is None:
        return False
    if isinstance(target, str):
        return isinstance(value, str) and value == target
    if isinstance(value, str):
        return False
    if isinstance(value, list):
        return False
    return bool(value == target)


def _member(value: Any, target: Any) -> bool:
    """A tag condition: the record's list holds the value."""
    return isinstance(value, list) and target in value


def _equal_mask(values: np.ndarray, target: Any, kind: str) -> np.ndarray:
    if kind != "tags" and isinstance(target, str | int | float):
        # NumPy's element-wise `==` on an object column is `_same` for these targets, in C:
        # no JSON value but a string equals a string, and None, lists and objects equal no
        # scalar. (A None target is left to `_same`: `None == None` would hold.)
        return np.asarray(values == target, dtype=bool)
    check = _member if kind == "tags" else _same
    return np.fromiter((check(v, target) for v in values), dtype=bool, count=len(values))


def _eq_sql(column: Any, operand: Any, kind: str) -> ColumnElement[bool]:
    if kind == "tags":
        return column.contains(f'"{operand}"')  # type: ignore[no-any-return]
    clause: ColumnElement[bool] = column == operand
    return clause


def _eq_test(value: Any, operand: Any, kind: str) -> bool:
    return _member(value, operand) if kind == "tags" else _same(value, operand)


def _eq_mask(values: np.ndarray, numbers: np.ndarray | None, operand: Any, kind: str) -> Any:
    if numbers is not None:
        return numbers == float(operand)
    return _equal_mask(values, operand, kind)


def _in_sql(column: Any, operand: list[Any], kind: str) -> ColumnElement[bool]:
    if kind == "tags":
        return or_(*[column.contains(f'"{v}"') for v in operand])
    clause: ColumnElement[bool] = column.in_(operand)
    return clause


def _in_test(value: Any, operand: list[Any], kind: str) -> bool:
    return any(_eq_test(value, v, kind) for v in operand)


def _in_mask(values: np.ndarray, numbers: np.ndarray | None, operand: list[Any], kind: str) -> Any:
    if numbers is not None:
        return np.isin(numbers, [float(v) for v in operand])
    return np.logical_or.reduce([_equal_mask(values, v, kind) for v in operand])


def _ne_sql(column: Any, operand: Any, kind: str) -> ColumnElement[bool]:
    if kind == "tags":
        return ~column.contains(f'"{operand}"') | column.is_(None)  # type: ignore[no-any-return]
    return or_(column.is_(None), column != operand)


def _ne_test(value: Any, operand: Any, kind: str) -> bool:
    return not _eq_test(value, operand, kind)


def _ne_mask(values: np.ndarray, numbers: np.ndarray | None, operand: Any, kind: str) -> Any:
    if numbers is not None:
        return np.isnan(numbers) | (numbers != float(operand))
    return ~_equal_mask(values, operand, kind)


def _bound_test(side: str) -> Callable[[Any, Any, str], bool]:
    def test(value: Any, operand: Any, kind: str) -> bool:
        if (
            value is None
            or isinstance(value, bool | list)
            or isinstance(operand, str) != isinstance(value, str)
        ):
            return False
        return bool(value >= operand if side == "min" else value <= operand)

    return test


def _bound_sql(side: str) -> Callable[[Any, Any, str], ColumnElement[bool]]:
    def sql(column: Any, operand: Any, kind: str) -> ColumnElement[bool]:
        clause: ColumnElement[bool] = column >= operand if side == "min" else column <= operand
        return clause

    return sql


def _bound_mask(side: str) -> Callable[[np.ndarray, np.ndarray | None, Any, str], Any]:
    def mask(values: np.ndarray, numbers: np.ndarray | None, operand: Any, kind: str) -> Any:
        if numbers is None:
            return None  # dates and text compare as strings: SQL answers those
        return numbers >= operand if side == "min" else numbers <= operand

    return mask


@dataclass(frozen=True)
class Operator:
    name: str
    kinds: frozenset[str]  # field kinds it applies to
    operand: str  # "value" (of the field's kind), "list" (of such values) or "bound"
    sql: Callable[[Any, Any, str], ColumnElement[bool]]
    mask: Callable[[np.ndarray, np.ndarray | None, Any, str], Any]
    test: Callable[[Any, Any, str], bool]


OPERATORS: dict[str, Operator] = {
    "eq": Operator("eq", SCALAR_KINDS, "value", _eq_sql, _eq_mask, _eq_test),
    "in": Operator("in", SCALAR_KINDS, "list", _in_sql, _in_mask, _in_test),
    "ne": Operator("ne", SCALAR_KINDS, "value", _ne_sql, _ne_mask, _ne_test),
    "min": Operator(
        "min", frozenset({"number", "date"}), "bound", _bound_sql("min"), _bound_mask("min"),
        _bound_test("min"),
    ),
    "max": Operator(
        "max", frozenset({"number", "date"}), "bound", _bound_sql("max"), _bound_mask("max"),
        _bound_test("max"),
    ),
}  # fmt: skip


def named(name: str) -> str:
    """`gte` → `min`, `lte` → `max`; other names as they are."""
    return ALIASES.get(name) or name


NAMES = tuple(n for n in OPERATORS if n != "eq") + tuple(a for a in ALIASES if a != "eq")


def parts(condition: Any) -> list[tuple[Operator, Any]]:
    """A validated condition as (operator, folded operand) pairs."""
    if not isinstance(condition, dict):
        return [(OPERATORS["eq"], fold_value(condition))]
    out = []
    for name, operand in condition.items():
        operator = OPERATORS[named(str(name))]
        folded = (
            [fold_value(v) for v in operand] if operator.operand == "list" else fold_value(operand)
        )
        out.append((operator, folded))
    return out


def sql(column: Any, condition: Any, kind: str) -> ColumnElement[bool]:
    clauses = [op.sql(column, operand, kind) for op, operand in parts(condition)]
    return and_(*clauses) if clauses else false()


def test(value: Any, condition: Any, kind: str) -> bool:
    folded = fold_value(value)
    return all(op.test(folded, operand, kind) for op, operand in parts(condition))


def mask(values: np.ndarray, numbers: np.ndarray | None, condition: Any, kind: str) -> Any:
    keep: Any = np.ones(len(values), dtype=bool)
    for op, operand in parts(condition):
        part = op.mask(values, numbers, operand, kind)
        if part is None:
            return None
        keep &= part
    return keep
