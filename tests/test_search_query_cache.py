"""A repeated query skips the embedding model and is billed as the first one was; the cache is
bounded, keyed by the exact text, and can be turned off. Scoring off BLAS gives BLAS's scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from sessionary.app import create_app
from sessionary.billing.ledger import Ledger, Owner
from sessionary.billing.models import LedgerEntry
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.search.query_vectors import MAX_CACHED_CHARS, QueryVectors
from sessionary.search.ranking import TemplateIndex
from sessionary.search.service import SearchService
from sessionary.settings.search import SearchSettings
from tests.conftest import Tenant
from tests.test_search import balance, create, post
from tests.test_search import funded as funded

pytestmark = pytest.mark.slow

SEARCH = {"search_term": "quiet studio near the park", "limit": 2}


def count_embeds(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every text list the app's embedding model is asked to embed, from now on."""
    calls: list[list[str]] = []
    model = app.state.providers.embeddings
    embed = model.embed

    async def counted(texts: Any, party: str = "") -> Any:
        calls.append(list(texts))
        return await embed(texts, party)

    monkeypatch.setattr(model, "embed", counted)
    return calls


def test_a_repeated_query_skips_the_model_and_costs_the_same(
    app: FastAPI,
    client: TestClient,
    funded: Tenant,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    template = create(client, funded)["template_id"]
    calls = count_embeds(app, monkeypatch)
    before = balance(db, funded)
    first = post(client, funded, "search_against_embedding", {"template_id": template, **SEARCH})
    second = post(client, funded, "search_against_embedding", {"template_id": template, **SEARCH})
    assert first.status_code == second.status_code == 200
    assert first.json()["results"] == second.json()["results"]
    queries = [c for c in calls if c == [SEARCH["search_term"]]]  # not the extractor's words
    assert len(queries) == 1  # the second search used the cache
    charged = [float(r.headers["x-credits-charged"]) for r in (first, second)]
    assert charged[0] == charged[1] > 0  # billed as if the model ran
    assert balance(db, funded) == before - 2 * round(charged[0] * 1_000_000)
    other = {"template_id": template, **SEARCH, "search_term": "loft with a rooftop pool"}
    assert post(client, funded, "search_against_embedding", other).status_code == 200
    assert ["loft with a rooftop pool"] in calls  # a new text goes to the model


def _spend(db: Database, tenant: Tenant, micro: int) -> None:
    """Another request's charge, in its own transaction."""
    with db.session() as session:
        Ledger(session).charge(Owner.account(tenant.account_id), micro, route="elsewhere")


def _charges(db: Database, tenant: Tenant) -> list[int]:
    with db.session(write=False) as session:
        entries = session.scalars(
            select(LedgerEntry).where(
                LedgerEntry.owner_id == tenant.account_id, LedgerEntry.kind == "charge"
            )
        )
        return [e.amount_micro for e in entries]


def test_a_cached_query_the_balance_cannot_cover_is_refused_before_ranking(
    client: TestClient, funded: Tenant, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached query takes no hold: the balance is checked before ranking and the charge is
    conditional after it (`Meter.ensure_covered`, `Meter.charge_in`). Short by one micro-credit: 402, nothing ranked, nothing charged."""
    template = create(client, funded)["template_id"]
    body = {"template_id": template, **SEARCH}
    first = post(client, funded, "search_against_embedding", body)
    price = round(float(first.headers["x-credits-charged"]) * 1_000_000)
    _spend(db, funded, balance(db, funded) - price + 1)
    ranked: list[object] = []
    monkeypatch.setattr(
        SearchService, "_retrieve", lambda *a, **k: ranked.append(a) or pytest.fail("ranked")
    )
    before, charges = balance(db, funded), _charges(db, funded)
    refused = post(client, funded, "search_against_embedding", body)
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["type"] == "insufficient_credits"
    assert "results" not in refused.json()
    assert ranked == []
    assert balance(db, funded) == before == price - 1
    assert _charges(db, funded) == charges


def test_a_cached_query_whose_credits_are_spent_while_it_ranks_shows_nothing(
    client: TestClient, funded: Tenant, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The charge after ranking is conditional: when a concurrent request spent the credits
    meanwhile, the search is refused with a 402 and its hits are never shown or paid for."""
    template = create(client, funded)["template_id"]
    body = {"template_id": template, **SEARCH}
    first = post(client, funded, "search_against_embedding", body)
    price = round(float(first.headers["x-credits-charged"]) * 1_000_000)
    _spend(db, funded, balance(db, funded) - price)  # exactly one more search's worth
    rank = SearchService._retrieve

    def rank_while_another_spends(self: SearchService, *args: Any) -> Any:
        found = rank(self, *args)
        _spend(db, funded, 1)  # between the check and the charge
        return found

    monkeypatch.setattr(SearchService, "_retrieve", rank_while_another_spends)
    charges = _charges(db, funded)
    refused = post(client, funded, "search_against_embedding", body)
    assert refused.status_code == 402, refused.text
    assert "results" not in refused.json()
    assert balance(db, funded) == price - 1  # only the other request's micro-credit went
    assert _charges(db, funded) == [*charges, -1]
    monkeypatch.setattr(SearchService, "_retrieve", rank)
    with db.session() as session:
        Ledger(session).grant(Owner.account(funded.account_id), 1)
    paid = post(client, funded, "search_against_embedding", body)
    assert paid.status_code == 200 and paid.json()["results"] == first.json()["results"]
    assert balance(db, funded) == 0


def test_the_cache_can_be_turned_off(
    settings: Settings,
    db: Database,
    funded: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(settings.model_copy(update={"search": SearchSettings(query_cache=0)}))
    with TestClient(app) as client:
        template = create(client, funded)["template_id"]
        calls = count_embeds(app, monkeypatch)
        for _ in range(2):
            body = {"template_id": template, **SEARCH}
            assert post(client, funded, "search_against_embedding", body).status_code == 200
    assert calls.count([SEARCH["search_term"]]) == 2


def test_query_vectors_are_bounded_and_read_only() -> None:
    cache = QueryVectors(2)
    for text in ("a", "b"):
        cache.put("m", text, np.ones(3, dtype=np.float32), 3)
    assert cache.get("m", "a") is not None  # "a" is now the most recent
    cache.put("m", "c", np.zeros(3, dtype=np.float32), 3)
    assert cache.get("m", "b") is None and cache.get("m", "a") is not None and len(cache) == 2
    assert cache.get("other-model", "a") is None and cache.get("m", "A") is None
    vector, tokens = cache.get("m", "a") or (None, 0)
    assert tokens == 3 and vector is not None and not vector.flags.writeable
    cache.put("m", "x" * (MAX_CACHED_CHARS + 1), np.ones(3, dtype=np.float32), 9)
    assert cache.get("m", "x" * (MAX_CACHED_CHARS + 1)) is None
    off = QueryVectors(0)
    off.put("m", "a", np.ones(3, dtype=np.float32), 3)
    assert off.get("m", "a") is None


@pytest.mark.parametrize("kept", [0, 3, 50, 99, 200])
def test_dense_scores_match_blas_whatever_the_filter_keeps(kept: int) -> None:
    rng = np.random.default_rng(kept)
    matrix = rng.standard_normal((200, 16)).astype(np.float32)
    query = rng.standard_normal(16).astype(np.float32)
    index = TemplateIndex(1, [f"d{i:03}" for i in range(200)], matrix, [""] * 200)
    rows = np.sort(rng.choice(200, size=kept, replace=False)) if kept < 200 else None
    got = index.dense(query, rows, 10)
    scores = matrix @ query
    pool = np.arange(200) if rows is None else rows
    best = sorted(pool, key=lambda i: -scores[i])[: min(10, len(pool))]
    assert [doc for doc, _ in got] == [f"d{i:03}" for i in best]
    assert np.allclose([s for _, s in got], scores[best], atol=1e-5)
