"""Field privacy, one rule everywhere: a non-retrievable value never leaves the server.

The seed's own example (`internal_notes` with `retrievable: false`) is a named case; a property
test then draws records and field options at random, on SQLite and on PostgreSQL, and asks every
route that answers about a template: no byte of any answer may hold a non-retrievable value.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import Tenant, make_tenant
from tests.test_auth import assert_error
from tests.test_credits_http import grant
from tests.test_search import create, funded, post  # noqa: F401  (funded is a fixture)

pytestmark = pytest.mark.slow

SEED_NOTES = {"value": "private note", "searchable": False, "retrievable": False}


def _visible(response: httpx.Response, term: str | None = None) -> str:
    """The answer as text, less the caller's own query echoed back as `semantic_query`."""
    body = response.json()
    echoed = body.get("semantic_query")
    if term is not None and isinstance(echoed, str) and set(echoed.split()) <= set(term.split()):
        body.pop("semantic_query")  # what is left of the query: the caller's own words
    return json.dumps(body, ensure_ascii=False) + json.dumps(dict(response.headers))


def test_seed_internal_notes_never_leave(client: TestClient, funded: Tenant) -> None:  # noqa: F811
    records = [
        {"id": "b1", "title": "Mountain bike full suspension", "internal_notes": SEED_NOTES},
        {"id": "b2", "title": "City bike with basket", "internal_notes": "another note"},
        {"id": "b3", "title": "Trek road bike", "price": 900},
    ]
    created = post(client, funded, "create_embedding", {"name": "bikes", "records": records})
    assert created.status_code == 200, created.text
    template = created.json()["template_id"]
    assert "private note" not in _visible(created)
    assert "internal_notes" not in {f["key"] for f in created.json()["structured_fields"]}
    listing = client.get("/v1/chat/embedding_templates", headers=funded.headers)
    assert "private note" not in _visible(listing)
    guess = post(
        client,
        funded,
        "search_against_embedding",
        {"template_id": template, "search_term": "private note"},
    )
    assert guess.status_code == 200, guess.text
    answer = guess.json()
    assert answer["structured_filters"] == {}  # never extracted from a query
    assert answer["semantic_query"] == "private note"  # the words stay words
    assert "private note" not in _visible(guess, "private note")
    for result in answer["results"]:
        assert "internal_notes" not in result["record"]
        assert "internal_notes" not in result["structured_filters"]
    # Not filterable unless field_options says so, and the refusal does not echo the guess.
    refused = post(
        client,
        funded,
        "search_against_embedding",
        {
            "template_id": template,
            "search_term": "bike",
            "structured_filters": {"internal_notes": "private note"},
        },
    )
    assert_error(refused, 400)
    assert "private note" not in refused.text
    similar = post(
        client,
        funded,
        "similar_to_embedding",
        {"template_id": template, "search_json": records[0]},
    )
    assert similar.status_code == 200 and "private note" not in _visible(similar)


def test_explicitly_filterable_private_field_filters_without_echo(
    client: TestClient,
    funded: Tenant,  # noqa: F811
) -> None:
    records = [
        {"id": f"s{i}", "title": f"Seller {i} bike", "tier": ["gold", "basic"][i % 2]}
        for i in range(6)
    ]
    options = {"tier": {"retrievable": False, "filterable": True}}
    created = create(client, funded, records, field_options=options)
    tier = next(f for f in created["structured_fields"] if f["key"] == "tier")
    assert tier["private"] is True and tier["sampleValues"] == [] and tier["stats"] == {"count": 6}
    assert "gold" not in json.dumps(created)
    body = {
        "template_id": created["template_id"],
        "search_term": "gold bike",
        "search_params": {"tier": "gold"},
    }
    found = post(client, funded, "search_against_embedding", body)
    answer = found.json()
    assert sorted(r["id"] for r in answer["results"]) == ["s0", "s2", "s4"]  # the filter applies
    assert answer["structured_filters"] == {}
    assert answer["applied_filters"] == [
        {"field": "tier", "source": "search_params", "condition": "(hidden)", "hidden": True}
    ]
    assert "gold" not in _visible(found, "gold bike").replace('"gold bike"', "")
    # A query naming the value does not extract it: only explicit filters may use the field.
    guessed = post(
        client,
        funded,
        "search_against_embedding",
        {"template_id": created["template_id"], "search_term": "gold"},
    ).json()
    assert guessed["structured_filters"] == {} and len(guessed["results"]) == 6
    empty = post(
        client,
        funded,
        "search_against_embedding",
        {**body, "search_params": {"tier": "platinum"}},
    ).json()
    assert empty["results"] == [] and "tier (a private field)" in empty["notice"]
    assert "platinum" not in empty["notice"]


# The property: random records and options, every answering route, no private byte.

FIELDS = ["alpha", "beta", "gamma", "delta"]
TOKEN = st.text(alphabet="bcdfghjklmnpqrstvwxz", min_size=12, max_size=12)
FLAG = st.sampled_from([None, True, False])
WRAPPERS = st.sampled_from(
    [
        None,
        {"retrievable": False},
        {"retrievable": False, "searchable": True},
        {"retrievable": False, "filterable": True},
        {"retrievable": True, "searchable": False},
    ]
)


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    """Records whose every value is unique (or drawn from a per-field pool for categories), so
    a value found in an answer can only have come from where it was stored."""
    kinds = {f: draw(st.sampled_from(["unique", "number", "category"])) for f in FIELDS}
    options: dict[str, dict[str, bool]] = {}
    for name in FIELDS:
        flags = {k: draw(FLAG) for k in ("searchable", "filterable", "retrievable")}
        chosen = {k: v for k, v in flags.items() if v is not None}
        if chosen:
            options[name] = chosen
    count = draw(st.integers(min_value=4, max_value=8))
    strings = iter(draw(st.lists(TOKEN, min_size=60, max_size=60, unique=True)))
    numbers = iter(
        draw(st.lists(st.integers(100_000_000, 999_999_999), min_size=40, max_size=40, unique=True))
    )
    pools = {f: [next(strings), next(strings)] for f in FIELDS}
    records: list[dict[str, Any]] = []
    private: set[str] = set()
    private_fields: set[str] = set()
    for index in range(count):
        record: dict[str, Any] = {"id": f"r{index}", "title": f"item {index}"}
        for name in FIELDS:
            kind = kinds[name]
            value: Any = (
                pools[name][index % 2]
                if kind == "category"
                else next(numbers)
                if kind == "number"
                else next(strings)
            )
            wrapper = None if kind == "category" else draw(WRAPPERS)
            retrievable = (wrapper or {}).get(
                "retrievable", options.get(name, {}).get("retrievable", True)
            )
            if not retrievable:
                private.add(str(value))
                private_fields.add(name)
            record[name] = {"value": value, **wrapper} if wrapper else value
        records.append(record)
    for name in FIELDS:
        if kinds[name] == "category" and options.get(name, {}).get("retrievable") is False:
            private.update(pools[name])
            private_fields.add(name)
    return {
        "records": records,
        "options": options,
        "private": sorted(private),
        "private_fields": sorted(private_fields),
    }


def _no_leak(response: httpx.Response, private: list[str], term: str | None = None) -> None:
    assert response.status_code < 500, response.text
    text = _visible(response, term)
    leaked = [value for value in private if value in text]
    assert not leaked, (leaked, text[:2000])


@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a failure prints its example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds())
def test_no_answer_holds_a_private_value(
    client: TestClient, db: Any, world: dict[str, Any]
) -> None:
    # A tenant per example: the listing then shows this example's template only (a value
    # drawn public in one example may be drawn private in the next).
    tenant = make_tenant(db, f"privacy-{uuid.uuid4().hex[:8]}")
    grant(db, tenant, 100_000_000)
    records, options, private = world["records"], world["options"], world["private"]
    half = len(records) // 2
    created = post(
        client,
        tenant,
        "create_embedding",
        {"records": records[:half], "field_options": options},
    )
    _no_leak(created, private)
    template = created.json()["template_id"]
    updated = post(
        client, tenant, "update_embedding", {"template_id": template, "records": records[half:]}
    )
    _no_leak(updated, private)
    _no_leak(client.get("/v1/chat/embedding_templates", headers=tenant.headers), private)
    _no_leak(
        client.get(f"/v1/chat/embedding_status?template_id={template}", headers=tenant.headers),
        private,
    )
    terms = private[:3] + ["item", " ".join(private[:2]) or "item 1"]
    for term in terms:
        for route in ("search_against_embedding", "similar_to_embedding"):
            body = {"template_id": template, "search_term": term, "limit": 100, "rerank": True}
            answer = post(client, tenant, route, body)
            _no_leak(answer, private, term)
            if route == "search_against_embedding" and answer.status_code == 200:
                extracted = {
                    f["field"] for f in answer.json()["applied_filters"] if f["source"] == "query"
                }
                assert not extracted & set(world["private_fields"]), extracted
    for name in world["private_fields"]:  # (on a public field the echo is the caller's input)
        for value in private[:1]:
            for param, condition in (
                ("search_params", value),
                ("structured_filters", {"ne": value}),
                ("search_params", {"between": value}),
            ):
                body = {"template_id": template, "search_term": "item", param: {name: condition}}
                _no_leak(post(client, tenant, "search_against_embedding", body), private)
    for record in records[:2]:
        body = {"template_id": template, "search_json": record, "limit": 100}
        _no_leak(post(client, tenant, "similar_to_embedding", body), private)


def test_migration_seals_templates_written_before(settings: Any, backend: str) -> None:
    """0010: a template stored by the earlier code (private values in its schema and in
    its documents' echoed filters) is sealed on upgrade."""
    import numpy as np
    from sqlalchemy import select

    from sessionary.kit.db import Database
    from sessionary.kit.migrate import upgrade
    from sessionary.kit.models import utcnow
    from sessionary.search.models import EmbeddingTemplate, SearchDocument

    db = Database(settings)
    try:
        upgrade(db, "0009")
        schema = {
            "fields": {
                "title": {"kind": "text", "count": 2, "sample": ["a", "b"]},
                "tier": {"kind": "categorical", "count": 2, "values": ["gold", "lead"]},
                "notes": {"kind": "categorical", "count": 2, "values": ["zqx", "zqy"]},
                "owner.pin": {"kind": "number", "count": 2, "min": 1234, "max": 9876},
            },
            "ranges": {},
        }
        options = {
            "tier": {"retrievable": False, "filterable": True},
            "owner": {"retrievable": False},
        }
        with db.session() as session:
            now = utcnow()
            session.add(
                EmbeddingTemplate(
                    id="tmpl_old", account_id="acct_x", external_user_id=None, name="old",
                    field_options=options, schema=schema, embedding_model="m", dimension=3,
                    template_hash="h", record_count=2, version=1, created_at=now, updated_at=now,
                )
            )  # fmt: skip
            session.flush()
            for i, (tier, notes, pin) in enumerate([("gold", "zqx", 1234), ("lead", "zqy", 9876)]):
                filters = {"tier": tier, "notes": notes, "owner.pin": pin}
                session.add(
                    SearchDocument(
                        id=f"doc_{i}", template_id="tmpl_old", source_id=str(i),
                        record={"title": "a"}, filters=filters, folded=filters, text="a",
                        content_hash="c", embedding=np.zeros(3, dtype=np.float32), created_at=now,
                    )
                )  # fmt: skip
        upgrade(db)
        with db.session(write=False) as session:
            template = session.get(EmbeddingTemplate, "tmpl_old")
            assert template is not None
            fields = template.schema["fields"]
            for path in ("tier", "notes", "owner.pin"):
                assert fields[path]["private"] is True
                assert not {"values", "min", "max"} & set(fields[path]), path
            assert fields["tier"]["filterable"] is True and fields["notes"]["filterable"] is False
            assert "private" not in fields["title"]
            for document in session.scalars(select(SearchDocument)):
                assert document.filters == {}
                assert set(document.folded) == {"tier"}  # kept for its explicit filterable
    finally:
        db.dispose()
