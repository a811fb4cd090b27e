"""On SQLite a search's units run on the event loop (`kit/loop_units.py`) once what they need is
in memory: a template's first search loads its index on a worker, and later ones run on the
loop with the same answers and one charge each. Whatever would make the loop wait sends the
unit to a worker, from its start: a template's vectors or filter columns to load, an extractor
to build, a model call in the plan (a word the extractor has not met), a lexical index to build,
a template large enough for the ANN path, the write lock held by another process."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from sessionary.kit.db import Database
from sessionary.kit.loop_units import LoopUnits
from sessionary.search.ann import AnnPolicy
from sessionary.search.ranking import INDEXES, TemplateIndex
from sessionary.search.retrieval import _dense
from tests.conftest import Tenant
from tests.support.money import charges, money
from tests.test_search import create, post
from tests.test_search import funded as funded

# Housekeeping off: its writes on a worker would send a unit away now and then (conftest).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_housekeeping")]

SEARCH = {"search_term": "quiet studio near the park", "limit": 3}


def _units(app: FastAPI) -> LoopUnits:
    units: LoopUnits | None = app.state.db.loop_units
    if units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    return units


def _search(client: TestClient, tenant: Tenant, template: str, **extra: Any) -> dict[str, Any]:
    answer = post(
        client, tenant, "search_against_embedding", {"template_id": template, **SEARCH, **extra}
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_loaded_template_is_searched_on_the_loop(
    app: FastAPI, client: TestClient, funded: Tenant, db: Database
) -> None:
    units = _units(app)
    template = create(client, funded)["template_id"]
    first = _search(client, funded, template)  # extractor, words, vector: all met now
    spent = len(charges(db, funded))
    INDEXES._entries.clear()  # the template's vectors no longer in memory
    away = units.sent_away
    reloaded = _search(client, funded, template)  # leaves the loop to load them
    assert units.sent_away == away + 1
    ran, away = units.ran, units.sent_away
    again = _search(client, funded, template)  # all in memory: one unit, here
    assert (units.ran, units.sent_away) == (ran + 1, away)
    assert first["results"] == reloaded["results"] == again["results"]
    assert len(charges(db, funded)) == spent + 2
    balance, ledger_sum, holds = money(db, funded)
    assert balance == ledger_sum and holds == 0


def test_the_loop_and_the_workers_answer_alike(
    app: FastAPI, client: TestClient, funded: Tenant, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filtered, reranked, similar-to and plain searches: the same hits and charges on either
    path (the loop forced off for the second pass)."""
    units = _units(app)
    template = create(client, funded)["template_id"]
    ingested = len(charges(db, funded))
    asks: list[dict[str, Any]] = [
        {},
        {"search_term": "a loft in Dallas under 3000 with a balcony"},
        {"rerank": True},
        {"search_params": {"city": "Dallas"}},
    ]
    for ask in asks:  # loads what each needs
        _search(client, funded, template, **ask)
    ran = units.ran
    here = [_search(client, funded, template, **ask) for ask in asks]
    assert units.ran >= ran + len(asks)
    monkeypatch.setattr(units, "run", lambda work: (False, None))
    there = [_search(client, funded, template, **ask) for ask in asks]
    for mine, theirs in zip(here, there, strict=True):
        assert mine["results"] == theirs["results"]
    spent = charges(db, funded)[: 3 * len(asks)]  # newest first: the searches'
    assert len(charges(db, funded)) == ingested + 3 * len(asks)
    assert all(times % 3 == 0 for times in Counter(spent).values())  # each ask, alike 3 times


def test_a_word_the_extractor_has_not_met_leaves_the_loop(
    app: FastAPI, client: TestClient, funded: Tenant
) -> None:
    """The plan would call the embedding model (on the event loop): the unit goes to a worker,
    which makes the call."""
    units = _units(app)
    template = create(client, funded)["template_id"]
    _search(client, funded, template)
    away = units.sent_away
    found = _search(client, funded, template, search_term="zebra-striped wallpaper by a fjord")
    assert units.sent_away > away
    assert found["results"]


def test_the_write_lock_of_another_process_sends_the_charge_to_a_worker(
    app: FastAPI, client: TestClient, funded: Tenant, db: Database
) -> None:
    """A repeated search ranks on the loop, meets the lock at its charge, and is redone on a
    worker that waits; the loop answers meanwhile, and the search is charged once."""
    units = _units(app)
    template = create(client, funded)["template_id"]
    _search(client, funded, template)
    spent = len(charges(db, funded))
    path = db.engine.url.database
    assert path
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(_search(client, funded, template)))
    away = units.sent_away
    try:
        thread.start()
        time.sleep(0.5)
        began = time.monotonic()
        assert client.get("/v1/models", headers=funded.headers).status_code == 200
        assert time.monotonic() - began < 0.75
        time.sleep(0.5)
    finally:
        other.execute("ROLLBACK")
        other.close()
    thread.join(timeout=30)
    assert answers and answers[0]["results"]
    assert units.sent_away > away
    assert len(charges(db, funded)) == spent + 1


def test_a_large_template_leaves_the_loop(db: Database) -> None:
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    matrix = np.eye(4, dtype=np.float32)
    index = TemplateIndex(1, ["a", "b", "c", "d"], matrix, ["", "", "", ""])
    small = AnnPolicy(min_records=10)
    large = AnnPolicy(min_records=2)
    query = matrix[0]
    ran, found = db.loop_units.run(lambda: _dense("t", index, query, None, 2, small))
    assert ran and found is not None and found[0][0][0] == "a"
    assert db.loop_units.run(lambda: _dense("t", index, query, None, 2, large)) == (False, None)


def test_a_lexical_index_being_built_blocks_no_other_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The build holds a lock of its own: what the loop reads of the same template (its shown
    documents, its filtered rows) never waits for it."""
    import bm25s

    building = threading.Event()
    real = bm25s.BM25.index

    def slow_index(self: Any, *args: Any, **kwargs: Any) -> Any:
        building.set()
        time.sleep(1.5)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(bm25s.BM25, "index", slow_index)
    index = TemplateIndex(1, ["a", "b"], np.eye(2, dtype=np.float32), ["red door", "blue roof"])
    builder = threading.Thread(target=lambda: index.lexical("red", None, 2))
    builder.start()
    assert building.wait(10)
    began = time.monotonic()
    index.shown(["a"], lambda ids: dict.fromkeys(ids))  # type: ignore[arg-type]
    index.filtered("k", lambda: np.array([0]))
    assert time.monotonic() - began < 0.5
    builder.join()
    assert index.lexical("red", None, 2)[0][0] == "a"


def test_filters_not_met_before_are_computed_on_a_worker(
    app: FastAPI, client: TestClient, funded: Tenant
) -> None:
    """The scan a filter needs costs what the request says (a thousand values on each of many
    fields): the first time a filter is met its rows are computed on a worker; the same filter
    again is a lookup, on the loop."""
    units = _units(app)
    template = create(client, funded)["template_id"]
    _search(client, funded, template, search_params={"city": "Houston"})  # the column, loaded
    cities = {"search_params": {"city": {"in": ["Dallas", "Austin"]}}}
    away = units.sent_away
    first = _search(client, funded, template, **cities)
    assert units.sent_away == away + 1
    ran, away = units.ran, units.sent_away
    again = _search(client, funded, template, **cities)
    assert (units.ran, units.sent_away) == (ran + 1, away)
    assert first["results"] == again["results"]
    assert {hit["record"]["city"] for hit in again["results"]} == {"Dallas", "Austin"}


def test_a_large_request_never_runs_on_the_loop(
    app: FastAPI, client: TestClient, funded: Tenant
) -> None:
    """Filters (or a record) past `kit/light.py`'s bounds: both units on workers from the
    start, whatever is in memory."""
    units = _units(app)
    template = create(client, funded)["template_id"]
    many = {"search_params": {"city": {"in": [f"city {n}" for n in range(500)]}}}
    _search(client, funded, template, **many)
    ran, away = units.ran, units.sent_away
    _search(client, funded, template, **many)
    assert (units.ran, units.sent_away) == (ran, away)


def test_a_record_larger_than_a_stored_one_is_refused(
    client: TestClient, funded: Tenant, db: Database
) -> None:
    template = create(client, funded)["template_id"]
    spent = len(charges(db, funded))
    record = {f"field {n}": "x" * 10 for n in range(10_000)}  # about 190 kB
    answer = post(
        client, funded, "similar_to_embedding", {"template_id": template, "search_json": record}
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["param"] == "search_json"
    assert len(charges(db, funded)) == spent


def test_rerank_over_a_template_with_no_words_answers_with_its_dense_ranking(
    client: TestClient, funded: Tenant
) -> None:
    """Stopwords only: no lexical index can be built (bm25s refuses an empty vocabulary); the
    search answers from the vectors alone instead of a 500."""
    records = [{"id": "s1", "t": "the"}, {"id": "s2", "t": "a an"}]
    template = create(client, funded, records)["template_id"]
    found = _search(client, funded, template, search_term="the", rerank=True)
    assert len(found["results"]) == 2


def test_many_documents_not_met_before_are_read_on_a_worker(
    app: FastAPI, client: TestClient, funded: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records may be 100 kB each and a page 100 of them: past `LOOP_SHOWN` unread documents
    the unit leaves the loop; read once, the same page is answered there."""
    import sessionary.search.ranking as ranking_module

    monkeypatch.setattr(ranking_module, "LOOP_SHOWN", 2)
    units = _units(app)
    template = create(client, funded)["template_id"]
    _search(client, funded, template, limit=1)  # all loaded but the documents' records
    away = units.sent_away
    first = _search(client, funded, template, limit=4)
    assert units.sent_away == away + 1
    ran, away = units.ran, units.sent_away
    again = _search(client, funded, template, limit=4)
    assert (units.ran, units.sent_away) == (ran + 1, away)
    assert first["results"] == again["results"] and len(again["results"]) == 4


def test_a_long_term_is_extracted_on_a_worker(
    app: FastAPI, client: TestClient, funded: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extractor's passes cost the term's words by the template's fields (a 2,000-character
    term against 250 fields held the loop 1.3-1.8 s): past `LOOP_TERM_CHARS` they run on a
    worker; a remembered answer for the same term is a lookup, on the loop."""
    import sessionary.search.extraction as extraction_module

    units = _units(app)
    template = create(client, funded)["template_id"]
    words = SEARCH["search_term"].split()
    _search(client, funded, template)  # every word met
    ran, away = units.ran, units.sent_away
    _search(client, funded, template, search_term=" ".join(reversed(words)))  # a new term
    assert units.sent_away == away  # short: extracted on the loop
    monkeypatch.setattr(extraction_module, "LOOP_TERM_CHARS", 10)
    away = units.sent_away
    first = _search(client, funded, template, search_term=" ".join(words[1:] + words[:1]))
    assert units.sent_away == away + 1  # long now: the plan left the loop
    ran, away = units.ran, units.sent_away
    again = _search(client, funded, template, search_term=" ".join(words[1:] + words[:1]))
    assert units.sent_away == away and units.ran > ran  # remembered: a lookup, on the loop
    assert first["results"] == again["results"]


def test_the_lexical_library_is_imported_off_the_loop(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its import takes 0.4 s: a unit that would be the first to import it leaves the loop."""
    import sys

    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    index = TemplateIndex(1, ["a"], np.eye(1, dtype=np.float32), ["red door"])
    index._bm25 = object()  # as if built
    monkeypatch.delitem(sys.modules, "bm25s", raising=False)
    assert db.loop_units.run(lambda: index.lexical("red", None, 1)) == (False, None)


def test_a_record_with_nan_or_infinity_is_refused_at_ingest(
    client: TestClient, funded: Tenant, db: Database
) -> None:
    """JSON has no NaN: SQLite's JSON functions refuse such a record, which made every filtered
    search of its template a 503 that no retry could cure."""
    spent = len(charges(db, funded))
    for token in ("NaN", "Infinity", "-Infinity"):
        body = '{"name": "homes", "records": [{"id": "n1", "price": ' + token + "}]}"
        answer = client.post(
            "/v1/chat/create_embedding",
            content=body,
            headers={**funded.headers, "content-type": "application/json"},
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == "records[0].price"
    assert len(charges(db, funded)) == spent
