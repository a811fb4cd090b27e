"""`sessionary serve` stopped (SIGTERM) while a stream runs: it waits for running requests at
most `SESSIONARY_SHUTDOWN_GRACE_SECONDS`, then cancels them; a cancelled stream is charged
what it delivered and its hold is given back, as when its client hangs up. Without the bound
(an adversary's finding), a stream kept a stopping server up for as long as it lasted. A turn
cut before its answer gets a 503 in the error envelope (it got uvicorn's plain-text 500), and
background responses get the grace too once the requests have ended (they were cut at once
when no request was open)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from sessionary.kit.db import Database
from tests.conftest import Tenant
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.money import charges, money, remote_env, wait_for
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

FUNDS = 100_000_000


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.chat_mode = "words"
    fake.words, fake.word_delay = 2000, 0.02  # 40 s of stream
    yield fake
    fake.stop()


def test_a_stopping_server_cancels_a_stream_after_its_grace_and_charges_what_it_delivered(
    settings_env: dict[str, str], db: Database, tenant: Tenant, upstream: FakeUpstream
) -> None:
    grant(db, tenant, FUNDS)
    env = remote_env(settings_env, upstream, SESSIONARY_SHUTDOWN_GRACE_SECONDS="1")
    server = LiveServer(env)
    received: list[str] = []

    def read() -> None:
        body = {"input": "Talk.", "stream": True}
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=60) as http:
            try:
                with http.stream("POST", "/v1/responses", json=body) as answer:
                    received.extend(answer.iter_lines())
            except httpx.HTTPError:
                pass  # the server closed the stream

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_for(lambda: upstream.sent >= 20)
        stopping = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=30)
        stopped = time.monotonic() - stopping
    finally:
        server.stop()
        reader.join(timeout=30)
    # uvicorn ends by raising the signal it caught again, once its shutdown is done
    assert server.process.returncode == -signal.SIGTERM, server.log_path.read_text()
    assert "timeout graceful shutdown exceeded" in server.log_path.read_text()
    assert stopped < 10, f"stopped after {stopped:.1f} s, with a grace of 1 s"
    assert upstream.sent < 1000  # the stream was cut short, not run to its end
    assert any("output_text.delta" in line for line in received)
    (charged,) = charges(db, tenant)  # what it delivered, once
    assert charged > 0
    balance, ledger_sum, holds = money(db, tenant)
    assert balance == ledger_sum == FUNDS - charged and holds == 0


def _stop(server: LiveServer) -> float:
    """SIGTERM to the server's process group; how long it took to exit."""
    stopping = time.monotonic()
    os.killpg(server.process.pid, signal.SIGTERM)
    server.process.wait(timeout=60)
    return time.monotonic() - stopping


def test_a_turn_cut_before_its_answer_gets_a_503_in_the_error_envelope(
    settings_env: dict[str, str], db: Database, tenant: Tenant, upstream: FakeUpstream
) -> None:
    grant(db, tenant, FUNDS)
    upstream.delay_seconds = 40  # the model takes 40 s to answer, the grace is 1 s
    env = remote_env(settings_env, upstream, SESSIONARY_SHUTDOWN_GRACE_SECONDS="1")
    server = LiveServer(env)
    answers: list[httpx.Response] = []

    def ask() -> None:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=60) as http:
            answers.append(http.post("/v1/responses", json={"input": "Think."}))

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        wait_for(lambda: upstream.calls)
        stopped = _stop(server)
    finally:
        server.stop()
        asker.join(timeout=30)
    assert stopped < 10, f"stopped after {stopped:.1f} s, with a grace of 1 s"
    (answer,) = answers
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"]["code"] == "server_stopping"
    assert answer.headers["retry-after"] == "1"
    assert charges(db, tenant) == []  # nothing was answered, nothing charged
    balance, ledger_sum, holds = money(db, tenant)
    assert balance == ledger_sum == FUNDS and holds == 0


@pytest.mark.parametrize(
    ("grace", "words", "status"), [(20, 150, "completed"), (1, 2000, "failed")]
)
def test_a_background_response_gets_the_grace_with_no_request_open(
    settings_env: dict[str, str],
    db: Database,
    tenant: Tenant,
    upstream: FakeUpstream,
    grace: int,
    words: int,
    status: str,
) -> None:
    """A background response of 3 s, stopped after about half a second with a grace of 20 s
    and no request open: it completes before the process exits. One of 40 s with a grace of
    1 s: it is cut once the grace is over, failed and charged what it produced."""
    grant(db, tenant, FUNDS)
    upstream.words = words
    env = remote_env(settings_env, upstream, SESSIONARY_SHUTDOWN_GRACE_SECONDS=str(grace))
    server = LiveServer(env)
    try:
        with httpx.Client(base_url=server.base_url, headers=tenant.headers, timeout=30) as http:
            started = http.post("/v1/responses", json={"input": "Talk.", "background": True})
        assert started.status_code == 200, started.text
        wait_for(lambda: upstream.sent >= 20)
        stopped = _stop(server)
    finally:
        server.stop()
    assert stopped < grace + 10, f"stopped after {stopped:.1f} s, with a grace of {grace} s"
    with db.session(write=False) as session:
        stored = session.execute(
            text("SELECT status FROM stored_responses WHERE id = :id"), {"id": started.json()["id"]}
        ).scalar_one()
    assert stored == status, server.log_path.read_text()[-2000:]
    (charged,) = charges(db, tenant)
    assert charged > 0
    balance, ledger_sum, holds = money(db, tenant)
    assert balance == ledger_sum == FUNDS - charged and holds == 0
