"""The LLM extractor: its output constrained to the template's JSON Schema (a grammar on the
bundled llama.cpp model), validated like search_params, merged after the rules."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sessionary.app import create_app
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.errors import ApiError
from sessionary.providers.base import ChatRequest, ChatResult, Usage
from sessionary.search import detection, llm_extraction
from sessionary.search.records import flatten, parse_field_options
from sessionary.settings.search import SearchSettings
from tests.conftest import Tenant
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

RECORDS = [
    {
        "id": f"r{i}",
        "city": ["Oslo", "Bergen", "Tromsø"][i % 3],
        "price": 500 + 100 * i,
        "pets": i % 2 == 0,
        "secret": ["alpha", "beta"][i % 2],
        "title": f"Flat number {i}",
    }
    for i in range(12)
]
OPTIONS = parse_field_options({"secret": {"retrievable": False, "filterable": True}})


def _schema() -> dict[str, Any]:
    return detection.detect([flatten(r, i) for i, r in enumerate(RECORDS)], OPTIONS)


def _answer(text: str) -> Any:
    def generate(request: ChatRequest) -> ChatResult:
        assert request.json_schema == llm_extraction.json_schema(_schema())
        return ChatResult(text, Usage(10, 10), "stop", "test")

    return generate


def test_the_schema_holds_only_public_extractable_fields() -> None:
    schema = llm_extraction.json_schema(_schema())
    assert set(schema["properties"]) == {"city", "price", "pets"}
    assert schema["additionalProperties"] is False
    city = schema["properties"]["city"]["anyOf"][0]
    assert city == {"type": "string", "enum": ["Bergen", "Oslo", "Tromsø"]}
    prompt = " ".join(m.text for m in llm_extraction.prompt(_schema(), "x"))
    assert "secret" not in prompt and "alpha" not in prompt


def test_model_output_is_validated_like_search_params() -> None:
    answer = json.dumps(
        {"city": "tromso", "price": "cheap", "secret": "alpha", "nope": 1, "pets": {"min": 1}}
    )
    assert llm_extraction.extract(_schema(), "q", _answer(answer)) == {"city": "Tromsø"}
    assert llm_extraction.extract(_schema(), "q", _answer("not json")) == {}
    assert llm_extraction.extract(_schema(), "q", _answer("[1, 2]")) == {}

    def failing(request: ChatRequest) -> ChatResult:
        raise ApiError("upstream down")

    assert llm_extraction.extract(_schema(), "q", failing) == {}
    assert llm_extraction.merge({"city": "Oslo"}, {"city": "Bergen", "pets": True}) == {
        "city": "Oslo",
        "pets": True,
    }


def test_the_bundled_model_answers_inside_the_schema() -> None:
    from sessionary.providers.llm.local import LlamaCppChat
    from sessionary.providers.settings import ProviderSettings

    chat = LlamaCppChat(ProviderSettings(provider="local"))
    texts: list[str] = []

    def generate(request: ChatRequest) -> ChatResult:
        result = asyncio.run(chat.generate(request))
        texts.append(result.text)
        return result

    schema = _schema()
    allowed = set(llm_extraction.json_schema(schema)["properties"])
    for query in ("flat in Bergen under 900", "pets allowed in Oslo", "anything"):
        filters = llm_extraction.extract(schema, query, generate)
        assert set(filters) <= allowed, (query, filters)
    for text in texts:  # the grammar holds the model to a JSON object of known fields
        assert set(json.loads(text)) <= allowed, text


def test_both_keeps_the_rules_and_serves_the_search(
    settings: Settings, db: Database, tenant: Tenant, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("the model call is the same on both engines")
    grant(db, tenant, 100_000_000)
    app = create_app(settings.model_copy(update={"search": SearchSettings(extractor="both")}))
    with TestClient(app, raise_server_exceptions=False) as client:
        created = client.post(
            "/v1/chat/create_embedding",
            json={"records": RECORDS, "field_options": {"secret": {"retrievable": False}}},
            headers=tenant.headers,
        )
        assert created.status_code == 200, created.text
        answer = client.post(
            "/v1/chat/search_against_embedding",
            json={
                "template_id": created.json()["template_id"],
                "search_term": "flat in Bergen under 900",
            },
            headers=tenant.headers,
        )
        assert answer.status_code == 200, answer.text
        filters = answer.json()["structured_filters"]
        assert filters["city"] == "Bergen" and filters["price"] == {"max": 900}
        assert set(filters) <= {"city", "price", "pets"}
        for result in answer.json()["results"]:
            assert result["record"]["city"] == "Bergen" and result["record"]["price"] <= 900
