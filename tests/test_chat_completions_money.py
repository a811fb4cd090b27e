"""The money attacks of test_money_attacks.py, on `/v1/chat/completions`: a real server process
whose model server is a fake at its HTTP boundary. Output is never delivered without payment."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sessionary.billing.ledger import Ledger
from sessionary.billing.pricing import Pricing
from sessionary.kit.db import Database
from tests.conftest import make_tenant
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.test_credits_http import grant
from tests.test_money_attacks import charges, money, open_holds, remote_env, wait_for

pytestmark = pytest.mark.slow

FUNDS = 1_000_000_000  # 1,000 credits
HI = [{"role": "user", "content": "Hi"}]


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON events of a chat completions stream (the closing `[DONE]` is no JSON)."""
    for line in lines:
        if line.startswith("data: {"):
            yield json.loads(line[6:])


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.chat_mode = "words"
    yield fake
    fake.stop()


def test_an_upstream_that_drops_mid_stream_sends_an_error_and_charges_what_was_delivered(
    settings_env: dict[str, str], db: Database, upstream: FakeUpstream
) -> None:
    tenant = make_tenant(db, "dropped")
    grant(db, tenant, FUNDS)
    upstream.chat_mode = "drop"  # two chunks, then the connection dies
    server = LiveServer(remote_env(settings_env, upstream))
    try:
        body = {"messages": HI, "stream": True}
        with (
            httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as s,
        ):
            events = list(sse_events(s.iter_lines()))
        deltas = [e for e in events if e.get("choices") and e["choices"][0]["delta"].get("content")]
        assert len(deltas) == 2
        failed = events[-1]
        assert failed["error"]["type"] == "upstream_error"
        charged = failed["credits"]["charged"]
        assert charged > 0 and charges(db, tenant) == [round(charged * 1_000_000)]
        balance, ledger_sum, holds = money(db, tenant)
        assert balance == ledger_sum and holds == 0
    finally:
        server.stop()


def test_hanging_up_mid_stream_stops_the_model_and_pays_for_what_was_produced(
    settings_env: dict[str, str], db: Database, upstream: FakeUpstream
) -> None:
    tenant = make_tenant(db, "hangup")
    grant(db, tenant, FUNDS)
    upstream.words, upstream.word_delay = 200, 0.02
    server = LiveServer(remote_env(settings_env, upstream))
    try:
        body = {"messages": HI, "stream": True, "max_tokens": 1000}
        with (
            httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as s,
        ):
            reserved = round(float(s.headers["x-credits-reserved"]) * 1_000_000)
            for index, _ in enumerate(sse_events(s.iter_lines())):
                if index == 5:
                    break  # and hang up
        wait_for(lambda: charges(db, tenant) and open_holds(db) == 0)
        (charged,) = charges(db, tenant)
        assert 0 < charged < reserved
        assert upstream.sent < upstream.words  # the generation stopped with the client
        with db.session(write=False) as session:
            rows = Ledger(session).store.entries("account", tenant.account_id)
            usage = json.loads(next(r.usage for r in rows if r.kind == "charge") or "{}")
        assert usage.get("cancelled") is True
        balance, ledger_sum, _ = money(db, tenant)
        assert balance == ledger_sum == FUNDS - charged
    finally:
        server.stop()


def test_a_reader_that_stops_reading_is_cut_off_and_billed_for_what_was_sent(
    settings_env: dict[str, str], db: Database, upstream: FakeUpstream
) -> None:
    tenant = make_tenant(db, "staller")
    grant(db, tenant, FUNDS)
    upstream.words, upstream.word, upstream.word_delay = 10_000, "x" * 2000 + " ", 0.001
    env = remote_env(settings_env, upstream, SESSIONARY_STREAM_WRITE_TIMEOUT_SECONDS="1")
    server = LiveServer(env)
    try:
        payload = json.dumps({"messages": HI, "stream": True, "max_tokens": 20_000})
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {tenant.api_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n{payload}"
        ).encode()
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(("127.0.0.1", server.port))
        reader.sendall(request)  # and never read a byte
        try:
            wait_for(lambda: charges(db, tenant) and open_holds(db) == 0, timeout=30)
        finally:
            reader.close()
        (charged,) = charges(db, tenant)
        assert upstream.sent < upstream.words
        hold = Pricing().assistant_turn("gpt-4o-mini", 1_000, 20_000)
        assert 0 < charged <= hold
        balance, ledger_sum, _ = money(db, tenant)
        assert balance == ledger_sum == FUNDS - charged
    finally:
        server.stop()


def test_a_stream_that_outlives_its_hold_ttl_pays_in_full(
    settings_env: dict[str, str], db: Database, upstream: FakeUpstream
) -> None:
    """TTL 2 s, a 5 s stream, and the owner spends meanwhile (which sweeps expired holds)."""
    tenant = make_tenant(db, "outliver")
    grant(db, tenant, 10_000 * 1_000_000)
    upstream.words, upstream.word_delay = 50, 0.1
    prices = {"gpt-4o-mini": {"input_usd_per_million": "0", "output_usd_per_million": "100000"}}
    env = remote_env(
        settings_env,
        upstream,
        SESSIONARY_RESERVATION_TTL_SECONDS="2",
        SESSIONARY_PRICING__MODELS=json.dumps(prices),
    )
    server = LiveServer(env)
    try:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            body = {"messages": HI, "stream": True, "max_tokens": 100}
            events = []
            with http.stream("POST", "/v1/chat/completions", json=body) as stream:
                for index, event in enumerate(sse_events(stream.iter_lines())):
                    if index == 35:  # about 3.5 s in: past the TTL
                        upstream.word_delay = 0
                        quick = {"messages": HI, "max_tokens": 100}
                        assert http.post("/v1/chat/completions", json=quick).status_code == 200
                        upstream.word_delay = 0.1
                    events.append(event)
        charged = round(events[-1]["credits"]["charged"] * 1_000_000)
        assert charged == 1_250 * 1_000_000  # 50 tokens at $0.10 each, x 100 credits x 2.5
        balance, ledger_sum, holds = money(db, tenant)
        assert balance == ledger_sum and holds == 0
        assert sorted(charges(db, tenant)) == [charged, charged]
    finally:
        server.stop()


def test_a_remote_prompt_is_held_at_its_byte_count(
    settings_env: dict[str, str], db: Database, upstream: FakeUpstream
) -> None:
    tenant = make_tenant(db, "cjk")
    grant(db, tenant, 1_000_000)  # 1 credit; the prompt's ceiling costs about 3.4
    upstream.words = 3
    server = LiveServer(remote_env(settings_env, upstream))
    try:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            body = {"messages": [{"role": "user", "content": "漢" * 30_000}]}
            answer = http.post("/v1/chat/completions", json=body)
        assert answer.status_code == 402, answer.text
        assert money(db, tenant) == (1_000_000, 1_000_000, 0)
    finally:
        server.stop()
