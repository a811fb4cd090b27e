"""Embedding templates on both engines: records, options, upserts, deletes, validation, billing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from sessionary.billing.ledger import Ledger, Owner
from sessionary.kit.db import Database
from tests.conftest import Tenant, make_tenant
from tests.test_auth import assert_error
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

HOMES = [
    {
        "id": "A1",
        "city": "Austin",
        "price": 1800,
        "duration": 12,
        "description": "Modern 1BR close to downtown.",
    },
    {
        "id": "A2",
        "city": "Dallas",
        "price": 2200,
        "duration": 6,
        "description": "Spacious 2BR with a balcony.",
    },
    {
        "id": "A3",
        "city": "Dallas",
        "price": 2600,
        "duration": 12,
        "description": "Loft with a rooftop pool.",
    },
    {
        "id": "A4",
        "city": "Houston",
        "price": 1500,
        "duration": 3,
        "description": "Quiet studio near the park.",
    },
]


@pytest.fixture
def funded(db: Database, tenant: Tenant) -> Tenant:
    grant(db, tenant, 100_000_000)
    return tenant


def post(client: TestClient, tenant: Tenant, route: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(f"/v1/chat/{route}", json=body, headers=tenant.headers)


def create(
    client: TestClient, tenant: Tenant, records: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    response = post(
        client, tenant, "create_embedding", {"name": "homes", "records": records or HOMES, **extra}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def balance(db: Database, tenant: Tenant) -> int:
    with db.session(write=False) as session:
        return Ledger(session).balance(Owner.account(tenant.account_id))


def test_create_answers_as_the_seed_shows(client: TestClient, funded: Tenant, db: Database) -> None:
    response = post(
        client, funded, "create_embedding", {"embedding_name": "homes", "records": HOMES}
    )
    body = response.json()
    assert body["template_id"].startswith("tmpl_")
    assert len(body["template_hash"]) == 64
    assert body["hash_link"] == f"embedding_template:{body['template_hash']}"
    assert body["record_count"] == 4
    assert {f["key"]: f["type"] for f in body["structured_fields"]} == {
        "city": "string",
        "duration": "number",
        "price": "number",
    }
    assert body["unstructured_fields"] == ["description"]
    city = next(f for f in body["structured_fields"] if f["key"] == "city")
    assert city["sampleValues"] == ["Austin", "Dallas", "Houston"]
    charged = float(response.headers["x-credits-charged"])
    assert 0 < charged < 0.01  # $1 per million tokens: a few dozen tokens
    assert balance(db, funded) == 100_000_000 - round(charged * 1_000_000)


def test_search_with_filters_params_and_overrides(client: TestClient, funded: Tenant) -> None:
    template = create(client, funded)["template_id"]
    found = post(
        client,
        funded,
        "search_against_embedding",
        {"template_id": template, "search_term": "apartment in Dallas under 2500"},
    ).json()
    assert found["structured_filters"] == {"city": "Dallas", "price": {"max": 2500}}
    assert [r["id"] for r in found["results"]] == ["A2"]
    assert found["results"][0]["record"]["description"] == "Spacious 2BR with a balcony."
    # search_params apply before the vector search; structured_filters override on the same key.
    body = {
        "template_id": template,
        "search_term": "a place in dallas",
        "search_params": {"price": {"min": 2500}},
    }
    assert [
        r["id"] for r in post(client, funded, "search_against_embeddings", body).json()["results"]
    ] == ["A3"]
    body["structured_filters"] = {"city": "austin"}
    answer = post(client, funded, "search_against_embedding", body).json()
    assert answer["structured_filters"] == {"city": "Austin", "price": {"min": 2500}}
    assert answer["results"] == []
    raw = post(
        client,
        funded,
        "search_against_embedding",
        {"template_id": template, "search_term": "pool", "include_raw": False},
    ).json()
    assert all("record" not in r for r in raw["results"])
    assert raw["results"][0]["id"] == "A3"


def test_invalid_filters_name_the_field(client: TestClient, funded: Tenant, db: Database) -> None:
    template = create(client, funded)["template_id"]
    before = balance(db, funded)
    cases = [
        ({"search_params": {"colour": "red"}}, "search_params.colour"),
        ({"search_params": {"price": "cheap"}}, "search_params.price"),
        ({"structured_filters": {"price": {"between": 1}}}, "structured_filters.price"),
        ({"filters": {"city": {"min": 3}}}, "structured_filters.city"),
        ({"search_params": [1, 2]}, "search_params"),
    ]
    for extra, param in cases:
        error = assert_error(
            post(
                client,
                funded,
                "search_against_embedding",
                {"template_id": template, "search_term": "x", **extra},
            ),
            400,
        )
        assert error["param"] == param
    assert_error(post(client, funded, "search_against_embedding", {"template_id": template}), 400)
    assert_error(post(client, funded, "search_against_embedding", {"search_term": "x"}), 400)
    for blank in (" \t\n", "\u200b\u200b\ufeff", "\u200d \u2060"):  # nothing to search
        error = assert_error(
            post(
                client,
                funded,
                "search_against_embedding",
                {"template_id": template, "search_term": blank},
            ),
            400,
        )
        assert error["param"] == "search_term"
    for wrong in (7, ["tmpl"], {"id": "tmpl"}):
        error = assert_error(
            post(
                client,
                funded,
                "search_against_embedding",
                {"template_id": wrong, "search_term": "x"},
            ),
            400,
        )
        assert error["param"] == "template_id" and "must be a string" in error["message"]
    assert_error(
        post(
            client,
            funded,
            "search_against_embedding",
            {"template_id": template, "search_term": "x", "limit": 101},
        ),
        400,
    )
    assert balance(db, funded) == before  # nothing charged for a refused search


def test_field_options_wrappers_and_retrievable(client: TestClient, funded: Tenant) -> None:
    records = [
        {
            "_id": "n1",
            "title": "Blue bike",
            "owner": {"email": "a@example.com", "city": "Oslo"},
            "internal_notes": {
                "value": "private note about the seller",
                "searchable": False,
                "retrievable": False,
            },
        },
        {
            "_id": "n2",
            "title": "Red bike",
            "owner": {"email": "b@example.com", "city": "Bergen"},
            "internal_notes": {
                "value": "another private note",
                "searchable": False,
                "retrievable": False,
            },
        },
        {
            "_id": "n3",
            "title": "Green scooter",
            "owner": {"email": "c@example.com", "city": "Bergen"},
        },
    ]
    options = [
        {"path": "owner.email", "retrievable": False, "searchable": False},
        {"key": "title", "filterable": True},
    ]
    created = create(client, funded, records, fieldOptions=options)
    kinds = {f["key"]: f["kind"] for f in created["structured_fields"]}
    assert kinds["owner.city"] == "categorical"  # a value that recurs (Bergen twice)
    assert kinds["title"] == "categorical"  # filterable: true overrides detection
    assert "internal_notes" not in kinds and "owner.email" not in kinds  # private, not filterable
    assert "private note" not in str(created) and "example.com" not in str(created)
    found = post(
        client,
        funded,
        "search_against_embedding",
        {"template_id": created["template_id"], "search_term": "bike in Bergen"},
    ).json()
    assert found["structured_filters"]["owner.city"] == "Bergen"
    record = found["results"][0]["record"]
    assert found["results"][0]["id"] == "n2"
    assert record == {
        "_id": "n2",
        "title": "Red bike",
        "owner": {"city": "Bergen"},
    }  # nothing non-retrievable


def test_generated_ids_and_duplicate_ids(client: TestClient, funded: Tenant) -> None:
    created = create(client, funded, [{"text": "no id here at all"}, {"text": "nor here"}])
    found = post(
        client,
        funded,
        "similar_to_embedding",
        {"template_id": created["template_id"], "search_term": "id"},
    ).json()
    assert all(m["id"].startswith("rec_") for m in found["matches"])
    assert_error(
        post(client, funded, "create_embedding", {"records": [{"id": 1}, {"id": "1"}]}), 400
    )


def test_update_upserts_merges_and_rehashes(client: TestClient, funded: Tenant) -> None:
    created = create(client, funded, field_options={"description": {"searchable": True}})
    template = created["template_id"]
    changed = dict(HOMES[0], description="Modern 1BR with a garden, close to downtown.")
    new = {
        "id": "A5",
        "city": "El Paso",
        "price": 900,
        "duration": 1,
        "description": "Tiny house.",
        "pets": True,
    }
    updated = post(
        client, funded, "update_embedding", {"template_id": template, "records": [changed, new]}
    ).json()
    assert updated["record_count"] == 5  # A1 replaced, A5 added
    assert updated["template_hash"] != created["template_hash"]
    keys = {f["key"]: f["type"] for f in updated["structured_fields"]}
    assert keys["pets"] == "boolean"
    city = next(f for f in updated["structured_fields"] if f["key"] == "city")
    assert "El Paso" in city["sampleValues"] or city["stats"]["distinct"] == 4
    same = post(
        client, funded, "update_embedding", {"template_id": template, "records": [new]}
    ).json()
    assert same["template_hash"] == updated["template_hash"]  # no content change, same hash
    found = post(
        client,
        funded,
        "search_against_embedding",
        {"template_id": template, "search_term": "garden"},
    ).json()
    assert found["results"][0]["id"] == "A1"
    assert found["results"][0]["record"]["description"].startswith("Modern 1BR with a garden")
    assert_error(post(client, funded, "update_embedding", {"template_id": template}), 400)
    assert_error(post(client, funded, "update_embedding", {"records": HOMES}), 400)
    assert_error(
        post(client, funded, "update_embedding", {"template_id": "tmpl_missing", "records": HOMES}),
        404,
    )


def test_deletes_are_free_and_take_every_alias(
    client: TestClient, funded: Tenant, db: Database
) -> None:
    template = create(client, funded)["template_id"]
    before = balance(db, funded)
    for alias, value in [
        ("source_id", "A1"),
        ("sourceId", "A2"),
        ("ids", ["A3"]),
        ("record_ids", ["A4", "nope"]),
    ]:
        answer = post(client, funded, "delete_embedding", {"template_id": template, alias: value})
        assert answer.status_code == 200, answer.text
        assert answer.json()["deleted_count"] == 1
    assert answer.json() == {
        "template_id": template,
        "deleted_count": 1,
        "record_count": 0,
        "status": "empty",
    }
    assert balance(db, funded) == before  # deletes are free
    assert_error(post(client, funded, "delete_embedding", {"template_id": template}), 400)
    again = create(client, funded)["template_id"]
    after_create = balance(db, funded)
    emptied = post(client, funded, "delete_embeddings", {"template_id": again}).json()
    assert emptied == {
        "template_id": again,
        "deleted_count": 4,
        "record_count": 0,
        "status": "empty",
    }
    status = client.get(
        f"/v1/chat/embedding_status?template_id={again}", headers=funded.headers
    ).json()
    assert status == {
        "template_id": again,
        "has_embeddings": False,
        "record_count": 0,
        "status": "empty",
    }
    assert balance(db, funded) == after_create < before  # the create was billed, the delete not
    assert_error(client.get("/v1/chat/embedding_status", headers=funded.headers), 400)


def test_similar_to_a_json_record_and_min_results(client: TestClient, funded: Tenant) -> None:
    template = create(client, funded)["template_id"]
    body = {
        "template_id": template,
        "search_json": {"city": "Dallas", "description": "balcony"},
        "limit": 1,
        "min_results": 3,
    }
    found = post(client, funded, "similar_to_embedding", body).json()
    assert len(found["matches"]) == 3
    assert found["matches"][0]["id"] == "A2"
    assert found["structured_filters"] == {}
    assert_error(post(client, funded, "similar_to_embedding", {"template_id": template}), 400)


def test_plain_text_is_split_into_passages_and_costs_more(
    client: TestClient, funded: Tenant
) -> None:
    long_text = " ".join(f"Sentence number {i} about rivers and bridges." for i in range(120))
    records_call = post(
        client, funded, "create_embedding", {"records": [{"id": "x", "content": long_text}]}
    )
    plain = post(
        client,
        funded,
        "generate_embeddings_from_plain_text",
        {"texts": [long_text, {"title": "Short", "text": "A lake."}]},
    )
    assert plain.status_code == 200, plain.text
    assert plain.json()["record_count"] > 2  # the long text became several passages
    per_record_charge = float(records_call.headers["x-credits-charged"])
    assert float(plain.headers["x-credits-charged"]) > 2 * per_record_charge  # x 2.5 on this route
    assert_error(post(client, funded, "generate_embeddings_from_plain_text", {}), 400)


def test_listing_templates_with_pagination(client: TestClient, funded: Tenant) -> None:
    ids = [create(client, funded)["template_id"] for _ in range(3)]
    page = client.get(
        "/v1/chat/embedding_templates?limit=2&offset=0", headers=funded.headers
    ).json()
    assert page["pagination"] == {"total": 3, "limit": 2, "offset": 0, "has_more": True}
    rest = client.get(
        "/v1/chat/embedding_templates?limit=2&offset=2", headers=funded.headers
    ).json()
    assert {t["template_id"] for t in page["templates"] + rest["templates"]} == set(ids)
    assert page["templates"][0]["embedding_model"] == "all-minilm-l6-v2"
    assert_error(client.get("/v1/chat/embedding_templates?limit=101", headers=funded.headers), 400)


def test_limits_ownership_and_credits(client: TestClient, funded: Tenant, db: Database) -> None:
    assert_error(post(client, funded, "create_embedding", {"records": []}), 400)
    assert_error(post(client, funded, "create_embedding", {"name": "x"}), 400)
    assert_error(post(client, funded, "create_embedding", {"records": ["not an object"]}), 400)
    assert_error(
        post(
            client, funded, "create_embedding", {"records": [{"id": "big", "text": "x" * 100_001}]}
        ),
        413,
    )
    assert_error(post(client, funded, "create_embedding", {"urls": ["https://example.com"]}), 400)
    assert_error(
        post(client, funded, "create_embedding_from_url", {"url": "https://example.com"}), 400
    )
    template = create(client, funded)["template_id"]
    other = make_tenant(db, "tenant-b")
    grant(db, other, 10_000_000)
    for route, body in [
        ("search_against_embedding", {"template_id": template, "search_term": "x"}),
        ("update_embedding", {"template_id": template, "records": HOMES}),
        ("delete_embeddings", {"template_id": template}),
    ]:
        assert_error(post(client, other, route, body), 403)
    assert_error(
        client.get(f"/v1/chat/embedding_status?template_id={template}", headers=other.headers), 403
    )
    broke = make_tenant(db, "broke")
    refused = post(client, broke, "create_embedding", {"records": HOMES})
    assert_error(refused, 402)
    assert (
        client.get("/v1/chat/embedding_templates", headers=broke.headers).json()["templates"] == []
    )


def test_postgres_uses_hnsw_beyond_the_exact_limit(
    settings, db: Database, tenant: Tenant, backend: str
) -> None:  # type: ignore[no-untyped-def]
    if backend != "postgresql":
        pytest.skip("PostgreSQL only")
    from sqlalchemy import text

    from sessionary.app import create_app

    grant(db, tenant, 100_000_000)
    records = [
        {
            "id": f"r{i}",
            "city": ["Austin", "Dallas", "Houston"][i % 3],
            "price": 1000 + 10 * i,
            "description": f"Home number {i} with {['a garden', 'a pool', 'a balcony', 'a view'][i % 4]}.",
        }
        for i in range(120)
    ]
    approximate = TestClient(create_app(settings.model_copy(update={"search_exact_limit": 10})))
    exact = TestClient(create_app(settings))
    template = create(approximate, tenant, records)["template_id"]
    with db.session(write=False) as session:
        indexes = set(
            session.execute(
                text("SELECT indexname FROM pg_indexes WHERE tablename = 'search_documents'")
            ).scalars()
        )
    assert "ix_search_documents_hnsw_384" in indexes
    for query in ("a home with a pool", "balcony in Dallas", "garden in Houston under 1800"):
        body = {"template_id": template, "search_term": query, "limit": 10}
        ann = post(approximate, tenant, "search_against_embedding", body).json()
        full = post(exact, tenant, "search_against_embedding", body).json()
        assert ann["structured_filters"] == full["structured_filters"]
        assert [r["id"] for r in ann["results"]] == [r["id"] for r in full["results"]], (
            query
        )  # recall 1 here
        for result in ann["results"]:
            if "city" in ann["structured_filters"]:
                assert result["structured_filters"]["city"] == ann["structured_filters"]["city"]
    with db.session(write=False) as session:
        plan = "\n".join(
            session.execute(
                text(
                    "EXPLAIN SELECT id FROM search_documents WHERE vector_dims(embedding) = 384 "
                    "ORDER BY embedding::vector(384) <=> (SELECT embedding::vector(384) FROM search_documents LIMIT 1) LIMIT 5"
                )
            ).scalars()
        )
    assert "ix_search_documents_hnsw_384" in plan


# Case-, accent-, `in`- and `ne`-conditions on a string field, for the filter equivalence tests.
CITY_CONDITIONS: list[dict[str, Any]] = [
    {"city": "zurich"},
    {"city": "OSLO"},
    {"city": {"in": ["Bergen", "zürich"]}},
    {"city": {"ne": "oslo"}},
]


def test_column_filters_answer_what_sql_answers(
    client: TestClient, funded: Tenant, db: Database, backend: str
) -> None:
    """SQLite filters from cached columns select exactly the rows the SQL selects."""
    if backend != "sqlite":
        pytest.skip("SQLite only")
    import numpy as np

    from sessionary.search.filters import column_mask, validate
    from sessionary.search.ranking import INDEXES
    from sessionary.search.store import SearchStore

    cities = ["Zürich", "zurich", "ZÜRICH", "Oslo", "Bergen", None]
    records = []
    for i in range(60):
        record: dict[str, Any] = {
            "id": f"h{i}",
            "price": None if i % 7 == 0 else 900 + 100 * (i % 13),
            "pets": None if i % 5 == 0 else i % 2 == 0,
            "description": f"Home {i} with {['a garden', 'a pool', 'a view'][i % 3]}.",
        }
        if cities[i % 6] is not None:
            record["city"] = cities[i % 6]
        records.append({k: v for k, v in record.items() if v is not None})
    template_id = create(client, funded, records)["template_id"]
    conditions: list[dict[str, Any]] = [
        *CITY_CONDITIONS,
        {"price": 1500},
        {"price": {"min": 1200, "max": 1800}},
        {"price": {"gte": 1000}},
        {"price": {"ne": 1500}},
        {"price": {"in": [900, 2100]}},
        {"pets": True},
        {"pets": False},
        {"pets": {"ne": True}},
        {"city": "zurich", "price": {"max": 1500}, "pets": True},
    ]
    with db.session(write=False) as session:
        store = SearchStore(session)
        template = store.get_template(template_id)
        assert template is not None
        assert {"city", "price", "pets"} <= set(template.schema["fields"])
        index = INDEXES.get(store, template.id, template.version)
        columns = index.columns(lambda key: store.folded_values(template.id, key))
        for raw in conditions:
            filters = validate(raw, template.schema, "search_params")
            keep = column_mask(filters, template.schema, columns)
            assert keep is not None, raw
            by_columns = {index.ids[i] for i in np.flatnonzero(keep)}
            by_sql = set(store.candidate_ids(template.id, store.where(filters, template.schema)))
            assert by_columns == by_sql, raw
            assert by_sql and len(by_sql) < len(records), raw  # each case tells rows apart


def test_postgres_containment_hints_keep_results_and_use_the_gin_index(
    client: TestClient, funded: Tenant, db: Database, backend: str
) -> None:
    """PostgreSQL: string equalities gain `folded @> ...` hints that select exactly what the
    plain clauses select (mixed value types included) and that the GIN index can answer."""
    if backend != "postgresql":
        pytest.skip("PostgreSQL only")
    from sqlalchemy import text

    from sessionary.search.filters import validate
    from sessionary.search.store import SearchStore, filter_clauses

    codes = ["0150", "150", "Zürich", "true", "1.50"]  # strings that read as JSON scalars
    records = [
        {
            "id": f"h{i}",
            "city": ["Zürich", "zurich", "Oslo", "Bergen"][i % 4],
            "code": codes[i % len(codes)],
            "description": f"Home {i} with {['a garden', 'a pool', 'a view'][i % 3]}.",
        }
        for i in range(48)
    ]
    template_id = create(client, funded, records)["template_id"]
    conditions: list[dict[str, Any]] = list(CITY_CONDITIONS)
    with db.session(write=False) as session:
        store = SearchStore(session)
        template = store.get_template(template_id)
        assert template is not None
        assert template.schema["fields"]["code"]["kind"] == "categorical"
        conditions += [{"code": "150"}, {"code": "true"}, {"code": {"in": ["1.50", "zurich"]}}]
        for raw in conditions:
            filters = validate(raw, template.schema, "search_params")
            hinted = store.where(filters, template.schema)
            plain = filter_clauses(filters, template.schema)
            by_hinted = set(store.candidate_ids(template.id, hinted))
            assert by_hinted == set(store.candidate_ids(template.id, plain)), raw
            assert by_hinted and len(by_hinted) < len(records), raw
        _, hint = store.where({"city": "zurich"}, template.schema)
        assert "@>" in str(hint.compile(session.get_bind()))
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            session.execute(
                text("EXPLAIN SELECT id FROM search_documents WHERE folded @> :form"),
                {"form": '{"city": "oslo"}'},
            ).scalars()
        )
    assert "ix_search_documents_folded" in plan


def test_an_update_counts_each_record_once(
    client: TestClient, funded: Tenant, db: Database
) -> None:
    """The batch's statistics are merged once: merging the already-merged schema again counted
    the existing records twice (10,000 records reported as 1,023,000) and turned free text into
    categories."""
    from sessionary.search.models import EmbeddingTemplate

    titles = [{"id": str(i), "title": f"Listing number {i}", "city": "Oslo"} for i in range(4)]
    template = post(client, funded, "create_embedding", {"records": titles}).json()["template_id"]
    for i in range(4, 7):
        extra = {"template_id": template, "records": [{"id": str(i), "title": f"Listing {i}"}]}
        assert post(client, funded, "update_embedding", extra).status_code == 200
    with db.session(write=False) as session:
        schema = session.get(EmbeddingTemplate, template).schema  # type: ignore[union-attr]
    assert schema["fields"]["title"]["count"] == 7
    assert schema["fields"]["title"]["kind"] == "text"
    assert schema["fields"]["city"]["count"] == 4
