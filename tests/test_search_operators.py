"""One meaning per filter operator: SQL (SQLite and PostgreSQL), the NumPy column mask and the
Python check select the same records, on values chosen to trip them up."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from sessionary.kit.db import Database
from sessionary.search import operators
from sessionary.search.filters import column_mask, matches, validate
from sessionary.search.models import SearchDocument
from sessionary.search.ranking import INDEXES
from sessionary.search.store import SearchStore
from tests.conftest import Tenant
from tests.test_auth import assert_error
from tests.test_search import create, funded, post  # noqa: F401  (funded is a fixture)

pytestmark = pytest.mark.slow

CITIES = ["Zürich", "zurich", "ZÜRICH", "Oslo", "Bergen", None]
CODES = ["0150", "150", "true", "1.50", "Ä-1"]  # strings that read as JSON scalars, or fold
PRICES = [0, -5, 1500, 1500.0, 1499.5, 2100, None]
SINCE = ["2019-06-01", "2020-01-01", "2021-12-31", None]
TAGS = [["wifi", "Sauna"], ["sauna"], ["WIFI"], None]


def _records() -> list[dict[str, Any]]:
    records = []
    for i in range(84):
        record: dict[str, Any] = {
            "id": f"h{i}",
            "city": CITIES[i % 6],
            "code": CODES[i % 5],
            "price": PRICES[i % 7],
            "pets": [True, False, None][i % 3],
            "since": SINCE[i % 4],
            "tags": TAGS[i % 4],
            "description": f"Home {i} with {['a garden', 'a pool', 'a view'][i % 3]}.",
        }
        records.append({k: v for k, v in record.items() if v is not None})
    return records


CONDITIONS: list[dict[str, Any]] = [
    {"city": "zurich"},
    {"city": "OSLO"},
    {"city": {"in": ["Bergen", "zürich"]}},
    {"city": {"ne": "oslo"}},
    {"code": "150"},
    {"code": "true"},
    {"code": "a-1"},
    {"code": {"in": ["1.50", "0150"]}},
    {"code": {"ne": "150"}},
    {"price": 1500},
    {"price": 0},
    {"price": {"min": 0, "max": 1500}},
    {"price": {"gte": 1499.5}},
    {"price": {"lte": -1}},
    {"price": {"ne": 1500}},
    {"price": {"in": [0, 2100, 7]}},
    {"pets": True},
    {"pets": False},
    {"pets": {"ne": True}},
    {"pets": {"in": [False]}},
    {"since": "2020-01-01"},
    {"since": {"min": "2020-01-01"}},
    {"since": {"max": "2020-12-31", "min": "2019-01-01"}},
    {"since": {"ne": "2021-12-31"}},
    {"tags": "wifi"},
    {"tags": {"in": ["sauna"]}},
    {"tags": {"ne": "sauna"}},
    {"city": "zurich", "price": {"max": 1500}, "pets": True},
]


def test_one_meaning_per_operator_on_tricky_values(
    client: TestClient,
    funded: Tenant,  # noqa: F811
    db: Database,
    backend: str,
) -> None:
    template_id = create(client, funded, _records())["template_id"]
    with db.session(write=False) as session:
        store = SearchStore(session)
        template = store.get_template(template_id)
        assert template is not None
        kinds = {k: v["kind"] for k, v in template.schema["fields"].items()}
        assert kinds["city"] == kinds["code"] == "categorical"
        assert (kinds["price"], kinds["pets"], kinds["since"], kinds["tags"]) == (
            "number",
            "boolean",
            "date",
            "tags",
        )
        documents = list(
            session.scalars(select(SearchDocument).where(SearchDocument.template_id == template_id))
        )
        index = INDEXES.get(store, template.id, template.version) if backend == "sqlite" else None
        masked = 0
        for raw in CONDITIONS:
            filters = validate(raw, template.schema, "search_params")
            by_sql = set(store.candidate_ids(template.id, store.where(filters, template.schema)))
            by_python = {d.id for d in documents if matches(d.filters, filters, template.schema)}
            assert by_sql == by_python, raw
            assert by_sql and len(by_sql) < len(documents), raw  # each case tells rows apart
            if index is not None:
                columns = index.columns(lambda key: store.folded_values(template.id, key))
                keep = column_mask(filters, template.schema, columns)
                if keep is not None:
                    masked += 1
                    assert {index.ids[i] for i in np.flatnonzero(keep)} == by_sql, raw
        if index is not None:
            assert masked >= 20  # the mask answers most conditions itself


def test_operators_table_drives_validation(
    client: TestClient,
    funded: Tenant,  # noqa: F811
) -> None:
    template = create(client, funded, _records())["template_id"]
    for condition, param in [
        ({"pets": {"min": 1}}, "search_params.pets"),  # bounds only on numbers and dates
        ({"city": {"max": "b"}}, "search_params.city"),
        ({"price": {"eq": 3}}, "search_params.price"),  # equality is the bare value
        ({"price": {"in": []}}, "search_params.price"),
        ({"price": {"near": 3}}, "search_params.price"),
    ]:
        answer = post(
            client,
            funded,
            "search_against_embedding",
            {"template_id": template, "search_term": "home", "search_params": condition},
        )
        assert assert_error(answer, 400)["param"] == param, condition
    for name in operators.NAMES:
        assert name in operators.OPERATORS or name in operators.ALIASES
