"""The search's fast path gives the plain path's answers.

What a search keeps between requests (the query's vector, the extractor and its answers, the
documents as answers show them) and how it reads (the template through Core as a detached copy,
plan-hold-rank-settle in one worker call) must change nothing a caller sees: the same ids in the
same order, the same scores, the same filters, the same charge, and no stale document once a
write has landed.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sessionary.app import create_app
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.search import extraction, ranking
from sessionary.search.extraction import Extractor, Extractors
from sessionary.search.ranking import IndexCache
from sessionary.search.store import SearchStore
from sessionary.settings.search import SearchSettings
from tests.conftest import Tenant
from tests.test_search import HOMES, create, post
from tests.test_search import funded as funded

pytestmark = pytest.mark.slow

TERMS = [
    "quiet studio near the park",
    "apartment in Dallas under 2500",
    "loft not in Houston",
    "homes in Austin or Houston with a balcony",
    "anything for 6 months",
]


def answers(client: TestClient, tenant: Tenant, template: str) -> list[dict[str, Any]]:
    out = []
    for term in TERMS:
        body = {"template_id": template, "search_term": term, "limit": 4, "include_raw": True}
        response = post(client, tenant, "search_against_embedding", body)
        assert response.status_code == 200, response.text
        shown = response.json()
        shown["charged"] = response.headers["x-credits-charged"]
        out.append(shown)
    return out


def same(fast: list[dict[str, Any]], plain: list[dict[str, Any]]) -> None:
    for a, b in zip(fast, plain, strict=True):
        assert [r["id"] for r in a["results"]] == [r["id"] for r in b["results"]]
        for x, y in zip(a["results"], b["results"], strict=True):
            assert x["score"] == pytest.approx(y["score"], abs=1e-5)
            assert x["record"] == y["record"]
            assert x["structured_filters"] == y["structured_filters"]
        for key in ("structured_filters", "applied_filters", "semantic_query", "charged"):
            assert a[key] == b[key]


def test_cached_answers_are_the_plain_answers(
    settings: Settings, db: Database, funded: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_app = create_app(settings)
    with TestClient(fast_app) as client:
        template = create(client, funded)["template_id"]
        first = answers(client, funded, template)
        again = answers(client, funded, template)  # cached vectors, extraction, documents
    # The plain path: no query cache, and every process-wide cache emptied.
    monkeypatch.setattr(extraction, "EXTRACTORS", Extractors())
    monkeypatch.setattr("sessionary.search.service.EXTRACTORS", extraction.EXTRACTORS)
    monkeypatch.setattr(ranking, "INDEXES", IndexCache())
    monkeypatch.setattr("sessionary.search.retrieval.INDEXES", ranking.INDEXES)
    plain_app = create_app(settings.model_copy(update={"search": SearchSettings(query_cache=0)}))
    with TestClient(plain_app) as client:
        plain = answers(client, funded, template)
    same(first, plain)
    same(again, plain)


def test_a_write_is_seen_by_the_next_search(
    app: FastAPI, client: TestClient, funded: Tenant
) -> None:
    template = create(client, funded)["template_id"]
    body = {"template_id": template, "search_term": "quiet studio", "include_raw": True}
    before = post(client, funded, "search_against_embedding", body).json()["results"]
    assert any(r["record"]["description"] == "Quiet studio near the park." for r in before)
    changed = {**HOMES[3], "description": "Quiet studio, newly painted."}
    update = {"template_id": template, "records": [changed]}
    assert post(client, funded, "update_embedding", update).status_code == 200
    after = post(client, funded, "search_against_embedding", body).json()["results"]
    shown = {r["id"]: r["record"]["description"] for r in after}
    assert shown["A4"] == "Quiet studio, newly painted."


def test_the_detached_template_is_the_stored_one(
    client: TestClient, funded: Tenant, db: Database
) -> None:
    template_id = create(client, funded)["template_id"]
    with db.session(write=False) as session:
        store = SearchStore(session)
        loaded, copied = store.get_template(template_id), store.read_template(template_id)
        assert loaded is not None and copied is not None
        columns = [c.key for c in loaded.__table__.columns]
        assert {c: getattr(copied, c) for c in columns} == {c: getattr(loaded, c) for c in columns}
        assert store.read_template("tmpl_missing") is None


def test_remembered_extraction_is_a_copy() -> None:
    schema = {
        "fields": {
            "city": {"kind": "categorical", "values": ["Austin", "Dallas", "Houston"]},
            "price": {"kind": "number"},
        }
    }
    plain = Extractor(schema)
    remembering = Extractor(schema, remember=2)
    for term in ("homes in Dallas under 2500", "not Houston", "homes in Dallas under 2500"):
        filters, rest = remembering.extract(term)
        assert (filters, rest) == plain.extract(term)
        filters["city"] = "changed"  # a caller adds to its answer: the next one is untouched
    assert remembering.extract("homes in Dallas under 2500") == plain.extract(
        "homes in Dallas under 2500"
    )
