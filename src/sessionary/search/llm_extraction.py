"""Filters from a query by a chat model, for when one is configured (`SESSIONARY_SEARCH__EXTRACTOR`
= `llm` or `both`).

The model cannot answer outside the template: its output is constrained to a JSON Schema built
from the template's extractable fields (a grammar on the local llama.cpp model, `json_schema`
on an OpenAI-compatible upstream), then every condition is validated like `search_params`, and
one that fails is dropped rather than trusted. Private fields are not in the schema, so the
model never sees their names or values. With `both`, the rule-based filters win key by key and
the model only adds fields the rules did not find. A model that fails leaves the rule-based
result in place: extraction is a help to search, never a reason for it to fail.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from sessionary.kit.errors import ApiError, InvalidRequest
from sessionary.providers.base import ChatMessage, ChatRequest, ChatResult
from sessionary.search.filters import validate

log = logging.getLogger(__name__)

MAX_ENUM = 60
MAX_OUTPUT_TOKENS = 200
Generate = Callable[[ChatRequest], ChatResult]


def _extractable(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        path: info
        for path, info in schema["fields"].items()
        if not info.get("private")
        and info.get("filterable") is not False
        and info["kind"] in ("categorical", "number", "boolean", "date")
    }


def _property(info: dict[str, Any]) -> dict[str, Any]:
    kind = info["kind"]
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "number":
        bounds = {"min": {"type": "number"}, "max": {"type": "number"}}
        return {
            "anyOf": [
                {"type": "number"},
                {"type": "object", "properties": bounds, "additionalProperties": False},
            ]
        }
    if kind == "date":
        bounds = {"min": {"type": "string"}, "max": {"type": "string"}}
        return {"type": "object", "properties": bounds, "additionalProperties": False}
    values = [str(v) for v in info.get("values", [])]
    value: dict[str, Any] = (
        {"type": "string", "enum": values} if 0 < len(values) <= MAX_ENUM else {"type": "string"}
    )
    return {
        "anyOf": [
            value,
            {
                "type": "object",
                "properties": {"ne": value},
                "required": ["ne"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"in": {"type": "array", "items": value, "minItems": 1}},
                "required": ["in"],
                "additionalProperties": False,
            },
        ]
    }


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The template's extractable fields as the JSON Schema the model's answer must meet."""
    return {
        "type": "object",
        "properties": {path: _property(info) for path, info in _extractable(schema).items()},
        "additionalProperties": False,
    }


def _describe(path: str, info: dict[str, Any]) -> str:
    kind = info["kind"]
    if kind == "categorical":
        values = ", ".join(str(v) for v in info.get("values", [])[:MAX_ENUM])
        return f"- {path}: one of [{values}]"
    if kind in ("number", "date"):
        return f"- {path}: {kind} from {info.get('min')} to {info.get('max')}"
    return f"- {path}: true or false"


def prompt(schema: dict[str, Any], term: str) -> list[ChatMessage]:
    fields = "\n".join(_describe(p, i) for p, i in _extractable(schema).items())
    system = (
        "You turn a search query into filters over these fields:\n"
        f"{fields}\n"
        "Answer with a JSON object holding only the fields the query states. A value is "
        'equality; {"min": n} / {"max": n} bound a number or a date; {"ne": v} excludes a '
        'value; {"in": [a, b]} allows several. Words that name no field are left out.'
    )
    return [ChatMessage("system", system), ChatMessage("user", term)]


def extract(schema: dict[str, Any], term: str, generate: Generate) -> dict[str, Any]:
    """The model's filters, each validated like `search_params`; invalid ones are dropped."""
    request = ChatRequest(
        messages=prompt(schema, term),
        max_output_tokens=MAX_OUTPUT_TOKENS,
        temperature=0.0,
        json_schema=json_schema(schema),
    )
    try:
        answer = json.loads(generate(request).text)
    except (ApiError, ValueError) as exc:
        log.warning("llm_extraction_failed", extra={"error": type(exc).__name__})
        return {}
    if not isinstance(answer, dict):
        return {}
    allowed = _extractable(schema)
    filters: dict[str, Any] = {}
    for key, condition in answer.items():
        if key not in allowed:
            continue
        try:
            filters.update(validate({key: condition}, schema, "llm"))
        except InvalidRequest:
            continue
    return filters


def merge(rules: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """`both`: the rules' filters win key by key; the model adds what they did not find."""
    return {**model, **rules}
