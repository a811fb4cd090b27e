"""What a search answers: results without private values, the filters applied, and a notice;
and what the template routes answer (a template's summary).

Privacy is enforced here a second time, on the way out, from the template's schema: a
document written before a field became private (update_embedding with new field_options)
still holds its values, and none of them may leave.
"""

from __future__ import annotations

from typing import Any

from sessionary.search import detection
from sessionary.search.models import EmbeddingTemplate
from sessionary.search.store import Hit

HIDDEN = "(hidden)"
_SYMBOLS = {"min": "≥", "max": "≤", "ne": "≠", "in": "in"}


def redact(record: dict[str, Any], private: frozenset[str], prefix: str = "") -> dict[str, Any]:
    """The record without the private paths (dot paths into nested objects)."""
    if not private:
        return record
    out: dict[str, Any] = {}
    for key, value in record.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if path in private:
            continue
        out[key] = redact(value, private, path) if isinstance(value, dict) else value
    return out


def public_filters(filters: dict[str, Any], private: frozenset[str]) -> dict[str, Any]:
    """The applied conditions as the caller may see them: private ones are left out."""
    return {k: v for k, v in filters.items() if k not in private}


def applied_filters(
    filters: dict[str, Any], sources: dict[str, str], private: frozenset[str]
) -> list[dict[str, Any]]:
    """One entry per applied condition, saying where it came from (`query` when extracted)."""
    out = []
    for key, condition in filters.items():
        entry: dict[str, Any] = {"field": key, "source": sources.get(key, "query")}
        if key in private:
            entry.update(condition=HIDDEN, hidden=True)
        else:
            entry["condition"] = condition
        out.append(entry)
    return out


def describe_condition(key: str, condition: Any, private: frozenset[str]) -> str:
    if key in private:
        return f"{key} (a private field)"
    if not isinstance(condition, dict):
        return f"{key} = {condition}"
    return ", ".join(f"{key} {_SYMBOLS.get(op, op)} {value}" for op, value in condition.items())


def notice(
    filters: dict[str, Any], private: frozenset[str], found: int, record_count: int
) -> str | None:
    """Why an answer is empty, so an empty list is never left unexplained."""
    if found:
        return None
    if not record_count:
        return "The template holds no records."
    if filters:
        applied = "; ".join(describe_condition(k, c, private) for k, c in filters.items())
        return (
            f"No record meets the filters applied ({applied}). Rephrase the query, or send "
            "search_params / structured_filters to set the filters yourself."
        )
    return "No record matched."


def result(
    document: Hit, score: float, include_raw: bool, private: frozenset[str]
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": document.source_id,
        "score": round(score, 6),
        "structured_filters": public_filters(document.filters, private),
    }
    if include_raw:
        answer["record"] = redact(document.record, private)
    return answer


def template_summary(template: EmbeddingTemplate) -> dict[str, Any]:
    structured, unstructured = detection.describe(template.schema)
    return {
        "template_id": template.id,
        "name": template.name,
        "template_hash": template.template_hash,
        "hash_link": f"embedding_template:{template.template_hash}",
        "record_count": template.record_count,
        "status": template.status,
        "structured_fields": structured,
        "unstructured_fields": unstructured,
        "field_options": _shown_options(template),
        "embedding_model": template.embedding_model,
        "dimension": template.dimension,
        "created_at": template.created_at.isoformat(),
        "updated_at": template.updated_at.isoformat(),
    }


INGEST_KEYS = (
    "template_id",
    "template_hash",
    "hash_link",
    "record_count",
    "status",
    "structured_fields",
    "unstructured_fields",
    "field_options",
    "embedding_model",
    "name",
)


def ingest_summary(template: EmbeddingTemplate) -> dict[str, Any]:
    """What an upload answers: the template as it now stands (no timestamps)."""
    summary = template_summary(template)
    return {k: summary[k] for k in INGEST_KEYS}


def _shown_options(template: EmbeddingTemplate) -> dict[str, Any]:
    """The template's field options as listed; a private field's value_aliases would name its
    values, so they are not shown (nor used: private fields are never extracted)."""
    private = detection.private_paths(template.schema)
    return {
        path: {k: v for k, v in flags.items() if not (path in private and k == "value_aliases")}
        for path, flags in (template.field_options or {}).items()
    }
