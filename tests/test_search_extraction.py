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


def _scanned_value_matches(extractor: Extractor, tokens: list[str]) -> list[Any]:
    """The plain scan `ValueIndex` replaced, as the specification of its answer: every phrase
    tried at every position, then every distinctive word against every word."""
    found: list[Any] = []
    for path in extractor.of_kind("categorical"):
        entry = extractor.words[path]
        phrases = [(v, ws) for v, ws in entry.values.items() if ws]
        phrases += [(v, ws) for v, taught in entry.value_aliases.items() for ws in taught]
        for value, value_words in phrases:
            n, squeezed = len(value_words), "".join(value_words)
            for start in range(len(tokens)):
                if tokens[start : start + n] == value_words:
                    found.append((start, start + n, path, value))
                for width in range(1, 5):
                    piece = tokens[start : start + width]
                    if len(piece) == width and width != n and "".join(piece) == squeezed:
                        found.append((start, start + width, path, value))
        for word, value in entry.distinctive.items():
            stem_only = len(entry.values.get(value, [])) < 2 and word == compact(value)
            for i, token in enumerate(tokens):
                if token.isalpha() and (
                    (token == word and not stem_only)
                    or (token != word and len(word) >= 4 and same_stem(token, word))
                ):
                    found.append((i, i + 1, path, value))
    return found


def test_value_index_finds_what_the_plain_scan_finds_in_its_order(
    oslo_schema: dict[str, Any],
) -> None:
    import random

    from sessionary.search.extraction import Query

    options = {
        "room_type": {"value_aliases": {"Private room": ["a room", "just a room", "privat"]}},
        "neighbourhood": {"value_aliases": {"Frogner": ["west end", "frog ner"]}},
    }
    extractor = Extractor(oslo_schema, options)
    # Every word any value, phrase or distinctive word is made of, their stems' neighbours
    # (`japanese` for `japan`), and the words of the shared queries.
    vocabulary: set[str] = set()
    for path in extractor.of_kind("categorical"):
        entry = extractor.words[path]
        for ws in [*entry.values.values(), *(w for t in entry.value_aliases.values() for w in t)]:
            vocabulary.update(ws)
            vocabulary.add("".join(ws))
        for word in entry.distinctive:
            vocabulary.update({word, word + "s", word[:-1], word + "ese"})
    queries = json.loads((DATA / "listing_queries_dev.json").read_text())["queries"]
    texts = [q["q"] for q in queries] + [q for q, _ in PARAPHRASES]
    for text in texts:
        vocabulary.update(Query(text).tokens)
    words = sorted(vocabulary) + ["7", "1200", "the", "in", "not"]
    rng = random.Random(7)
    token_lists = [Query(text).tokens for text in texts]
    token_lists += [[rng.choice(words) for _ in range(rng.randint(1, 12))] for _ in range(3000)]
    compared = 0
    for tokens in token_lists:
        expected = _scanned_value_matches(extractor, tokens)
        got = extractor._value_matches(Query(" ".join(tokens)))
        if Query(" ".join(tokens)).tokens != tokens:
            continue  # a word the tokenizer splits: not a query this scan would see
        assert got == expected, tokens
        compared += bool(expected)
    assert compared > 1000  # most lists name some value: the comparison is not vacuous


def test_field_names_answer_as_the_plain_rules_do(oslo_schema: dict[str, Any]) -> None:
    """`FieldWords.names` tries its stem and abbreviation rules only where first letters allow
    them: the same answers as trying them all, for every field and many words."""
    from sessionary.search.vocabulary import singular

    extractor = Extractor(oslo_schema, {"price": {"aliases": ["nightly rate"]}})
    entries = list(extractor.words.values())
    vocabulary = {w for e in entries for w in e.name} | {"nightly", "rate", "hp", "mpg", "ab"}
    vocabulary |= {w + suffix for w in list(vocabulary) for suffix in ("s", "ing", "ed", "er")}
    vocabulary |= {w[:n] for w in list(vocabulary) for n in (1, 2, 3, 4, 5)}
    vocabulary |= {"".join(w[0] for w in e.name if w) for e in entries}  # initials
    named = 0
    for entry in entries:
        for word in sorted(vocabulary):
            t = singular(word)
            plain = (
                t in entry.name
                or any(same_stem(t, w) for w in entry.name)
                or abbreviates(t, entry.name)
            )
            assert entry.names([word]) == plain, (entry.path, word)
            named += plain
    price = extractor.words["price"]
    assert price.names(["nightly", "rates"]) and not price.names(["rate"])  # all of an alias
    assert named > 50
