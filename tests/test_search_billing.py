"""How an uncached search pays for its query's embedding.

A model in this process (the bundled one) costs the server only CPU: nothing is held while it
runs; the balance is checked before it runs (402, and the model never runs) and the charge after
ranking is conditional (402 when concurrent spending took the credits: the hits are never shown).
A model elsewhere (a paid API) is embedded under a hold, settled after ranking and released when
the model fails."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from sessionary.app import create_app
from sessionary.billing.ledger import Ledger, Owner
from sessionary.billing.models import CreditReservation, LedgerEntry
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.errors import UpstreamError
from sessionary.settings.search import SearchSettings
from tests.conftest import Tenant
from tests.test_search import balance, create, post
from tests.test_search import funded as funded
from tests.test_search_query_cache import count_embeds

pytestmark = pytest.mark.slow

SEARCH = {"search_term": "quiet studio near the park", "limit": 2}


@pytest.fixture
def uncached(settings: Settings, db: Database) -> Iterator[tuple[FastAPI, TestClient]]:
    """An app whose every search embeds its query (the query cache off)."""
    app = create_app(settings.model_copy(update={"search": SearchSettings(query_cache=0)}))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client


def _open_holds(db: Database, tenant: Tenant) -> int:
    with db.session(write=False) as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    CreditReservation.owner_id == tenant.account_id,
                    CreditReservation.status == "open",
                )
            )
            or 0
        )


def _entries(db: Database, tenant: Tenant) -> list[tuple[str, int]]:
    with db.session(write=False) as session:
        rows = session.execute(
            select(LedgerEntry.kind, LedgerEntry.amount_micro)
            .where(LedgerEntry.owner_id == tenant.account_id)
            .order_by(LedgerEntry.id)
        )
        return [(kind, amount) for kind, amount in rows]


def _spend(db: Database, tenant: Tenant, micro: int) -> None:
    """Another request's charge, in its own transaction."""
    with db.session() as session:
        Ledger(session).charge(Owner.account(tenant.account_id), micro, route="elsewhere")


def _watch_the_model(app: FastAPI, monkeypatch: pytest.MonkeyPatch, during: Any) -> list[list[str]]:
    """Calls `during()` each time the model embeds the search's query; returns those calls."""
    calls: list[list[str]] = []
    model = app.state.providers.embeddings
    embed = model.embed

    async def watched(texts: Any, party: str = "") -> Any:
        if list(texts) == [SEARCH["search_term"]]:
            calls.append(list(texts))
            during()
        return await embed(texts, party)

    monkeypatch.setattr(model, "embed", watched)
    return calls


def _searched_once(client: TestClient, tenant: Tenant) -> tuple[str, int]:
    """A new template of the tenant's, and the price of one search of it (searched once)."""
    template = create(client, tenant)["template_id"]
    first = post(client, tenant, "search_against_embedding", {"template_id": template, **SEARCH})
    assert first.status_code == 200, first.text
    return template, round(float(first.headers["x-credits-charged"]) * 1_000_000)


def test_an_in_process_model_embeds_with_nothing_held(
    uncached: tuple[FastAPI, TestClient],
    db: Database,
    funded: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, client = uncached
    template, price = _searched_once(client, funded)
    held: list[int] = []
    calls = _watch_the_model(app, monkeypatch, lambda: held.append(_open_holds(db, funded)))
    before, entries = balance(db, funded), _entries(db, funded)
    found = post(client, funded, "search_against_embedding", {"template_id": template, **SEARCH})
    assert found.status_code == 200 and found.json()["results"]
    assert len(calls) == 1 and held == [0]
    assert balance(db, funded) == before - price
    assert _entries(db, funded) == [*entries, ("charge", -price)]  # one entry, no hold


def test_a_query_the_balance_cannot_cover_is_refused_before_the_model_runs(
    uncached: tuple[FastAPI, TestClient],
    db: Database,
    funded: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, client = uncached
    template, price = _searched_once(client, funded)
    _spend(db, funded, balance(db, funded) - price + 1)
    calls = _watch_the_model(app, monkeypatch, lambda: None)
    entries = _entries(db, funded)
    refused = post(client, funded, "search_against_embedding", {"template_id": template, **SEARCH})
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["type"] == "insufficient_credits"
    assert calls == []  # the model never ran
    assert balance(db, funded) == price - 1 and _entries(db, funded) == entries


def test_credits_spent_while_the_model_runs_leave_the_hits_unshown(
    uncached: tuple[FastAPI, TestClient],
    db: Database,
    funded: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked before, charged after: between the two, another request spends the credits.
    The search is refused with a 402; only the other request's charge is in the ledger."""
    app, client = uncached
    template, price = _searched_once(client, funded)
    _spend(db, funded, balance(db, funded) - price)  # exactly one more search's worth
    _watch_the_model(app, monkeypatch, lambda: _spend(db, funded, 1))
    entries = _entries(db, funded)
    refused = post(client, funded, "search_against_embedding", {"template_id": template, **SEARCH})
    assert refused.status_code == 402, refused.text
    assert "results" not in refused.json()
    assert balance(db, funded) == price - 1
    assert _entries(db, funded) == [*entries, ("charge", -1)]


def test_a_model_elsewhere_embeds_under_a_hold(
    uncached: tuple[FastAPI, TestClient],
    db: Database,
    funded: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same model declared as running elsewhere (as a paid API's is): a hold is open while
    it embeds, settled at the same price after; released when the model fails."""
    app, client = uncached
    template, price = _searched_once(client, funded)
    monkeypatch.setattr(app.state.providers.embeddings, "in_process", False)
    held: list[int] = []
    _watch_the_model(app, monkeypatch, lambda: held.append(_open_holds(db, funded)))
    before = balance(db, funded)
    found = post(client, funded, "search_against_embedding", {"template_id": template, **SEARCH})
    assert found.status_code == 200 and found.json()["results"]
    assert held == [1] and _open_holds(db, funded) == 0
    assert balance(db, funded) == before - price

    def fail() -> None:
        held.append(_open_holds(db, funded))
        raise UpstreamError("the embedding API is down")

    _watch_the_model(app, monkeypatch, fail)
    entries = _entries(db, funded)
    failed = post(client, funded, "search_against_embedding", {"template_id": template, **SEARCH})
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "upstream_error"
    assert held[-1] == 1 and _open_holds(db, funded) == 0
    assert balance(db, funded) == before - price
    assert [kind for kind, _ in _entries(db, funded)[len(entries) :]] == ["reservation", "release"]


def test_a_caller_with_no_credits_makes_no_model_run(
    app: FastAPI,
    client: TestClient,
    db: Database,
    funded: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Filter extraction embeds words its template has not met: a caller whose balance cannot
    pay for the smallest query is refused before it (402), so no model runs for a key with no
    credits, whatever its terms; an unknown template is still a 404."""
    template = create(client, funded)["template_id"]
    _spend(db, funded, balance(db, funded))
    calls = count_embeds(app, monkeypatch)
    entries = _entries(db, funded)
    for words in ("zorblax quintuple marmalade", "vexillology near fjords", SEARCH["search_term"]):
        body = {"template_id": template, "search_term": words, "limit": 2}
        refused = post(client, funded, "search_against_embedding", body)
        assert refused.status_code == 402, refused.text
        assert refused.json()["error"]["type"] == "insufficient_credits"
    unknown = {"template_id": "tmpl_unknown", **SEARCH}
    assert post(client, funded, "search_against_embedding", unknown).status_code == 404
    assert calls == []
    assert balance(db, funded) == 0 and _entries(db, funded) == entries
