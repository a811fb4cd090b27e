"""JSON records → search documents.

Nested objects are addressed by dot path (`owner.email`). A field may arrive wrapped as
`{"value", "searchable", "filterable", "retrievable"}`; `field_options` (a map, or an array of
entries naming their field by `key` / `field` / `name` / `path` / `column_name`) sets the same
flags per path, and a flag on a parent path covers its children.

Privacy is one rule: a `retrievable: false` value never leaves the server. It is not stored in
the returned record nor in the echoed filter values, it does not enter the embedded text or the
lexical index unless the field says `searchable: true`, and it is kept for matching only when
the field says `filterable: true`. `field_options` may also teach the extractor: `aliases`
(phrases naming the field) and `value_aliases` (`{"stored value": ["phrase", ...]}`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from anyascii import anyascii

from sessionary.kit.errors import InvalidRequest
from sessionary.kit.ids import new_id

ID_KEYS = ("id", "_id", "source_id", "sourceId", "record_id", "recordId", "uuid")
FLAG_NAMES = ("searchable", "filterable", "retrievable")
_OPTION_KEY_NAMES = ("key", "field", "name", "path", "column_name", "columnName")
_WORD = re.compile(r"[a-z0-9]+")


def fold(text: str) -> str:
    """Case and accents folded, punctuation kept: `Grünerløkka` → `grunerlokka`."""
    return anyascii(text).lower().strip()


def words(text: str) -> list[str]:
    return _WORD.findall(fold(text))


def _phrases(value: Any, name: str, what: str) -> list[str]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and v.strip() and len(v) <= 100 for v in value
    ):
        raise InvalidRequest(
            f"field_options['{name}'].{what} must be an array of non-blank strings "
            "(at most 100 characters each).",
            param="field_options",
        )
    if len(value) > 50:
        raise InvalidRequest(
            f"field_options['{name}'].{what} holds at most 50 phrases.", param="field_options"
        )
    return [v.strip() for v in value]


def _teaching(name: str, flags: dict[str, Any]) -> dict[str, Any]:
    """`aliases` and `value_aliases` checked: phrases only, bounded in number and length."""
    out: dict[str, Any] = {}
    if "aliases" in flags:
        out["aliases"] = _phrases(flags["aliases"], name, "aliases")
    if "value_aliases" in flags:
        raw = flags["value_aliases"]
        if not isinstance(raw, dict) or len(raw) > 200:
            raise InvalidRequest(
                f"field_options['{name}'].value_aliases must be an object of at most 200 "
                "values, each mapped to an array of phrases.",
                param="field_options",
            )
        out["value_aliases"] = {
            str(value): _phrases(phrases, name, "value_aliases") for value, phrases in raw.items()
        }
        if flags.get("retrievable") is False and out["value_aliases"]:
            raise InvalidRequest(
                f"field_options['{name}'] is not retrievable: its values are never named, so "
                "it takes no value_aliases.",
                param="field_options",
            )
    return out


def parse_field_options(raw: Any) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    entries: list[tuple[str, Any]]
    if isinstance(raw, dict):
        entries = list(raw.items())
    elif isinstance(raw, list):
        entries = []
        for index, item in enumerate(raw):
            if not isinstance(item, dict):
                raise InvalidRequest(
                    "field_options entries must be objects.", param=f"field_options[{index}]"
                )
            name = next((item[k] for k in _OPTION_KEY_NAMES if isinstance(item.get(k), str)), None)
            if name is None:
                raise InvalidRequest(
                    "A field_options entry names its field with key, field, name, path or "
                    "column_name.",
                    param=f"field_options[{index}]",
                )
            entries.append((name, item))
    else:
        raise InvalidRequest("field_options must be an object or an array.", param="field_options")
    options: dict[str, dict[str, Any]] = {}
    for name, flags in entries:
        if not isinstance(flags, dict):
            raise InvalidRequest(
                f"field_options['{name}'] must be an object.", param="field_options"
            )
        chosen = {f: flags[f] for f in FLAG_NAMES if f in flags}
        for flag, value in chosen.items():
            if not isinstance(value, bool):
                raise InvalidRequest(
                    f"field_options['{name}'].{flag} must be true or false.", param="field_options"
                )
        options[name] = {**chosen, **_teaching(name, flags)}
    return options


def _is_wrapper(value: Any) -> bool:
    return isinstance(value, dict) and "value" in value and set(value) <= {"value", *FLAG_NAMES}


@dataclass
class FlatRecord:
    source_id: str
    values: dict[str, Any]
    flags: dict[str, dict[str, bool]] = field(default_factory=dict)


def flatten(record: Any, index: int) -> FlatRecord:
    if not isinstance(record, dict):
        raise InvalidRequest("Each record must be a JSON object.", param=f"records[{index}]")
    values: dict[str, Any] = {}
    flags: dict[str, dict[str, bool]] = {}

    def walk(value: Any, path: str) -> None:
        if _is_wrapper(value):
            flags[path] = {f: bool(value[f]) for f in FLAG_NAMES if f in value}
            walk(value["value"], path)
        elif isinstance(value, dict) and value:
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        else:
            values[path] = value

    walk(record, "")
    raw_id = next((values[k] for k in ID_KEYS if values.get(k) not in (None, "")), None)
    if raw_id is None:
        source_id = new_id("rec")
    elif isinstance(raw_id, str | int) and not isinstance(raw_id, bool):
        source_id = str(raw_id)
    else:
        raise InvalidRequest(
            "A record id must be a string or an integer.", param=f"records[{index}].id"
        )
    if len(source_id) > 256:
        raise InvalidRequest("A record id is at most 256 characters.", param=f"records[{index}].id")
    return FlatRecord(source_id, values, flags)


def flag_of(
    path: str, flag: str, record: FlatRecord, options: dict[str, dict[str, Any]]
) -> bool | None:
    """The most specific explicit setting of a flag for a path (inline wrappers win)."""
    parts = path.split(".")
    for depth in range(len(parts), 0, -1):
        prefix = ".".join(parts[:depth])
        for source in (record.flags, options):
            if flag in source.get(prefix, {}):
                return bool(source[prefix][flag])
    return None


def _unflatten(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in values.items():
        node = out
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
    return out


def _label(path: str) -> str:
    return path.split(".")[-1].replace("_", " ")


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ", ".join(_scalar_text(v) for v in value if not isinstance(v, dict | list))
    return str(value)


@dataclass
class Document:
    source_id: str
    text: str
    record: dict[str, Any]
    filters: dict[str, Any]
    folded: dict[str, Any]
    content_hash: str


def fold_value(value: Any) -> Any:
    if isinstance(value, str):
        return fold(value)
    if isinstance(value, list):
        return [fold_value(v) for v in value]
    return value


def build_document(
    record: FlatRecord,
    options: dict[str, dict[str, Any]],
    structured: set[str],
    wordy: set[str] | None,
    private: frozenset[str] = frozenset(),
) -> Document:
    """`wordy`: the paths searched by default (text-like fields; None: every path); `private`:
    the template's non-retrievable paths (a field private in any record is private in all).

    Numbers and booleans are served by filters; they join the embedded text only when a field is
    marked `searchable: true`, which keeps documents short and their vectors about their words.
    `filters` is what a result may echo (retrievable values only); `folded` is what matching
    reads, and holds a private value only when its field was made filterable explicitly.
    """
    hidden = {
        path
        for path in record.values
        if path in private or flag_of(path, "retrievable", record, options) is False
    }
    retrievable = {path: v for path, v in record.values.items() if path not in hidden}
    lines = []
    filters: dict[str, Any] = {}
    folded: dict[str, Any] = {}
    for path, value in record.values.items():
        if value is None or value == "" or value == []:
            continue
        searchable = flag_of(path, "searchable", record, options)
        default = path not in hidden and (wordy is None or path in wordy)
        if searchable or (searchable is None and default):
            text = _scalar_text(value)
            if text:
                lines.append(f"{_label(path)}: {text}")
        if path in structured:
            folded[path] = fold_value(value)
            if path not in hidden:
                filters[path] = value
    text = ". ".join(lines)
    content = json.dumps(
        [record.source_id, text, filters, folded, retrievable], sort_keys=True, default=str
    )
    return Document(
        source_id=record.source_id,
        text=text,
        record=_unflatten(retrievable),
        filters=filters,
        folded=folded,
        content_hash=hashlib.sha256(content.encode()).hexdigest(),
    )
