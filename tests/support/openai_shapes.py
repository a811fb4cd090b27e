"""Strict checks of Responses objects and stream events against the openai SDK's own types.

`Response.model_validate` accepts unknown keys (the SDK's models allow extras), so validation
alone proves too little: after it, every model in the tree must have no extra keys, and a
Response must carry every one of its fields (OpenAI sends them all, null where unset).
"""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

# Top-level fields the server adds to a Response, each documented in docs/API.md: output_text
# (a property in the SDK, a field for Samsar's clients), session_id (Samsar's conversation id),
# store / presence_penalty / frequency_penalty (answered by OpenAI's API, not yet in the SDK's
# type) and credits (a stream's final event: what was charged).
RESPONSE_EXTENSIONS = frozenset(
    {"output_text", "session_id", "store", "presence_penalty", "frequency_penalty", "credits"}
)

_EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def _problems(value: Any, path: str) -> list[str]:
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _problems(v, f"{path}[{i}]")]
    if not isinstance(value, BaseModel):
        return []
    allowed = RESPONSE_EXTENSIONS if isinstance(value, Response) else frozenset()
    problems = [f"{path}.{k}: unknown" for k in (value.model_extra or {}) if k not in allowed]
    if isinstance(value, Response):
        missing = set(type(value).model_fields) - value.model_fields_set
        problems += [f"{path}.{k}: missing" for k in sorted(missing)]
    for name in type(value).model_fields:
        problems += _problems(getattr(value, name), f"{path}.{name}")
    return problems


def strict_response(raw: dict[str, Any]) -> Response:
    """The SDK's Response for `raw`, which must have every field and no unknown ones."""
    response = Response.model_validate(raw)
    problems = _problems(response, "response")
    assert not problems, problems
    return response


def strict_event(raw: dict[str, Any]) -> Any:
    """The SDK's event for `raw` (every required field present, no unknown key at any depth)."""
    event = _EVENTS.validate_python(raw)
    assert event.type == raw["type"], (event.type, raw["type"])
    problems = _problems(event, raw["type"])
    assert not problems, problems
    return event


def strict_events(events: list[dict[str, Any]]) -> list[Any]:
    """Every event strictly typed, numbered 0, 1, 2... in order."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return [strict_event(e) for e in events]
