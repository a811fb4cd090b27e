"""Output is never delivered without payment: attacks on the hold, the charge and the price.

Each test replays a way an adversary with a key got streamed output for nothing (or for less),
against a real server process whose model server is a fake at its HTTP boundary. The attacks on
a turn run against both faces that answer turns: `/v1/responses` and `/v1/chat/completions`.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from sessionary.app import create_app
from sessionary.billing.ledger import Ledger, Owner
from sessionary.billing.pricing import Pricing
from sessionary.billing.service import CreditsService
from sessionary.config import Settings
from sessionary.conversations.models import ConversationMessage, StoredResponse
from sessionary.kit.db import Database
from tests.conftest import Tenant, make_tenant
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.money import (
    FACES,
    Face,
    charge_usage,
    charges,
    money,
    open_holds,
    remote_env,
    sse_events,
    wait_for,
)
from tests.test_credits_http import grant

FUNDS = 1_000_000_000  # 1,000 credits
every_face = pytest.mark.parametrize("face", FACES, ids=str)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.chat_mode = "words"
    yield fake
    fake.stop()


def test_deleting_the_thread_during_a_stream_still_charges_what_was_delivered(
    settings_env: dict[str, str], db: Database, upstream: FakeUpstream
) -> None:
    tenant = make_tenant(db, "deleter")
    grant(db, tenant, FUNDS)
    upstream.words, upstream.word_delay = 40, 0.05
    server = LiveServer(remote_env(settings_env, upstream))
    try:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            thread = http.post("/v1/threads", json={}).json()["id"]
            body = {"conversation": thread, "input": "Talk.", "stream": True}
            deltas, last = 0, {}
            with http.stream("POST", "/v1/responses", json=body) as stream:
                for event in sse_events(stream.iter_lines()):
                    if event["type"] == "response.output_text.delta":
                        deltas += 1
                        if deltas == 3:
                            assert http.delete(f"/v1/threads/{thread}").status_code == 200
                    last = event
        assert deltas == 40
        assert last["type"] == "response.completed"
        charged = last["response"]["credits"]["charged"]  # type: ignore[index]
        assert charged > 0
        balance, ledger_sum, holds = money(db, tenant)
        assert balance == ledger_sum == FUNDS - round(charged * 1_000_000)
        assert holds == 0
        assert len(charges(db, tenant)) == 1
        # The transcript is not written into the deleted thread (its savepoint rolled back).
        response_id = last["response"]["id"]  # type: ignore[index]
        with db.session(write=False) as session:
            assert session.get(StoredResponse, response_id) is None
            assert not session.scalars(
                select(ConversationMessage.id).where(ConversationMessage.response_id == response_id)
            ).first()
    finally:
        server.stop()


@every_face
def test_a_turn_that_outlives_its_hold_ttl_keeps_its_hold_and_pays_in_full(
    settings_env: dict[str, str], db: Database, upstream: FakeUpstream, face: Face
) -> None:
    """TTL 2 s and a 6 s stream; meanwhile the owner reserves again (which sweeps expired holds),
    reads its balance and gives all of it away. The stream must still be paid in full."""
    tenant = make_tenant(db, "outliver")
    grant(db, tenant, 10_000 * 1_000_000)
    upstream.words, upstream.word_delay = 60, 0.1
    # Output dear enough that the stream's price (1,500 credits) is felt: its hold is 2,500.
    prices = {"gpt-4o-mini": {"input_usd_per_million": "0", "output_usd_per_million": "100000"}}
    env = remote_env(
        settings_env,
        upstream,
        SESSIONARY_RESERVATION_TTL_SECONDS="2",
        SESSIONARY_PRICING__MODELS=json.dumps(prices),
    )
    server = LiveServer(env)
    user = {"provider": "app", "unique_key": "sink"}
    try:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            assert http.post("/v1/external_users/session", json={"external_user": user}).is_success
            body = face.turn("Talk at length.", stream=True, max_tokens=100)
            last: dict[str, object] = {}
            with http.stream("POST", face.path, json=body) as stream:
                for index, event in enumerate(sse_events(stream.iter_lines())):
                    if index == 40:  # about 3.5 s in: past the TTL
                        upstream.word_delay = 0
                        quick = face.turn("Quick.", max_tokens=100)
                        assert http.post(face.path, json=quick).status_code == 200
                        upstream.word_delay = 0.1
                        left = http.get("/v1/credits").json()["remainingCredits"]
                        gift = {"external_user": user, "input": {"credits": int(left)}}
                        given = http.post("/v1/external_users/credits/grant", json=gift)
                        assert given.status_code == 200, given.text
                    last = event
        assert face.completed(last)
        assert face.output_tokens(last) == 60
        charged = round(face.credits(last)["charged"] * 1_000_000)
        assert charged == 1_500 * 1_000_000  # 60 tokens at $0.10 each, x 100 credits x 2.5
        balance, ledger_sum, holds = money(db, tenant)
        assert balance == ledger_sum
        assert holds == 0
        assert charges(db, tenant).count(charged) == 2  # the stream and the quick turn (+ the gift)
    finally:
        server.stop()


@every_face
def test_a_reader_that_stops_reading_is_cut_off_and_billed_for_what_was_sent(
    settings_env: dict[str, str], db: Database, upstream: FakeUpstream, face: Face
) -> None:
    tenant = make_tenant(db, "staller")
    grant(db, tenant, FUNDS)
    # About 20 MB of events: more than every socket buffer between the server and the reader.
    # Streamed over at least 10 s, so a server that stopped pulling is seen stopping the upstream.
    upstream.words, upstream.word, upstream.word_delay = 10_000, "x" * 2000 + " ", 0.001
    env = remote_env(settings_env, upstream, SESSIONARY_STREAM_WRITE_TIMEOUT_SECONDS="1")
    server = LiveServer(env)
    try:
        payload = json.dumps(face.turn("Flood me.", stream=True, max_tokens=20_000))
        request = (
            f"POST {face.path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tenant.api_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n{payload}"
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
        assert charge_usage(db, tenant).get("cancelled") is True
        # The generation stopped with the reader: the upstream was not read to its end...
        assert upstream.sent < upstream.words
        # ...and the charge covers what was produced, never more than the hold.
        hold = Pricing().assistant_turn("gpt-4o-mini", 1_000, 20_000)
        assert 0 < charged <= hold
        balance, ledger_sum, _ = money(db, tenant)
        assert balance == ledger_sum == FUNDS - charged
    finally:
        server.stop()


def test_expired_holds_go_back_on_their_own_and_reads_never_show_them(
    settings: Settings, db: Database
) -> None:
    tenant = make_tenant(db, "crashed")
    grant(db, tenant, 50_000_000)
    owner = Owner.account(tenant.account_id)
    with db.session() as session:  # a turn whose process died: its hold was never settled
        Ledger(session, reservation_ttl=timedelta(seconds=-1)).reserve(owner, 20_000_000)
    with db.session(write=False) as session:
        assert Ledger(session).balance(owner) == 30_000_000
        # A read already counts the dead hold as returned, before any sweep.
        assert CreditsService(session).balance(owner).remainingCredits == 50.0
    with TestClient(create_app(settings), raise_server_exceptions=False):
        wait_for(lambda: open_holds(db) == 0, timeout=10)  # the sweep at start
    balance, ledger_sum, _holds = money(db, tenant)
    assert balance == ledger_sum == 50_000_000
    from sessionary.billing.metering import HoldKeeper

    assert HoldKeeper(db).tick() == 0  # idempotent: nothing left to release


def test_embedding_holds_are_sized_from_the_tokenizer_not_from_characters(
    client: TestClient, db: Database, tenant: Tenant
) -> None:
    text = "supercalifragilisticexpialidocious " * 100  # 3,500 characters, far fewer tokens
    grant(db, tenant, 200_000)  # 0.2 credits; a per-character hold would need 0.35
    answer = client.post("/v1/embeddings", json={"input": text}, headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    tokens = answer.json()["usage"]["prompt_tokens"]
    assert tokens < len(text) / 2
    balance, ledger_sum, holds = money(db, tenant)
    assert balance == ledger_sum == 200_000 - charges(db, tenant)[0]
    assert holds == 0


@every_face
def test_hanging_up_as_the_turn_is_settled_never_charges_twice(
    settings_env: dict[str, str], db: Database, upstream: FakeUpstream, face: Face
) -> None:
    """The client reads up to the last item and closes, while the final charge commits."""
    tenant = make_tenant(db, "hanger")
    grant(db, tenant, FUNDS)
    upstream.words = 30
    server = LiveServer(remote_env(settings_env, upstream))
    try:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            for _ in range(8):
                with http.stream("POST", face.path, json=face.turn("Hi", stream=True)) as s:
                    for event in sse_events(s.iter_lines()):
                        if face.last_item(event):
                            break  # and hang up
        wait_for(lambda: open_holds(db) == 0)
        with db.session(write=False) as session:
            rows = Ledger(session).store.entries("account", tenant.account_id, limit=1000)
        per_hold: dict[str | None, int] = {}
        for row in rows:
            if row.kind == "charge":
                per_hold[row.reservation_id] = per_hold.get(row.reservation_id, 0) + 1
        assert len(per_hold) == 8 and set(per_hold.values()) == {1}
    finally:
        server.stop()


@every_face
def test_hanging_up_mid_stream_stops_the_model_and_pays_for_what_was_produced(
    settings_env: dict[str, str], db: Database, upstream: FakeUpstream, face: Face
) -> None:
    tenant = make_tenant(db, "hangup")
    grant(db, tenant, FUNDS)
    upstream.words, upstream.word_delay = 200, 0.02
    server = LiveServer(remote_env(settings_env, upstream))
    try:
        body = face.turn("Hi", stream=True, max_tokens=1000)
        with (
            httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http,
            http.stream("POST", face.path, json=body) as s,
        ):
            reserved = round(float(s.headers["x-credits-reserved"]) * 1_000_000)
            for index, _ in enumerate(sse_events(s.iter_lines())):
                if index == 5:
                    break  # and hang up
        wait_for(lambda: charges(db, tenant) and open_holds(db) == 0)
        (charged,) = charges(db, tenant)
        assert 0 < charged < reserved
        assert upstream.sent < upstream.words  # the generation stopped with the client
        assert charge_usage(db, tenant).get("cancelled") is True
        balance, ledger_sum, _ = money(db, tenant)
        assert balance == ledger_sum == FUNDS - charged
    finally:
        server.stop()


@every_face
def test_an_upstream_that_drops_mid_stream_still_charges_what_was_delivered(
    settings_env: dict[str, str], db: Database, upstream: FakeUpstream, face: Face
) -> None:
    tenant = make_tenant(db, "dropped")
    grant(db, tenant, FUNDS)
    upstream.chat_mode = "drop"  # two chunks, then the connection dies
    server = LiveServer(remote_env(settings_env, upstream))
    try:
        with (
            httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http,
            http.stream("POST", face.path, json=face.turn("Hi", stream=True)) as s,
        ):
            events = list(sse_events(s.iter_lines()))
        deltas = [e for e in events if face.text_delta(e)]
        assert len(deltas) == 2 and face.failed(events[-1])
        charged = face.credits(events[-1])["charged"]
        assert charged > 0 and charges(db, tenant) == [round(charged * 1_000_000)]
        balance, ledger_sum, holds = money(db, tenant)
        assert balance == ledger_sum and holds == 0
    finally:
        server.stop()


@every_face
def test_a_remote_prompt_is_held_at_its_byte_count_so_no_script_overspends(
    settings_env: dict[str, str], db: Database, upstream: FakeUpstream, face: Face
) -> None:
    """30,000 CJK characters: about 4 characters a token is a quarter of the truth here."""
    tenant = make_tenant(db, "cjk")
    grant(db, tenant, 1_000_000)  # 1 credit; the prompt's ceiling costs about 3.4
    upstream.words = 3
    server = LiveServer(remote_env(settings_env, upstream))
    try:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            answer = http.post(face.path, json=face.turn("漢" * 30_000))
        assert answer.status_code == 402, answer.text
        assert money(db, tenant) == (1_000_000, 1_000_000, 0)
    finally:
        server.stop()
