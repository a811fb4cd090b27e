"""`sessionary serve` stopped (SIGTERM) while a stream runs: it waits for running requests at
most `SESSIONARY_SHUTDOWN_GRACE_SECONDS`, then cancels them; a cancelled stream is charged
what it delivered and its hold is given back, as when its client hangs up. Without the bound
(an adversary's finding), a stream kept a stopping server up for as long as it lasted."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

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
