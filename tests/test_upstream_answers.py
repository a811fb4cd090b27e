"""An upstream's answer is the upstream's word, never a bill: whatever shape it takes, the turn
is charged at most its hold, an answer that cannot be read is a 502 with the hold released, and
no hold outlives its request (the attacks of a review with a hostile model server)."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionary.app import create_app
from sessionary.billing.ledger import Ledger, Owner, Reservation
from sessionary.billing.metering import LIVE_HOLDS, Meter
from sessionary.billing.pricing import Pricing
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.providers import plain_http
from sessionary.providers.party_transport import PARTY_HEADER, PartyTransport
from tests.conftest import Tenant, make_tenant
from tests.support.money import charge_usage, charges, money
from tests.support.threaded import ThreadedServer
from tests.test_credits_http import grant

FUNDS = 100_000_000  # 100 credits


class HostileUpstream:
    """Answers every chat completion and Responses call with `self.answer` (a JSON value) or
    `self.raw` (bytes)."""

    def __init__(self) -> None:
        self.answer: Any = {}
        self.raw: bytes | None = None
        self.media_type = "application/json"
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.reply, methods=["POST"]),
                Route("/v1/responses", self.reply, methods=["POST"]),
            ]
        )
        self.served = ThreadedServer(app)
        self.port = self.served.port
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    async def reply(self, _: Request) -> Response:
        if self.raw is not None:
            return Response(self.raw, media_type=self.media_type)
        return JSONResponse(self.answer)

    def stop(self) -> None:
        self.served.stop()


@pytest.fixture
def hostile() -> Iterator[HostileUpstream]:
    upstream = HostileUpstream()
    yield upstream
    upstream.stop()


def _client(settings: Settings, upstream: HostileUpstream, api: str) -> TestClient:
    llm = settings.llm.model_copy(
        update={"provider": "openai", "model": "gpt-4o-mini", "base_url": upstream.base_url,
                "api": api, "max_retries": 0}
    )  # fmt: skip
    return TestClient(create_app(settings.model_copy(update={"llm": llm})))


@pytest.fixture
def payer(db: Database) -> Tenant:
    tenant = make_tenant(db, "payer")
    grant(db, tenant, FUNDS)
    return tenant


def held(db: Database, tenant: Tenant) -> list[int]:
    """The amounts the tenant's turns held."""
    with db.session(write=False) as session:
        rows = Ledger(session).store.entries("account", tenant.account_id, limit=1000)
    return [-r.amount_micro for r in rows if r.kind == "reservation"]


def chat_answer(content: Any, usage: Any = None, choices: Any = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": "c",
        "object": "chat.completion",
        "choices": choices
        if choices is not None
        else [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
    }  # fmt: skip
    if usage is not None:
        answer["usage"] = usage
    return answer


@pytest.mark.parametrize("route", ["/v1/responses", "/v1/chat/completions"])
def test_a_usage_far_beyond_the_hold_is_charged_the_hold_at_most(
    settings: Settings, db: Database, payer: Tenant, hostile: HostileUpstream, route: str
) -> None:
    hostile.answer = chat_answer("hi", usage={"prompt_tokens": 2**31 - 1, "completion_tokens": 0})
    with _client(settings, hostile, "chat") as client:
        body = {"input": "Hi."} if route == "/v1/responses" else {
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi."}]
        }  # fmt: skip
        assert client.post(route, json=body, headers=payer.headers).status_code == 200
    assert charges(db, payer) == held(db, payer)  # the whole hold, not a credit more
    balance, ledger_sum, holds = money(db, payer)
    assert balance == ledger_sum == FUNDS - held(db, payer)[0] and holds == 0


@pytest.mark.parametrize(
    "answer",
    [
        chat_answer("hi", usage={"prompt_tokens": 10**12, "completion_tokens": 1}),
        chat_answer("hi", usage={"prompt_tokens": -5, "completion_tokens": 1}),
        chat_answer("hi", usage={"prompt_tokens": "many", "completion_tokens": 1}),
        chat_answer("hi", usage={}),
        chat_answer(None, choices="abc"),
        chat_answer(None, choices=[None]),
        chat_answer({"text": "not parts"}),
        chat_answer([{"type": "text", "text": 5}]),
    ],
    ids=["huge", "negative", "text", "empty", "choices-str", "choice-null", "dict", "part-int"],
)
@pytest.mark.parametrize("route", ["/v1/responses", "/v1/chat/completions"])
def test_an_answer_that_cannot_be_read_is_a_502_and_costs_nothing(
    settings: Settings,
    db: Database,
    payer: Tenant,
    hostile: HostileUpstream,
    answer: dict[str, Any],
    route: str,
) -> None:
    hostile.answer = answer
    with _client(settings, hostile, "chat") as client:
        body = {"input": "Hi."} if route == "/v1/responses" else {
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi."}]
        }  # fmt: skip
        refused = client.post(route, json=body, headers=payer.headers)
    assert refused.status_code == 502, refused.text
    assert "unusable answer" in refused.json()["error"]["message"]
    assert charges(db, payer) == []
    assert money(db, payer) == (FUNDS, FUNDS, 0)


def test_text_parts_are_read_and_nul_and_lone_surrogates_replaced(
    settings: Settings, db: Database, payer: Tenant, hostile: HostileUpstream
) -> None:
    hostile.raw = (
        b'{"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", '
        b'"content": [{"type": "text", "text": "a\\u0000b\\ud83dc \\ud83d\\ude00"}]}}]}'
    )
    with _client(settings, hostile, "chat") as client:
        answer = client.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["output_text"] == "a\ufffdb\ufffdc \U0001f600"
        stored = client.get(f"/v1/responses/{answer.json()['id']}", headers=payer.headers)
        assert stored.status_code == 200  # stored on both engines (PostgreSQL refuses NUL)
    assert len(charges(db, payer)) == 1 and money(db, payer)[2] == 0


_CHAT_EVENTS = [
    b'{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": '
    b'[{"index": 0, "delta": {"role": "assistant", "content": "a\\u0000b\\ud83dc \\ud83d\\ude00"}}]}',
    b'{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": '
    b'[{"index": 0, "delta": {}, "finish_reason": "stop"}], '
    b'"usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}',
    b"[DONE]",
]
_RESPONSES_EVENTS = [
    b'{"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", '
    b'"output_index": 0, "content_index": 0, "logprobs": [], "delta": "a\\u0000b\\ud83dc \\ud83d\\ude00"}',
    b'{"type": "response.completed", "sequence_number": 2, "response": {"id": "r", "object": '
    b'"response", "created_at": 0, "model": "m", "status": "completed", "output": [], '
    b'"parallel_tool_calls": true, "tool_choice": "auto", "tools": [], '
    b'"usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5, '
    b'"input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}}',
]


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_streamed_answer_has_nul_and_lone_surrogates_replaced_and_is_stored_and_charged(
    settings: Settings, db: Database, payer: Tenant, hostile: HostileUpstream, api: str
) -> None:
    """Found by an adversary: a lone surrogate in an upstream's stream reached the client, then
    failed the transcript (neither engine stores it) after the deltas, with a partial charge."""
    events = _CHAT_EVENTS if api == "chat" else _RESPONSES_EVENTS
    hostile.raw = b"".join(b"data: " + event + b"\n\n" for event in events)
    hostile.media_type = "text/event-stream"
    body = {"input": "Hi.", "stream": True}
    with _client(settings, hostile, api) as client:
        with client.stream("POST", "/v1/responses", json=body, headers=payer.headers) as answer:
            assert answer.status_code == 200
            text = answer.read().decode()
        assert "response.failed" not in text
        assert "a\\ufffdb\\ufffdc" in text or "a\ufffdb\ufffdc" in text
        done = next(
            json.loads(line[6:])
            for line in text.splitlines()
            if line.startswith("data: ") and '"response.completed"' in line
        )
        assert done["response"]["output_text"] == "a\ufffdb\ufffdc \U0001f600"
        stored = client.get(f"/v1/responses/{done['response']['id']}", headers=payer.headers)
        assert stored.status_code == 200, stored.text
        assert stored.json()["output_text"] == "a\ufffdb\ufffdc \U0001f600"
    assert len(charges(db, payer)) == 1 and money(db, payer)[2] == 0


def test_a_streamed_call_has_lone_surrogates_in_its_arguments_replaced(
    settings: Settings, db: Database, payer: Tenant, hostile: HostileUpstream
) -> None:
    call = (
        b'{"index": 0, "id": "call_1", "type": "function", '
        b'"function": {"name": "lookup", "arguments": "{\\"q\\": \\"x\\ud83d\\"}"}}'
    )
    events = [
        b'{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": '
        b'[{"index": 0, "delta": {"role": "assistant", "tool_calls": [' + call + b"]}}]}",
        _CHAT_EVENTS[1].replace(b'"stop"', b'"tool_calls"'),
        b"[DONE]",
    ]
    hostile.raw = b"".join(b"data: " + event + b"\n\n" for event in events)
    hostile.media_type = "text/event-stream"
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    body = {"input": "Hi.", "stream": True, "tools": [tool]}
    with _client(settings, hostile, "chat") as client:
        with client.stream("POST", "/v1/responses", json=body, headers=payer.headers) as answer:
            text = answer.read().decode()
        done = next(
            json.loads(line[6:])
            for line in text.splitlines()
            if line.startswith("data: ") and '"response.completed"' in line
        )
        (item,) = done["response"]["output"]
        assert item["type"] == "function_call" and item["arguments"] == '{"q": "x\ufffd"}'
        stored = client.get(f"/v1/responses/{done['response']['id']}", headers=payer.headers)
        assert stored.json()["output"][0]["arguments"] == '{"q": "x\ufffd"}'
    assert len(charges(db, payer)) == 1 and money(db, payer)[2] == 0


def test_an_image_nobody_asked_for_is_neither_delivered_nor_charged(
    settings: Settings, db: Database, payer: Tenant, hostile: HostileUpstream
) -> None:
    hostile.answer = {
        "id": "resp_up",
        "object": "response",
        "status": "completed",
        "output": [
            {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "iVBO"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]},
        ],
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }  # fmt: skip
    with _client(settings, hostile, "responses") as client:
        answer = client.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers)
    assert answer.status_code == 200, answer.text
    assert [item["type"] for item in answer.json()["output"]] == ["message"]
    assert charges(db, payer)[0] <= held(db, payer)[0] < 1_000_000  # no image price (~10 credits)


def test_a_hold_whose_meter_is_gone_is_no_longer_kept_alive(db: Database, payer: Tenant) -> None:
    meter = Meter(db, Reservation("rsv_orphan", Owner.account(payer.account_id), 1))
    assert "rsv_orphan" in LIVE_HOLDS.ids()
    del meter
    gc.collect()
    assert "rsv_orphan" not in LIVE_HOLDS.ids()  # it expires back to its owner within the TTL


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_an_answer_without_usage_is_charged_its_output_estimate(
    settings: Settings, db: Database, payer: Tenant, hostile: HostileUpstream, api: str
) -> None:
    """Found in review: a whole Responses answer with no usage was charged its input only, its
    output as 0 tokens (chat completions' answers already counted four characters a token)."""
    text = "x" * 400  # 100 tokens at four characters a token
    hostile.answer = chat_answer(text) if api == "chat" else {
        "id": "resp_up", "object": "response", "status": "completed",
        "output": [{"type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": text}]}],
    }  # fmt: skip
    with _client(settings, hostile, api) as client:
        answer = client.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["output_tokens"] == 100
    assert charge_usage(db, payer)["output_tokens"] == 100
    usage = answer.json()["usage"]
    expected = Pricing(settings.pricing).assistant_turn(
        "gpt-4o-mini", usage["input_tokens"], usage["output_tokens"]
    )
    assert charges(db, payer) == [expected] and money(db, payer)[2] == 0


def test_each_payer_gets_upstream_connections_of_its_own(
    settings: Settings,
    db: Database,
    payer: Tenant,
    hostile: HostileUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kept upstream connections are never shared between payers (`plain_http.py`): every
    non-streamed model call carries its payer, on every route that makes one."""
    other = make_tenant(db, "other")
    grant(db, other, FUNDS)
    parties: list[str] = []
    post = plain_http.Origin.post

    async def recorded(self: Any, target: str, body: bytes, limit: int, party: str = "") -> Any:
        parties.append(party)
        return await post(self, target, body, limit, party)

    monkeypatch.setattr(plain_http.Origin, "post", recorded)
    hostile.answer = chat_answer("hi", usage={"prompt_tokens": 3, "completion_tokens": 1})
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi."}]}
    with _client(settings, hostile, "chat") as client:
        for tenant in (payer, other):
            for route, body in (
                ("/v1/responses", {"input": "Hi."}),
                ("/v1/chat/completions", chat),
                ("/v1/chat/enhance", {"message": "make this better"}),
            ):
                answered = client.post(route, json=body, headers=tenant.headers)
                assert answered.status_code == 200, answered.text
    assert parties == [f"account:{payer.account_id}"] * 3 + [f"account:{other.account_id}"] * 3


_DELTA = (
    b'{"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", '
    b'"output_index": 0, "content_index": 0, "logprobs": [], "delta": "partial"}'
)


def _streamed(
    settings: Settings, hostile: HostileUpstream, api: str, events: list[bytes], payer: Tenant
) -> str:
    """The text of a streamed `/v1/responses` turn whose upstream streams `events` (SSE)."""
    hostile.raw = b"".join(b"data: " + event + b"\n\n" for event in events)
    hostile.media_type = "text/event-stream"
    body = {"input": "Hi.", "stream": True}
    with (
        _client(settings, hostile, api) as client,
        client.stream("POST", "/v1/responses", json=body, headers=payer.headers) as answer,
    ):
        assert answer.status_code == 200
        return answer.read().decode()


_COMPLETED = (
    b'{"type": "response.completed", "sequence_number": 9, "response": {"id": "r", "object": '
    b'"response", "created_at": 0, "model": "m", "status": "completed", "output": [], '
    b'"parallel_tool_calls": true, "tool_choice": "auto", "tools": [], '
    b'"usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5, '
    b'"input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}}'
)
_CHAT_FINISH = (
    b'{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": '
    b'[{"index": 0, "delta": {}, "finish_reason": "stop"}]}'
)
_CHAT_DELTA = (
    b'{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": '
    b'[{"index": 0, "delta": {"role": "assistant", "content": "partial"}}]}'
)


@pytest.mark.parametrize(
    ("api", "answer"),
    [
        ("responses", {"id": "r", "object": "response", "status": "failed", "output": [],
                       "error": {"code": "server_error", "message": "boom"}}),
        ("responses", {"id": "r", "object": "response", "status": "cancelled", "output": []}),
        ("responses", {"error": {"message": "boom"}}),
        ("chat", {"error": {"message": "boom", "type": "server_error"}}),
        ("chat", {"id": "c", "object": "chat.completion", "choices": []}),
        ("chat", {"id": "c", "object": "chat.completion"}),
        ("chat", {"id": "c", "choices": [{"index": 0, "message": None, "finish_reason": None}]}),
        ("chat", {"id": "c", "choices": [{"index": 0, "finish_reason": "error",
                                          "message": {"role": "assistant", "content": None}}]}),
    ],
    ids=["failed", "cancelled", "error-only", "chat-error", "no-choices", "choices-missing",
         "message-null", "finish-error"],
)  # fmt: skip
def test_a_failure_inside_a_200_is_a_502_and_costs_nothing(
    settings: Settings,
    db: Database,
    payer: Tenant,
    hostile: HostileUpstream,
    api: str,
    answer: dict[str, Any],
) -> None:
    """Found by an adversary: a 200 whose body reported a failure (a failed response, an error
    object, no choices) was answered as a completed, empty, stored and charged turn."""
    hostile.answer = answer
    with _client(settings, hostile, api) as client:
        refused = client.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers)
        listed = client.get("/v1/responses", headers=payer.headers)
    assert refused.status_code == 502, refused.text
    assert "model provider failed" in refused.json()["error"]["message"]
    assert charges(db, payer) == [] and money(db, payer) == (FUNDS, FUNDS, 0)
    assert listed.status_code in (200, 404, 405) and "resp_" not in listed.text


@pytest.mark.parametrize(
    ("api", "events"),
    [
        ("responses", [_DELTA, b'{"type": "response.failed", "sequence_number": 2, "response": '
                       b'{"id": "r", "object": "response", "created_at": 0, "model": "m", '
                       b'"status": "failed", "output": [], "parallel_tool_calls": true, '
                       b'"tool_choice": "auto", "tools": [], "error": {"code": "server_error", '
                       b'"message": "boom"}}}']),
        ("responses", [_DELTA, b'{"type": "error", "sequence_number": 2, "code": "server_error", '
                       b'"message": "boom", "param": null}']),
        ("responses", [_DELTA]),
        ("chat", [_CHAT_DELTA]),
        ("chat", [_CHAT_DELTA, b"[DONE]"]),
        ("responses", [_DELTA, _COMPLETED.replace(b'"completed", "output"', b'"failed", "output"')]),
        ("responses", [_DELTA, _COMPLETED.replace(b'"output": []', b'"output": [], "error": '
                                                  b'{"code": "server_error", "message": "boom"}')]),
        ("chat", [_CHAT_DELTA, b'{"id": "c", "object": "chat.completion.chunk", "created": 0, '
                  b'"model": "m", "choices": null}']),
    ],
    ids=["failed", "error-event", "no-end", "chat-no-finish", "chat-done-no-finish",
         "completed-but-failed", "completed-with-error", "chat-choices-null"],
)  # fmt: skip
def test_a_stream_whose_upstream_failed_or_never_ended_ends_in_response_failed(
    settings: Settings,
    db: Database,
    payer: Tenant,
    hostile: HostileUpstream,
    api: str,
    events: list[bytes],
) -> None:
    """Found by an adversary: an upstream's `response.failed`, an `error` event, or a stream
    that stopped without its final event ended the client's stream with `response.completed`,
    the partial text stored and charged as a whole answer. It ends as a cut stream does: with
    `response.failed`, what was delivered charged once, no hold left."""
    text = _streamed(settings, hostile, api, events, payer)
    kinds = [
        json.loads(line[6:])["type"] for line in text.splitlines() if line.startswith("data: {")
    ]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    assert "model provider failed" in text and "Internal server error" not in text
    assert len(charges(db, payer)) <= 1
    balance, ledger_sum, holds = money(db, payer)
    assert balance == ledger_sum and holds == 0


def test_each_payer_gets_sdk_connections_of_its_own_for_streams(
    settings: Settings,
    db: Database,
    payer: Tenant,
    hostile: HostileUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Streamed turns go through the SDK: its connections are per payer too
    (`party_transport.py`), and the payer's name never reaches the upstream."""
    other = make_tenant(db, "other")
    grant(db, other, FUNDS)
    parties: list[str] = []
    handle = PartyTransport.handle_async_request

    async def recorded(self: Any, request: Any) -> Any:
        parties.append(request.headers.get(PARTY_HEADER, ""))
        response = await handle(self, request)
        assert PARTY_HEADER not in request.headers
        return response

    monkeypatch.setattr(PartyTransport, "handle_async_request", recorded)
    hostile.raw = b"".join(b"data: " + event + b"\n\n" for event in _CHAT_EVENTS)
    hostile.media_type = "text/event-stream"
    with _client(settings, hostile, "chat") as client:
        for tenant in (payer, other):
            body = {"input": "Hi.", "stream": True}
            with client.stream("POST", "/v1/responses", json=body, headers=tenant.headers) as got:
                assert got.status_code == 200 and "response.completed" in got.read().decode()
    assert parties == [f"account:{payer.account_id}", f"account:{other.account_id}"]


@pytest.mark.parametrize(
    ("api", "events"),
    [
        ("responses", [_DELTA, _COMPLETED, _DELTA.replace(b'"partial"', b'"AFTER"')]),
        ("chat", [_CHAT_DELTA, _CHAT_FINISH, _CHAT_DELTA.replace(b'"partial"', b'"AFTER"'),
                  b"[DONE]"]),
    ],
    ids=["responses", "chat"],
)  # fmt: skip
def test_nothing_after_a_streams_final_event_is_the_answers(
    settings: Settings,
    db: Database,
    payer: Tenant,
    hostile: HostileUpstream,
    api: str,
    events: list[bytes],
) -> None:
    """Found by an adversary: deltas after `response.completed`, or content after a chat
    stream's `finish_reason`, were delivered and stored as the answer's."""
    text = _streamed(settings, hostile, api, events, payer)
    done = [json.loads(line[6:]) for line in text.splitlines() if '"response.completed"' in line]
    assert done and done[0]["response"]["output_text"] == "partial"
    assert "AFTER" not in text


def test_a_stream_without_usage_is_charged_at_least_four_characters_a_token(
    settings: Settings, db: Database, payer: Tenant, hostile: HostileUpstream
) -> None:
    """Found by an adversary: 60,000 characters in three deltas, with no usage, were charged
    as three tokens (a token a chunk); it is the whole hold now, as the whole answer's is."""
    big = b'"' + b"x" * 20_000 + b'"'
    events = [_CHAT_DELTA.replace(b'"partial"', big)] * 3 + [_CHAT_FINISH, b"[DONE]"]
    assert "response.completed" in _streamed(settings, hostile, "chat", events, payer)
    assert charges(db, payer) == held(db, payer)  # 15,000 tokens' worth, capped by the hold
