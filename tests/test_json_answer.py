"""Answers are rendered by orjson (kit/json_answer.py) and read exactly as the json module's
rendering did; what orjson refuses still renders through the json module."""

from __future__ import annotations

import json
import math

import orjson
from starlette.responses import JSONResponse

from sessionary.kit.json_answer import JSONAnswer, json_bytes, json_text


def test_the_same_json_as_the_json_module_for_what_both_render() -> None:
    payload = {
        "text": 'Grünerløkka \u2013 2 rom, «lys» \u2028 "quoted" \\ 😀',
        "score": 0.1 + 0.2,
        "small": 1e-7,
        "big": 2**63 - 1,
        "nested": [{"a": None, "b": True, "c": []}, -0.0, 3],
    }
    body = JSONAnswer(payload).body
    assert json.loads(body) == json.loads(JSONResponse(payload).body) == payload
    assert b'"small":1e-7,' in body  # orjson's spelling (the json module writes 1e-07)


def test_what_orjson_refuses_renders_through_the_json_module() -> None:
    huge = {"id": 10**30, "nested": {"n": -(2**70)}}  # a stored record may hold these
    assert JSONAnswer(huge).body == JSONResponse(huge).body
    assert json.loads(JSONAnswer(huge).body) == huge
    keyed = {1: "int key"}
    assert json.loads(JSONAnswer(keyed).body) == {"1": "int key"}


def test_a_float_that_is_not_a_number_is_null() -> None:
    assert json.loads(JSONAnswer({"x": math.nan, "y": math.inf}).body) == {"x": None, "y": None}
    # beside an integer orjson refuses, on the json module's path too (it raised: a 500)
    mixed = {"record": {"note": [math.nan, -math.inf], "id": 2**70}}
    assert json.loads(JSONAnswer(mixed).body) == {"record": {"note": [None, None], "id": 2**70}}


def test_stored_json_text_reads_back_as_the_json_module_wrote_it() -> None:
    """`json_text` (a turn's payload and messages, kept as text): what the json module's text
    read back as, orjson's reads back as too; what orjson refuses (a 70-bit integer, a lone
    surrogate, an integer key) takes the json module, escaped so that PostgreSQL can store it;
    NaN is `null` on both paths, as the answer showed it."""
    plain = {"text": "Grünerløkka 😀 \u2028", "n": [1, 2.5, None, True], "usage": {"t": 3}}
    assert json.loads(json_text(plain)) == json.loads(json.dumps(plain)) == plain
    assert json_text(plain) == orjson.dumps(plain).decode()
    refused = {"id": 2**70, "lone": "\ud83d", 7: "int key"}
    text = json_text(refused)
    assert json.loads(text) == json.loads(json.dumps(refused))
    assert text.encode("utf-8") and "\\ud83d" in text  # escaped: valid UTF-8 to store
    assert json.loads(json_text({"x": math.nan, "big": 2**70})) == {"x": None, "big": 2**70}
    assert json.loads(json_text({"x": math.inf})) == {"x": None}


def test_a_request_body_for_a_model_reads_back_as_the_json_module_wrote_it() -> None:
    """`json_bytes` (`providers/json_post.py`'s body): UTF-8 where the json module escaped, the
    same values; a 70-bit integer exact, through the json module."""
    body = {"input": [{"role": "user", "content": "Grünerløkka 😀 \u2028"}], "seed": 2**62}
    sent = json_bytes(body)
    assert json.loads(sent) == json.loads(json.dumps(body)) == body
    assert "Grünerløkka 😀".encode() in sent
    huge = {"metadata": {"n": -(2**70)}, "temperature": 0.1 + 0.2}
    assert json.loads(json_bytes(huge)) == huge
