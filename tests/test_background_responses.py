"""Background responses on real server processes: queued, polled, cancelled, resumed, killed.

The model server is a fake at its HTTP boundary that streams words slowly, so a turn is still
running while the test polls it, cancels it, or kills the process running it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from sessionary.billing.ledger import Ledger
from sessionary.billing.pricing import Pricing
from sessionary.conversations.models import StoredResponse
from sessionary.kit.db import Database
from tests.conftest import Tenant, make_tenant
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.openai_shapes import strict_event, strict_response
from tests.test_auth import assert_error
from tests.test_credits_http import grant
from tests.test_money_attacks import charges, money, open_holds, remote_env, sse_events, wait_for

pytestmark = pytest.mark.slow

FUNDS = 1_000_000_000  # 1,000 credits
FAST = {"SESSIONARY_BACKGROUND_HEARTBEAT_SECONDS": "0.5"}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.chat_mode = "words"
    yield fake
    fake.stop()


@pytest.fixture
def tenant(db: Database) -> Tenant:
    made = make_tenant(db, "background")
    grant(db, made, FUNDS)
    return made


def poll(http: httpx.Client, response_id: str, timeout: float = 30) -> dict[str, Any]:
    """The response once it has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = http.get(f"/v1/responses/{response_id}")
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        if body["status"] not in ("queued", "in_progress"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{response_id} still running after {timeout}s")


def stored(db: Database, response_id: str) -> StoredResponse:
    with db.session(write=False) as session:
        row = session.get(StoredResponse, response_id)
        assert row is not None
        session.expunge(row)
        return row


def turn_cost(usage: dict[str, int], hold: int) -> int:
    """What a turn with this usage costs (never more than its hold)."""
    price = Pricing().assistant_turn("gpt-4o-mini", usage["input_tokens"], usage["output_tokens"])
    return min(price, hold)


def test_a_background_response_is_queued_at_once_and_polled_to_its_end(
    settings_env: dict[str, str], db: Database, tenant: Tenant, upstream: FakeUpstream
) -> None:
    upstream.words, upstream.word_delay = 20, 0.05
    server = LiveServer(remote_env(settings_env, upstream, **FAST))
    try:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            made = http.post("/v1/responses", json={"input": "Talk.", "background": True})
            assert made.status_code == 200, made.text
            queued = made.json()
            assert queued["status"] == "queued" and queued["background"] is True
            strict_response(queued)
            assert float(made.headers["x-credits-reserved"]) > 0
            # A turn continuing from it waits for it to end: no silent loss of its history.
            early = http.post(
                "/v1/responses", json={"input": "And?", "previous_response_id": queued["id"]}
            )
            assert_error(early, 400, "response_in_progress")
            done = poll(http, queued["id"])
            strict_response(done)
            assert done["status"] == "completed" and done["background"] is True
            assert done["output_text"] == "word " * 20
            # Stored with its transcript, like any turn: it can be continued and listed.
            items = http.get(f"/v1/responses/{queued['id']}/input_items").json()["data"]
            assert items and items[0]["content"][0]["text"] == "Talk."
            follow = {"input": "More.", "previous_response_id": queued["id"]}
            assert http.post("/v1/responses", json=follow).status_code == 200
            # Cancelling an ended response answers it as it is.
            again = http.post(f"/v1/responses/{queued['id']}/cancel")
            assert again.status_code == 200 and again.json()["status"] == "completed"
            # Only background responses can be cancelled.
            plain = http.post("/v1/responses", json={"input": "Hi."}).json()
            assert_error(http.post(f"/v1/responses/{plain['id']}/cancel"), 400)
            assert_error(http.get(f"/v1/responses/{plain['id']}?stream=true"), 400)
        assert len(charges(db, tenant)) == 3
        balance, ledger_sum, holds = money(db, tenant)
        assert balance == ledger_sum == FUNDS - sum(charges(db, tenant)) and holds == 0
    finally:
        server.stop()


def test_background_needs_store_and_the_responses_api(
    settings_env: dict[str, str], db: Database, tenant: Tenant, upstream: FakeUpstream
) -> None:
    server = LiveServer(remote_env(settings_env, upstream, **FAST))
    try:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            body = {"input": "Hi.", "background": True, "store": False}
            assert_error(http.post("/v1/responses", json=body), 400, "background_requires_store")
            session = http.post("/v1/assistant/session", json={}).json()["session_id"]
            samsar = {"session_id": session, "message": "Hi.", "background": True}
            assert_error(http.post("/v1/assistant/completion", json=samsar), 400)
            assert_error(http.get("/v1/responses/resp_01ZZZZZZZZZZZZZZZZZZZZZZZZ/cancel"), 405)
            missing = "/v1/responses/resp_01ZZZZZZZZZZZZZZZZZZZZZZZZ"
            assert_error(http.get(f"{missing}?starting_after=3"), 400)  # needs stream=true
            assert_error(http.get(f"{missing}?stream=true&starting_after=3"), 404)
            assert_error(http.post(f"{missing}/cancel"), 404)
        assert charges(db, tenant) == [] and open_holds(db) == 0
    finally:
        server.stop()


def test_cancel_stops_the_generation_and_charges_what_was_produced(
    settings_env: dict[str, str], db: Database, tenant: Tenant, upstream: FakeUpstream
) -> None:
    upstream.words, upstream.word_delay = 400, 0.02
    server = LiveServer(remote_env(settings_env, upstream, **FAST))
    try:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            body = {"input": "Talk at length.", "background": True, "max_output_tokens": 2000}
            made = http.post("/v1/responses", json=body)
            hold = round(float(made.headers["x-credits-reserved"]) * 1_000_000)
            response_id = made.json()["id"]
            wait_for(lambda: upstream.sent >= 30)
            cancelled = http.post(f"/v1/responses/{response_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            payload = cancelled.json()
            strict_response(payload)
            assert payload["status"] == "cancelled"
            sent = upstream.sent
            time.sleep(0.5)
            assert upstream.sent - sent <= 1 < upstream.words - upstream.sent  # it stopped
            text = payload["output_text"]
            assert text and text == "word " * (len(text) // 5)
            assert payload["output"][0]["status"] == "incomplete"
            assert poll(http, response_id) == payload
            assert http.post(f"/v1/responses/{response_id}/cancel").json() == payload
        (charged,) = charges(db, tenant)
        assert 0 < charged == turn_cost(payload["usage"], hold) < hold
        balance, ledger_sum, holds = money(db, tenant)
        assert balance == ledger_sum == FUNDS - charged and holds == 0
    finally:
        server.stop()


def test_a_background_stream_is_resumed_from_where_it_was_left(
    settings_env: dict[str, str], db: Database, tenant: Tenant, upstream: FakeUpstream
) -> None:
    """The SDK's own calls: create(background, stream), then retrieve(stream, starting_after)."""
    upstream.words, upstream.word_delay = 30, 0.05
    server = LiveServer(remote_env(settings_env, upstream, **FAST))
    try:
        sdk = openai.OpenAI(api_key=tenant.api_key, base_url=f"{server.base_url}/v1")
        first: list[Any] = []
        with sdk.responses.create(
            model="gpt-4o-mini", input="Talk.", background=True, stream=True
        ) as stream:
            for event in stream:
                first.append(event)
                if event.sequence_number == 7:
                    break  # the connection drops
        assert first[0].type == "response.created" and first[0].response.status == "queued"
        response_id = first[0].response.id
        rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=7))
        numbers = [e.sequence_number for e in first + rest]
        assert numbers == list(range(len(numbers)))
        assert rest[-1].type == "response.completed"
        assert rest[-1].response.output_text == "word " * 30
        deltas = [e.delta for e in first + rest if e.type == "response.output_text.delta"]
        assert "".join(deltas) == "word " * 30
        # From the start, raw, every event strictly of the SDK's types.
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            with http.stream("GET", f"/v1/responses/{response_id}?stream=true") as replay:
                events = list(sse_events(replay.iter_lines()))
            assert [e["sequence_number"] for e in events] == numbers
            for event in events:
                strict_event(event)
        assert len(charges(db, tenant)) == 1 and open_holds(db) == 0
    finally:
        server.stop()


def test_sigkill_during_a_background_turn_leaves_it_failed_and_the_balance_exact(
    settings_env: dict[str, str], db: Database, tenant: Tenant, upstream: FakeUpstream
) -> None:
    upstream.words, upstream.word_delay = 1000, 0.02
    env = remote_env(settings_env, upstream, **FAST)
    server = LiveServer(env)
    try:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            queued = http.post("/v1/responses", json={"input": "Talk.", "background": True})
            response_id = queued.json()["id"]
            wait_for(lambda: upstream.sent >= 20)
        os.killpg(server.process.pid, signal.SIGKILL)  # no shutdown, no settling
        server.process.wait()
        assert stored(db, response_id).status == "in_progress"
        assert open_holds(db) == 1
        server = LiveServer(env)  # its sweep finds the dead owner's response
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            failed = poll(http, response_id)
        strict_response(failed)
        assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
        balance, ledger_sum, holds = money(db, tenant)
        assert balance == ledger_sum == FUNDS and holds == 0  # the hold released, not expired
        assert charges(db, tenant) == []
    finally:
        server.stop()


def test_two_server_processes_share_background_responses(
    settings_env: dict[str, str], db: Database, tenant: Tenant, upstream: FakeUpstream
) -> None:
    """Two processes on one database: a response made through either is read, streamed and
    cancelled through the other (its owner stops within a heartbeat's poll)."""
    upstream.words, upstream.word_delay = 300, 0.02
    env = remote_env(settings_env, upstream, **FAST)
    servers = [LiveServer(env), LiveServer(env)]
    try:
        clients = [
            httpx.Client(base_url=s.base_url, headers=tenant.headers, timeout=30) for s in servers
        ]
        made: list[tuple[int, str]] = []
        for maker in (0, 1, 0, 1):
            body = {"input": "Talk.", "background": True, "max_output_tokens": 500}
            answer = clients[maker].post("/v1/responses", json=body)
            assert answer.status_code == 200, answer.text
            made.append((maker, answer.json()["id"]))
        owners = {stored(db, r).owner_process for _, r in made}
        assert len(owners) == 2, owners
        for maker, response_id in made:
            other = clients[1 - maker]
            assert other.get(f"/v1/responses/{response_id}").json()["status"] == "in_progress"
            with other.stream("GET", f"/v1/responses/{response_id}?stream=true") as replay:
                for event in sse_events(replay.iter_lines()):
                    if event["type"] == "response.output_text.delta":
                        break  # the other process follows the owner's events as they come
            started = time.monotonic()
            cancelled = other.post(f"/v1/responses/{response_id}/cancel")
            assert cancelled.json()["status"] == "cancelled", cancelled.text
            assert time.monotonic() - started < 5
            assert clients[maker].get(f"/v1/responses/{response_id}").json() == cancelled.json()
            with other.stream("GET", f"/v1/responses/{response_id}?stream=true") as replay:
                events = list(sse_events(replay.iter_lines()))  # ends by itself: cancelled
            assert [e["sequence_number"] for e in events] == list(range(len(events)))
        for client in clients:
            client.close()
        wait_for(lambda: open_holds(db) == 0)
        balance, ledger_sum, _ = money(db, tenant)
        assert balance == ledger_sum == FUNDS - sum(charges(db, tenant))
        with db.session(write=False) as session:
            rows = Ledger(session).store.entries("account", tenant.account_id, limit=1000)
        per_hold = [r.reservation_id for r in rows if r.kind == "charge"]
        assert len(per_hold) == len(set(per_hold)) == 4
        with db.session(write=False) as session:
            ids = [r for _, r in made]
            statuses = set(
                session.scalars(select(StoredResponse.status).where(StoredResponse.id.in_(ids)))
            )
        assert statuses == {"cancelled"}
    finally:
        for server in servers:
            server.stop()


def test_a_server_that_stops_ends_its_background_responses_and_charges_what_they_made(
    settings_env: dict[str, str], db: Database, tenant: Tenant, upstream: FakeUpstream
) -> None:
    upstream.words, upstream.word_delay = 1000, 0.02  # 20 s
    grace = {"SESSIONARY_SHUTDOWN_GRACE_SECONDS": "1"}  # background responses get it too
    server = LiveServer(remote_env(settings_env, upstream, **FAST, **grace))
    try:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            queued = http.post("/v1/responses", json={"input": "Talk.", "background": True})
            response_id = queued.json()["id"]
            wait_for(lambda: upstream.sent >= 20)
    finally:
        server.stop()  # SIGTERM: a graceful stop, its grace shorter than the response
    row = stored(db, response_id)
    payload = json.loads(row.payload_json)
    assert row.status == payload["status"] == "failed"
    assert payload["error"]["code"] == "server_error" and payload["output_text"]
    (charged,) = charges(db, tenant)
    assert charged == turn_cost(payload["usage"], charged + 1)
    balance, ledger_sum, holds = money(db, tenant)
    assert balance == ledger_sum == FUNDS - charged and holds == 0


def test_a_response_failed_elsewhere_is_stopped_here_as_lost(db: Database) -> None:
    """The heartbeat finds one of this process's running responses no longer its own (another
    process failed it as stale): its job is stopped, from the event loop, where its cancel
    scope lives (cancelling it from the heartbeat's worker thread raised, and the job ran on)."""
    import anyio

    from sessionary.assistant.background import BackgroundRuns, _Job

    runs = BackgroundRuns(db)

    async def scenario() -> _Job:
        job = _Job("resp_failed_elsewhere")
        runs.jobs[job.response_id] = job
        with job.scope:
            assert await runs.beat() == 0
            await anyio.sleep(5)  # cancelled at once
        return job

    began = time.monotonic()
    job = anyio.run(scenario)
    assert job.reason == "lost" and job.scope.cancelled_caught
    assert time.monotonic() - began < 4
