"""Filter extraction on templates nobody tuned it for: field vocabulary from names and values,
teaching by aliases, bounds, negation, folding, and small templates that stay free text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sessionary.search import detection
from sessionary.search.extraction import Extractor
from sessionary.search.records import flatten
from sessionary.search.vocabulary import Semantic, abbreviates, compact, name_words, same_stem
from tests.conftest import Tenant
from tests.test_search import create, funded, post  # noqa: F401  (funded is a fixture)
from tests.test_search_listings import DATA

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def semantic() -> Semantic:
    from sessionary.providers.embeddings.local import LocalEmbeddings
    from sessionary.providers.settings import ProviderSettings

    model = LocalEmbeddings(ProviderSettings(provider="local"))
    return Semantic(model.name, lambda texts: model.encode_array(list(texts)))


@pytest.fixture(scope="module")
def oslo_schema() -> dict[str, Any]:
    records = json.loads((DATA / "oslo_listings.json").read_text())
    return detection.detect([flatten(r, i) for i, r in enumerate(records)], {})


def test_field_names_split_and_abbreviate() -> None:
    assert name_words("host_is_superhost") == ["host", "superhost"]
    assert name_words("hostIsSuperhost") == ["host", "superhost"]
    assert name_words("owner.emailAddresses") == ["owner", "email", "address"]
    assert name_words("number_of_reviews") == ["review"]
    assert abbreviates("mpg", name_words("Miles_per_Gallon"))
    assert abbreviates("hp", ["horsepower"])
    assert not abbreviates("pet", ["price"]) and not abbreviates("hp", ["price"])
    assert same_stem("japanese", "japan") and same_stem("booking", "bookable")
    assert not same_stem("private", "prior")
    assert compact("St. Hanshaugen") == compact("st hanshaugen") == "sthanshaugen"


# Kinds of phrasing the held-out listing queries use (our own sentences, not theirs).
PARAPHRASES = [
    ("sleeps 8 near Frogner", {"neighbourhood": "Frogner", "accommodates": {"min": 8}}),
    (
        "something for 4 in nordre aker",
        {"neighbourhood": "Nordre Aker", "accommodates": {"min": 4}},
    ),
    ("5 guests, Grunerlokka", {"neighbourhood": "Grünerløkka", "accommodates": {"min": 5}}),
    ("whole apartment in Sagene", {"neighbourhood": "Sagene", "room_type": "Entire home/apt"}),
    ("entire place at most 1200 NOK", {"room_type": "Entire home/apt", "price": {"max": 1200}}),
    ("instant book in Sentrum", {"neighbourhood": "Sentrum", "instant_bookable": True}),
    ("not instant bookable", {"instant_bookable": False}),
    ("super host with a budget 700 NOK", {"host_is_superhost": True, "price": {"max": 700}}),
    ("no more than 650 kr in gamle oslo", {"neighbourhood": "Gamle Oslo", "price": {"max": 650}}),
    ("one night minimum, St Hanshaugen", {"neighbourhood": "St. Hanshaugen", "minimum_nights": 1}),
    ("around 1000 in Ullern", {"neighbourhood": "Ullern", "price": {"min": 900, "max": 1100}}),
    ("3 bedrooms or more except Marka", {"neighbourhood": {"ne": "Marka"}, "bedrooms": {"min": 3}}),
    ("cozy loft with a view", {}),
    ("family house near the park", {}),
    ("a quiet room", {}),  # "room" names four room types: it names none
]


@pytest.mark.parametrize(("query", "expected"), PARAPHRASES)
def test_listing_paraphrases(
    oslo_schema: dict[str, Any], semantic: Semantic, query: str, expected: dict[str, Any]
) -> None:
    filters, _ = Extractor(oslo_schema, {}, semantic).extract(query)
    assert filters == expected


def test_a_small_template_keeps_titles_free_text() -> None:
    titles = [
        "Mountain bike full suspension",
        "Trek road bike",
        "City bike with basket",
        "Kids bike 16 inch",
        "Gravel bike carbon",
        "Folding bike",
    ]
    records = [
        {"id": str(i), "title": t, "brand": ["trek", "giant"][i % 2]} for i, t in enumerate(titles)
    ]
    schema = detection.detect([flatten(r, i) for i, r in enumerate(records)], {})
    assert schema["fields"]["title"]["kind"] == "text"
    assert schema["fields"]["brand"]["kind"] == "categorical"  # two values, each three times
    filters, rest = Extractor(schema).extract("mountain bike not trek")
    assert filters == {"brand": {"ne": "trek"}}
    assert rest == "mountain bike"


def test_aliases_teach_the_extractor_and_are_listed(
    client: TestClient,
    funded: Tenant,  # noqa: F811
) -> None:
    records = [
        {"id": f"r{i}", "kind": ["Entire home/apt", "Private room"][i % 2], "beds": 1 + i % 3}
        for i in range(12)
    ]
    options = {
        "beds": {"aliases": ["sleeping places", "berths"]},
        "kind": {"value_aliases": {"private room": ["a room", "just a room"]}},
    }
    created = create(client, funded, records, field_options=options)
    assert created["field_options"]["kind"]["value_aliases"] == {
        "private room": ["a room", "just a room"]
    }
    listed = client.get("/v1/chat/embedding_templates", headers=funded.headers).json()
    shown = next(t for t in listed["templates"] if t["template_id"] == created["template_id"])
    assert shown["field_options"]["beds"]["aliases"] == ["sleeping places", "berths"]
    answer = post(
        client,
        funded,
        "search_against_embedding",
        {"template_id": created["template_id"], "search_term": "a room with 3 berths"},
    ).json()
    assert answer["structured_filters"] == {"kind": "Private room", "beds": 3}
    assert {r["record"]["kind"] for r in answer["results"]} == {"Private room"}
    assert answer["applied_filters"] == [
        {"field": "kind", "source": "query", "condition": "Private room"},
        {"field": "beds", "source": "query", "condition": 3},
    ]
    for bad in (
        {"beds": {"aliases": "berths"}},
        {"beds": {"aliases": [""]}},
        {"kind": {"value_aliases": {"x": "y"}}},
        {"kind": {"retrievable": False, "value_aliases": {"Private room": ["a room"]}}},
    ):
        refused = post(
            client, funded, "create_embedding", {"records": records, "field_options": bad}
        )
        assert refused.status_code == 400, bad
        assert refused.json()["error"]["param"] == "field_options"


def test_an_empty_answer_says_why(client: TestClient, funded: Tenant) -> None:  # noqa: F811
    records = [
        {"id": f"r{i}", "city": ["Oslo", "Bergen"][i % 2], "price": 100 * (i + 1)} for i in range(6)
    ]
    template = create(client, funded, records)["template_id"]
    answer = post(
        client,
        funded,
        "search_against_embedding",
        {"template_id": template, "search_term": "flat in Bergen under 150"},
    ).json()
    assert answer["results"] == []
    assert answer["notice"].startswith("No record meets the filters applied")
    assert "city = Bergen" in answer["notice"] and "price ≤ 150" in answer["notice"]
    found = post(
        client,
        funded,
        "search_against_embedding",
        {"template_id": template, "search_term": "flat in Bergen"},
    ).json()
    assert found["results"] and "notice" not in found
