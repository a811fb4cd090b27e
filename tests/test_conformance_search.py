"""samsar-js (through node) against a real server: every embedding method."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.live import LiveServer, run_cli
from tests.support.samsar import samsar
from tests.test_search import HOMES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    env = {"SESSIONARY_DATA_DIR": str(tmp_path_factory.mktemp("search-conformance") / "data")}
    output = run_cli(["init"], env)
    key = next(line for line in output.splitlines() if line.startswith("sk_sy_"))
    live = LiveServer(env)
    try:
        yield f"{live.base_url}/v1", key
    finally:
        live.stop()


def test_every_embedding_method(server: tuple[str, str]) -> None:
    base, key = server
    (created,) = samsar(
        base,
        key,
        [
            (
                "createEmbedding",
                [
                    {
                        "template_name": "homes",
                        "records": HOMES,
                        "field_options": {"description": {"searchable": True}},
                    }
                ],
            )
        ],
    )
    assert created["ok"], created
    template = created["data"]["template_id"]
    assert created["data"]["record_count"] == 4
    assert created["creditsCharged"] > 0
    new = {
        "id": "A5",
        "city": "El Paso",
        "price": 900,
        "duration": 1,
        "description": "Tiny house with a garden.",
    }
    calls = [
        ("updateEmbedding", [{"template_id": template, "records": [new]}]),
        ("searchAgainstEmbedding", [{"template_id": template, "search_term": "apartment in Dallas under 2500", "limit": 5}]),
        ("searchAgainstEmbeddings", [{"template_id": template, "search_term": "garden", "searchParams": {"price": {"max": 1000}},
                                      "rerank": True, "include_raw": False}]),
        ("similarToEmbedding", [{"template_id": template, "searchJson": {"city": "Dallas", "description": "balcony"}, "minResults": 2}]),
        ("similarToEmbedding", [{"template_id": template, "search_term": "pool", "limit": 1}]),
        ("listEmbeddingTemplates", [{"limit": 10, "offset": 0}]),
        ("getEmbeddingStatus", [template]),
        ("deleteEmbedding", [{"template_id": template, "sourceIds": ["A1", "A2"]}]),
        ("deleteEmbedding", [{"template_id": template, "record_id": "A3"}]),
        ("generateEmbeddingsFromPlainText", [{"plain_text": ["A note about rivers.", {"title": "Lakes", "content": "A note about lakes."}],
                                              "embedding_name": "notes"}]),
        ("createEmbeddingFromUrl", [{"url": "https://example.com", "levels": 1}]),
        ("deleteEmbeddings", [{"template_id": template}]),
        ("getEmbeddingStatus", [template]),
        ("searchAgainstEmbedding", [{"template_id": "tmpl_missing", "search_term": "x"}]),
    ]  # fmt: skip
    (updated, searched, searched_plural, similar_json, similar_term, listed, status, deleted_two, deleted_one,
     plain, from_url, emptied, status_after, missing) = samsar(base, key, calls)  # fmt: skip
    assert updated["ok"] and updated["data"]["record_count"] == 5
    assert searched["data"]["structured_filters"] == {"city": "Dallas", "price": {"max": 2500}}
    assert [r["id"] for r in searched["data"]["results"]] == ["A2"]
    assert searched["creditsCharged"] > 0
    assert [r["id"] for r in searched_plural["data"]["results"]] == ["A5"]
    assert "record" not in searched_plural["data"]["results"][0]
    assert similar_json["data"]["matches"][0]["id"] == "A2"
    assert len(similar_json["data"]["matches"]) >= 2
    assert similar_term["data"]["matches"][0]["id"] == "A3"
    assert template in [t["template_id"] for t in listed["data"]["templates"]]
    assert listed["data"]["pagination"]["limit"] == 10
    assert status["data"] == {
        "template_id": template,
        "has_embeddings": True,
        "record_count": 5,
        "status": "ready",
    }
    assert deleted_two["data"]["deleted_count"] == 2
    assert deleted_one["data"] == {
        "template_id": template,
        "deleted_count": 1,
        "record_count": 2,
        "status": "ready",
    }
    assert plain["ok"] and plain["data"]["record_count"] == 2
    assert (from_url["ok"], from_url["status"]) == (False, 400)
    assert "crawling" in from_url["message"]
    assert emptied["data"]["status"] == "empty"
    assert status_after["data"]["has_embeddings"] is False
    assert (missing["ok"], missing["status"]) == (False, 404)
