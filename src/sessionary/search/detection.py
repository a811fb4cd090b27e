"""What kind of field each record path holds, so filters can be extracted and validated.

Kinds: `number`, `boolean`, `date` (ISO), `categorical` (short strings that repeat), `tags`
(lists of strings), `text` (free text, searched semantically), `id`. Numeric pairs such as
`min_age` / `max_age` become a range named `age`. An explicit `filterable` flag overrides the
detection either way. A schema merges with the schema of a later batch (update_embedding).

A category needs repetition: on a small template every title is short and distinct, and
treating titles as categories turns "mountain bike not trek" into an equality on one title.
So strings are categorical only when they are short (few words), and values recur (distinct
values at most `CATEGORY_SHARE` of the records that hold the field).

A field that is not retrievable in any record is `private`: its kind is kept, never its values,
samples or bounds; it is filterable only when `filterable: true` says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sessionary.search.records import ID_KEYS, FlatRecord, flag_of, fold

MAX_CATEGORIES = 200
SMALL_CATEGORY_COUNT = 20
CATEGORY_SHARE = 0.8  # distinct / count at most: some value must recur
CATEGORY_MAX_WORDS = 4  # average words of a value
CATEGORY_MAX_CHARS = 80
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][0-9:.+\-Z]*)?$")
_RANGE = re.compile(r"^(?:(min|max)_(.+)|(.+)_(min|max))$")

TYPE_OF_KIND = {
    "number": "number",
    "boolean": "boolean",
    "date": "date",
    "categorical": "string",
    "tags": "array",
    "range": "range",
}


def _categorical(distinct: int, count: int) -> bool:
    recur = distinct <= CATEGORY_SHARE * count
    few = distinct <= SMALL_CATEGORY_COUNT or (
        distinct <= MAX_CATEGORIES and distinct <= 0.2 * count
    )
    return recur and few


def _merge_strings(mine: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """Categorical or text once both batches are counted: a later batch of three new titles
    does not demote a category, and values that recur across batches become one."""
    count = mine["count"] + info["count"]
    old, new = (side.get("values", side.get("candidates")) for side in (mine, info))
    if old is None or new is None:
        return {"kind": "text", "count": count}
    distinct = sorted(set(old) | set(new))
    if _categorical(len(distinct), count):
        return {"kind": "categorical", "count": count, "values": distinct}
    merged: dict[str, Any] = {"kind": "text", "count": count, "sample": distinct[:5]}
    if len(distinct) <= MAX_CATEGORIES:
        merged["candidates"] = distinct
    return merged


def _kind(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "number"
    if all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in values):
        return "tags"
    if all(isinstance(v, str) for v in values):
        if all(_ISO_DATE.match(v) for v in values):
            return "date"
        return "string"
    return "mixed"


def _field(values: list[Any]) -> dict[str, Any]:
    kind = _kind(values)
    info: dict[str, Any] = {"count": len(values)}
    if kind == "number":
        info.update(
            kind="number",
            min=min(values),
            max=max(values),
            integer=all(float(v).is_integer() for v in values),
        )
    elif kind == "date":
        info.update(kind="date", min=min(values), max=max(values))
    elif kind == "boolean":
        info.update(kind="boolean")
    elif kind == "tags":
        tags = sorted({t for v in values for t in v})
        info.update(
            kind="tags" if len(tags) <= MAX_CATEGORIES else "text", values=tags[:MAX_CATEGORIES]
        )
    elif kind == "string":
        distinct = sorted(set(values))
        avg_words = sum(len(v.split()) for v in values) / len(values)
        short = (
            avg_words <= CATEGORY_MAX_WORDS and max(len(v) for v in values) <= CATEGORY_MAX_CHARS
        )
        if short and _categorical(len(distinct), len(values)):
            info.update(kind="categorical", values=distinct)
        else:
            info.update(kind="text", sample=distinct[:5])
            if short and len(distinct) <= MAX_CATEGORIES:
                info["candidates"] = distinct  # may recur once later batches come
    else:
        info.update(kind="text")
    return info


VALUE_KEYS = ("values", "sample", "candidates", "min", "max")


def detect(records: Iterable[FlatRecord], options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    collected: dict[str, list[Any]] = {}
    forced: dict[str, bool] = {}
    private: set[str] = set()
    for record in records:
        for path, value in record.values.items():
            if flag_of(path, "retrievable", record, options) is False:
                private.add(path)
            if value is None or value == "":
                continue
            collected.setdefault(path, []).append(value)
            explicit = flag_of(path, "filterable", record, options)
            if explicit is not None:
                forced[path] = explicit
    fields = {}
    for path, values in collected.items():
        info = _field(values) if path not in ID_KEYS else {"kind": "id", "count": len(values)}
        if path in forced:
            info["filterable"] = forced[path]
        if path in private:
            info["private"] = True
        fields[path] = info
    return finish({"fields": fields})


def _seal(info: dict[str, Any]) -> None:
    """A private field keeps its kind and count, never a value; it filters only when told to."""
    for key in VALUE_KEYS:
        info.pop(key, None)
    if info.get("filterable") is not True:
        info["filterable"] = False


def finish(schema: dict[str, Any]) -> dict[str, Any]:
    """Apply `filterable` overrides and find range pairs."""
    fields = schema["fields"]
    for info in fields.values():
        if info.get("filterable") is True and info["kind"] == "text":
            info["kind"] = "categorical"
            candidates = info.pop("candidates", None)
            sample = info.pop("sample", [])
            info.setdefault("values", candidates if candidates is not None else sample)
        if info.get("private"):
            _seal(info)
    ranges: dict[str, dict[str, str]] = {}
    for path, info in fields.items():
        match = _RANGE.match(path)
        if info["kind"] != "number" or not match:
            continue
        bound = match.group(1) or match.group(4)
        name = match.group(2) or match.group(3)
        other = path.replace(bound, "max" if bound == "min" else "min", 1)
        if fields.get(other, {}).get("kind") == "number":
            ranges.setdefault(name, {})[bound] = path
    schema["ranges"] = {k: v for k, v in ranges.items() if set(v) == {"min", "max"}}
    return schema


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    fields = {k: dict(v) for k, v in old.get("fields", {}).items()}
    for path, info in new["fields"].items():
        mine = fields.get(path)
        if mine is not None and (mine.get("private") or info.get("private")):
            fields[path] = {**info, "count": mine["count"] + info["count"], "private": True}
            if "filterable" in mine and "filterable" not in info:
                fields[path]["filterable"] = mine["filterable"]
            continue
        if mine is not None and {mine["kind"], info["kind"]} <= {"categorical", "text"}:
            merged = _merge_strings(mine, info)
            if "filterable" in mine or "filterable" in info:
                merged["filterable"] = info.get("filterable", mine.get("filterable"))
            fields[path] = merged
            continue
        if mine is None or mine["kind"] != info["kind"]:
            fields[path] = info
            continue
        mine["count"] += info["count"]
        if info["kind"] in ("number", "date"):
            mine["min"] = min(mine["min"], info["min"])
            mine["max"] = max(mine["max"], info["max"])
            if info["kind"] == "number":
                mine["integer"] = mine["integer"] and info["integer"]
        if info["kind"] == "tags":
            values = sorted(set(mine["values"]) | set(info["values"]))
            if len(values) > MAX_CATEGORIES:
                fields[path] = {"kind": "text", "count": mine["count"]}
            else:
                mine["values"] = values
        if "filterable" in info:
            mine["filterable"] = info["filterable"]
    return finish({"fields": fields})


def structured_paths(schema: dict[str, Any]) -> set[str]:
    out = set()
    for path, info in schema["fields"].items():
        if info.get("filterable") is False:
            continue
        if info["kind"] in ("number", "boolean", "date", "categorical", "tags"):
            out.add(path)
    return out


def wordy_paths(schema: dict[str, Any]) -> set[str]:
    """Fields searched by default: words, not numbers or flags, and nothing private."""
    return {
        p
        for p, info in schema["fields"].items()
        if info["kind"] in ("text", "categorical", "tags", "date") and not info.get("private")
    }


def private_paths(schema: dict[str, Any]) -> frozenset[str]:
    return frozenset(p for p, info in schema["fields"].items() if info.get("private"))


def describe(schema: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """`structured_fields` and `unstructured_fields` as the API answers them."""
    structured = []
    for path in sorted(structured_paths(schema)):
        info = schema["fields"][path]
        stats: dict[str, Any] = {"count": info["count"]}
        for key in ("min", "max", "integer"):
            if key in info:
                stats[key] = info[key]
        samples = info.get("values", [])[:5]
        if info["kind"] == "categorical" and "values" in info:
            stats["distinct"] = len(info["values"])
        entry = {
            "key": path,
            "type": TYPE_OF_KIND[info["kind"]],
            "kind": info["kind"],
            "sampleValues": samples,
            "stats": stats,
        }
        if info.get("private"):
            entry.update(private=True, sampleValues=[], stats={"count": info["count"]})
        structured.append(entry)
    for name, bounds in sorted(schema.get("ranges", {}).items()):
        structured.append(
            {
                "key": name,
                "type": "range",
                "kind": "range",
                "sampleValues": [],
                "stats": {"min_field": bounds["min"], "max_field": bounds["max"]},
            }
        )
    unstructured = sorted(
        p for p, i in schema["fields"].items() if i["kind"] == "text" and not i.get("private")
    )
    return structured, unstructured


def canonical(schema: dict[str, Any], path: str, value: str) -> str | None:
    """The stored spelling of a categorical value given in any case or accents."""
    wanted = fold(value)
    for known in schema["fields"].get(path, {}).get("values", []):
        if fold(known) == wanted:
            return str(known)
    return None
