"""Client JSON Schemas are bounded before anything compiles them.

A reference that points back at itself once crashed the whole server process (the local model's
grammar compiler recursed forever), a schema nested 300 deep was a 500, and schemas the grammar
converter could not express were 502s. Each is now a 400 naming the parameter, on every path a
schema arrives by (function tools on Responses and chat completions, `text.format`,
`response_format`), and nothing is charged.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from sessionary.kit.db import Database
from tests.conftest import Tenant
from tests.test_credits_http import grant

SELF_REF: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"$ref": "#/$defs/x"}},
    "required": ["a"],
    "$defs": {"x": {"$ref": "#/$defs/x"}},
}
ROOT_REF: dict[str, Any] = {"type": "object", "properties": {"child": {"$ref": "#"}}}


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


BAD = [
    (SELF_REF, "schema_recursive"),
    (ROOT_REF, "schema_recursive"),
    (nested(300), "schema_too_complex"),
    ({"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/x.json"}}}, None),
    ({"type": "object", "properties": {"a": {"$ref": "#/nope"}}}, "schema_bad_ref"),
    ({"type": "object", "properties": {"a": {"type": 12}}}, "invalid_schema"),
]


def balance(client: TestClient, tenant: Tenant) -> float:
    return float(client.get("/v1/credits", headers=tenant.headers).json()["remainingCredits"])


def requests_for(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(path, body, the parameter the 400 must name) for each way a schema arrives."""
    responses_tool = {"type": "function", "name": "f", "parameters": schema}
    chat_tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    ask = [{"role": "user", "content": "call f"}]
    return [
        (
            "/v1/responses",
            {"input": "call f", "tools": [responses_tool], "tool_choice": "required"},
            "tools[0].parameters",
        ),
        (
            "/v1/responses",
            {
                "input": "x",
                "text": {"format": {"type": "json_schema", "name": "s", "schema": schema}},
            },
            "text.format.schema",
        ),
        (
            "/v1/chat/completions",
            {"messages": ask, "tools": [chat_tool], "tool_choice": "required"},
            "tools[0].function.parameters",
        ),
        (
            "/v1/chat/completions",
            {
                "messages": ask,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "s", "schema": schema},
                },
            },
            "response_format.json_schema.schema",
        ),
    ]


@pytest.mark.parametrize(("schema", "code"), BAD)
def test_unbounded_schemas_are_refused_before_any_charge(
    client: TestClient, db: Database, tenant: Tenant, schema: dict[str, Any], code: str | None
) -> None:
    grant(db, tenant, 10_000_000)
    before = balance(client, tenant)
    for path, body, param in requests_for(schema):
        answer = client.post(
            path,
            json={**body, "max_output_tokens": 8}
            if "responses" in path
            else {**body, "max_tokens": 8},
            headers=tenant.headers,
        )
        assert answer.status_code == 400, (path, answer.text)
        error = answer.json()["error"]
        assert error["param"] == param, (path, error)
        if code is not None:
            assert error["code"] == code, (path, error)
    assert balance(client, tenant) == before
    assert client.get("/readyz").status_code == 200  # the server is alive and well


def test_a_schema_the_grammar_cannot_express_is_a_400_not_a_502(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 10_000_000)
    before = balance(client, tenant)
    schema = {"type": "object", "properties": {"a": {"type": "string", "minLength": 10**12}}}
    answer = client.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "call f"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
            "tool_choice": "required",
            "max_tokens": 8,
        },
        headers=tenant.headers,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "schema_not_supported"
    assert balance(client, tenant) == before


def test_a_shared_definition_that_is_not_recursive_still_works(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 10_000_000)
    schema = {
        "type": "object",
        "properties": {"home": {"$ref": "#/$defs/city"}, "away": {"$ref": "#/$defs/city"}},
        "required": ["home"],
        "$defs": {"city": {"type": "string", "maxLength": 12}},
    }
    answer = client.post(
        "/v1/responses",
        json={
            "input": "Weather in Oslo?",
            "tools": [{"type": "function", "name": "f", "parameters": schema}],
            "tool_choice": "required",
            "max_output_tokens": 24,
        },
        headers=tenant.headers,
    )
    assert answer.status_code == 200, answer.text
    calls = [item for item in answer.json()["output"] if item["type"] == "function_call"]
    assert [c["name"] for c in calls] == ["f"]


def test_a_schema_that_passed_is_remembered_per_account_and_a_failing_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`kit/json_schema.py`: the meta-schema check (about 2 ms a function) runs once per schema
    and account; a failure, another account, or a schema orjson cannot write is checked again."""
    from sessionary.kit import json_schema
    from sessionary.kit.errors import InvalidRequest

    monkeypatch.setattr(json_schema, "_passed", json_schema.OrderedDict())
    checked: list[Any] = []
    real = json_schema._check

    def counted(schema: dict[str, Any], param: str) -> None:
        checked.append(schema)
        real(schema, param)

    monkeypatch.setattr(json_schema, "_check", counted)
    tool = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    reordered = {"required": ["q"], "properties": {"q": {"type": "string"}}, "type": "object"}
    json_schema.check_schema(tool, "tools", scope="acct_a")
    json_schema.check_schema(reordered, "tools", scope="acct_a")  # the same schema
    assert len(checked) == 1
    json_schema.check_schema(tool, "tools", scope="acct_b")  # another account checks its own
    assert len(checked) == 2
    bad = {"type": "object", "properties": {"q": {"type": 5}}}
    for _ in range(2):
        with pytest.raises(InvalidRequest):
            json_schema.check_schema(bad, "tools", scope="acct_a")
    assert len(checked) == 4
    huge = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 2**70}}}
    json_schema.check_schema(huge, "tools", scope="acct_a")
    json_schema.check_schema(huge, "tools", scope="acct_a")
    assert len(checked) == 6
    monkeypatch.setattr(json_schema, "_CHECKED", 1)  # past the limit, the oldest is forgotten
    json_schema.check_schema({"type": "object"}, "tools", scope="acct_a")
    json_schema.check_schema(tool, "tools", scope="acct_a")
    assert len(checked) == 8
