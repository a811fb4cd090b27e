"""An assistant profile's tools are held to the bounds `/v1/responses` holds its own to.

A function tool whose parameters nested 250 deep was stored (a create 252 deep was a 500, and
stored too), and from then on every `GET /v1/assistants` of the account was a 500. Now such a
tool is a 400 naming the parameter on create and update, and a profile stored before the check
still reads, without the tool that cannot be shown.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sessionary.kit.ids import new_id
from sessionary.kit.models import utcnow
from sessionary.profiles.models import AssistantProfile
from sessionary.profiles.store import ProfileStore
from tests.conftest import Tenant, served
from tests.test_auth import assert_error
from tests.test_schema_bounds import BAD, nested

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def function_tool(parameters: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "f", "parameters": parameters}}


def listed(client: TestClient, tenant: Tenant) -> list[dict[str, Any]]:
    answer = client.get("/v1/assistants?limit=100", headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


@pytest.mark.parametrize(
    ("schema", "code"),
    [*BAD, (nested(125), "schema_too_complex")],
    ids=[
        "self-ref",
        "root-ref",
        "nested-300",
        "remote-ref",
        "bad-ref",
        "bad-keyword",
        "nested-250",
    ],
)
def test_unbounded_tool_schemas_are_refused_on_create_and_update(
    client: TestClient, tenant: Tenant, schema: dict[str, Any], code: str | None
) -> None:
    body = {"name": "p", "tools": [WEATHER, function_tool(schema)]}
    error = assert_error(client.post("/v1/assistants", json=body, headers=tenant.headers), 400)
    assert error["param"] == "tools[1].function.parameters"
    if code is not None:
        assert error["code"] == code
    assert listed(client, tenant) == []

    created = client.post("/v1/assistants", json={"name": "p"}, headers=tenant.headers).json()
    update = client.post(
        f"/v1/assistants/{created['id']}",
        json={"name": "renamed", **body},
        headers=tenant.headers,
    )
    assert assert_error(update, 400)["param"] == "tools[1].function.parameters"
    assert [(p["name"], p["tools"]) for p in listed(client, tenant)] == [("p", [])]


@pytest.mark.parametrize(
    ("tool", "param", "code"),
    [
        pytest.param({"type": 3}, "tools[0]", None, id="type-not-text"),
        pytest.param({"function": WEATHER["function"]}, "tools[0]", None, id="no-type"),
        pytest.param({"type": "web_search"}, "tools[0].type", "unsupported_tool", id="web-search"),
        pytest.param({**WEATHER, "deep": nested(200)}, "tools[0].deep", None, id="deep-key"),
        pytest.param(
            {"type": "code_interpreter", "deep": nested(200)}, "tools[0].deep", None, id="deep-ci"
        ),
        pytest.param(
            {**WEATHER, "function": {"name": "f", "x": nested(200)}},
            "tools[0].function.x",
            None,
            id="deep-function-key",
        ),
        pytest.param(
            {"type": "file_search", "file_search": nested(200)},
            "tools[0].file_search.type",
            None,
            id="deep-file-search",
        ),
        pytest.param(
            {**WEATHER, "function": {"name": "no spaces"}},
            "tools[0].function.name",
            None,
            id="bad-name",
        ),
        pytest.param(
            function_tool({"type": "string"}),
            "tools[0].function.parameters",
            None,
            id="not-an-object-schema",
        ),
    ],
)
def test_a_tool_not_shaped_as_the_assistants_api_shapes_it_is_a_400(
    client: TestClient, tenant: Tenant, tool: Any, param: str, code: str | None
) -> None:
    answer = client.post("/v1/assistants", json={"tools": [tool]}, headers=tenant.headers)
    error = assert_error(answer, 400, code)
    assert error["param"] == param
    assert listed(client, tenant) == []


def test_assistant_tools_are_stored_and_shown_as_given(client: TestClient, tenant: Tenant) -> None:
    tools = [
        WEATHER,
        function_tool(nested(15)),
        {"type": "function", "function": {"name": "ping"}},
        {"type": "code_interpreter"},
        {
            "type": "file_search",
            "file_search": {"max_num_results": 5, "ranking_options": {"score_threshold": 0.5}},
        },
    ]
    created = client.post("/v1/assistants", json={"tools": tools}, headers=tenant.headers)
    assert created.status_code == 200, created.text
    assert created.json()["tools"] == tools
    assert listed(client, tenant)[0]["tools"] == tools
    updated = client.post(
        f"/v1/assistants/{created.json()['id']}", json={"tools": [WEATHER]}, headers=tenant.headers
    )
    assert updated.json()["tools"] == [WEATHER]


def test_tools_are_stored_as_validated_not_as_sent(client: TestClient, tenant: Tenant) -> None:
    """Found by an adversary: `"strict": "yes"` passed the check and came back as `"yes"`."""
    sent = [
        {"type": "function", "function": {"name": "ping", "strict": "yes"}},
        {"type": "file_search", "file_search": {"ranking_options": {"score_threshold": "0.5"}}},
    ]
    created = client.post("/v1/assistants", json={"tools": sent}, headers=tenant.headers)
    assert created.status_code == 200, created.text
    shown = [
        {"type": "function", "function": {"name": "ping", "strict": True}},
        {"type": "file_search", "file_search": {"ranking_options": {"score_threshold": 0.5}}},
    ]
    assert created.json()["tools"] == shown and listed(client, tenant)[0]["tools"] == shown


def test_a_profile_stored_before_the_check_still_reads(client: TestClient, tenant: Tenant) -> None:
    """Rows written while any tools were stored: tools nested 250 deep (a 500 on every read),
    and nested past what the json module reads back."""
    too_deep = [WEATHER, function_tool(nested(125)), {"type": "x", "a": [[[[1]]]]}]
    rows = {
        "deep": '[{"type": "code_interpreter"}, ' + "[" * 100_000 + "]" * 100_000 + "]",
        "deeper": "[" * 100_000 + "]" * 100_000,
        "tools": json.dumps(too_deep),
    }
    with served(client).session() as session:
        for name, text in rows.items():
            ProfileStore(session).add(
                AssistantProfile(
                    id=new_id("asst"),
                    account_id=tenant.account_id,
                    name=name,
                    model="m",
                    tools_json=text,
                    created_at=utcnow(),
                )
            )
    shown = {p["name"]: p for p in listed(client, tenant)}
    assert {name: p["tools"] for name, p in shown.items()} == {
        "deep": [],
        "deeper": [],
        "tools": [WEATHER],
    }
    for profile in shown.values():
        one = client.get(f"/v1/assistants/{profile['id']}", headers=tenant.headers)
        assert one.status_code == 200, one.text
        assert one.json() == profile
    fixed = client.post(
        f"/v1/assistants/{shown['tools']['id']}",
        json={"tools": [WEATHER, {"type": "code_interpreter"}]},
        headers=tenant.headers,
    )
    assert fixed.json()["tools"] == [WEATHER, {"type": "code_interpreter"}]
    deleted = client.delete(f"/v1/assistants/{shown['deep']['id']}", headers=tenant.headers)
    assert deleted.json()["deleted"] is True
    assert len(listed(client, tenant)) == 2
