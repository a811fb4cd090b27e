"""The model asked for is the model served, named and priced; any other name is a 400."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from sessionary.app import create_app
from sessionary.billing.ledger import Ledger, Owner
from sessionary.billing.pricing import Pricing
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.providers.errors import ProviderUnavailable
from sessionary.providers.settings import ProviderSettings
from tests.conftest import Tenant
from tests.test_credits_http import grant


def balance(db: Database, tenant: Tenant) -> int:
    with db.session(write=False) as session:
        return Ledger(session).balance(Owner.account(tenant.account_id))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/responses", {"model": "gpt-5-nano", "input": "Hi"}),
        ("/v1/responses", {"model": "llama3", "input": "Hi", "stream": True}),
        ("/v1/assistant/set_system_prompt", {"system_prompt": "Be brief.", "model": "gpt-4o"}),
        ("/v1/assistants", {"name": "a", "model": "made-up-model"}),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "Hi"}),
    ],
)
def test_an_unknown_model_is_a_400_that_names_the_served_ones_and_charges_nothing(
    client: TestClient, db: Database, tenant: Tenant, path: str, body: dict[str, object]
) -> None:
    grant(db, tenant, 10_000_000)
    answer = client.post(path, json=body, headers=tenant.headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert balance(db, tenant) == 10_000_000


def test_an_unknown_model_on_a_session_completion_is_a_400(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 10_000_000)
    session = client.post("/v1/assistant/session", json={}, headers=tenant.headers).json()
    body = {"session_id": session["session_id"], "input": "Hi", "model": "gpt-4o"}
    answer = client.post("/v1/assistant/completion", json=body, headers=tenant.headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "model_not_found"
    assert "smollm2" in answer.json()["error"]["message"]


def test_an_alias_serves_names_and_bills_its_target(
    settings: Settings, db: Database, tenant: Tenant
) -> None:
    llm = ProviderSettings(provider="local", aliases={"gpt-4o-mini": "smollm2-135m-instruct"})
    aliased = settings.model_copy(update={"llm": llm})
    grant(db, tenant, 10_000_000)
    with TestClient(create_app(aliased), raise_server_exceptions=False) as client:
        served = client.app.state.providers.chat().name  # type: ignore[attr-defined]
        assert served == "smollm2-135m-instruct"
        listed = {m["id"] for m in client.get("/v1/models", headers=tenant.headers).json()["data"]}
        assert {"gpt-4o-mini", served} <= listed
        assert client.get("/v1/models/gpt-4o-mini", headers=tenant.headers).status_code == 200
        body = {"model": "GPT-4o-mini", "input": "Say hi.", "max_output_tokens": 8}
        answer = client.post("/v1/responses", json=body, headers=tenant.headers)
        assert answer.status_code == 200, answer.text
        payload = answer.json()
    assert payload["model"] == served
    usage = payload["usage"]
    expected = Pricing().assistant_turn(served, usage["input_tokens"], usage["output_tokens"])
    assert 10_000_000 - balance(db, tenant) == expected
    with db.session(write=False) as session:
        rows = Ledger(session).store.entries("account", tenant.account_id)
        assert {r.model for r in rows if r.kind == "charge"} == {served}


def test_an_alias_to_a_model_that_is_not_configured_fails_at_start(settings: Settings) -> None:
    llm = ProviderSettings(provider="local", aliases={"gpt-4o-mini": "gpt-4o"})
    with pytest.raises(ProviderUnavailable, match="gpt-4o"):
        create_app(settings.model_copy(update={"llm": llm}))
