"""Crash safety: a write load while the server is killed with SIGKILL, again and again.

Every write that was acknowledged (a 2xx came back) must be there afterwards; nothing may be half
applied (ledger sum = cached balance, no reservation left open once expired ones are released,
a template's record_count = its documents); on SQLite `PRAGMA integrity_check` says ok.
SESSIONARY_CRASH_CYCLES sets how many kills (default 10; `make reliability` runs more).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, select, text

from sessionary.billing.ledger import Ledger, Owner
from sessionary.conversations.models import ConversationMessage
from sessionary.kit.db import Database
from sessionary.search.models import EmbeddingTemplate, SearchDocument
from tests.conftest import Tenant
from tests.support.live import LiveServer
from tests.test_credits_http import grant

pytestmark = pytest.mark.slow

CYCLES = int(os.environ.get("SESSIONARY_CRASH_CYCLES", "10"))
WRITERS = 6
USER = {"provider": "crash", "unique_key": "spender"}
CHARGE_USD = "0.0001"  # 0.01 credits a charge


@dataclass
class Acknowledged:
    messages: set[str] = field(default_factory=set)
    records: set[str] = field(default_factory=set)
    charges: int = 0
    attempted_charges: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def writer(base: str, headers: dict[str, str], ids: dict[str, str], seen: Acknowledged, n: int,
           stop: threading.Event) -> None:  # fmt: skip
    """Cycle through the three kinds of writes until the server dies under it."""
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        step = 0
        while not stop.is_set():
            step += 1
            try:
                kind = (n + step) % 3
                if kind == 0:
                    answer = client.post(
                        f"/threads/{ids['thread']}/messages",
                        json={"role": "user", "content": f"w{n}-{step}"},
                    )
                    if answer.status_code == 200:
                        with seen.lock:
                            seen.messages.add(answer.json()["id"])
                elif kind == 1:
                    with seen.lock:
                        seen.attempted_charges += 1
                    answer = client.post(
                        "/external_users/utils/usage_charge",
                        json={"external_user": USER, "cost_usd": CHARGE_USD},
                    )
                    if answer.status_code == 200:
                        with seen.lock:
                            seen.charges += 1
                else:
                    record = f"r{n}-{step}-{time.monotonic_ns()}"
                    answer = client.post(
                        "/chat/update_embedding",
                        json={
                            "template_id": ids["template"],
                            "records": [{"id": record, "t": record}],
                        },
                    )
                    if answer.status_code == 200:
                        with seen.lock:
                            seen.records.add(record)
                if answer.status_code >= 500 and answer.status_code != 503:
                    with seen.lock:
                        seen.errors.append(f"{answer.status_code}: {answer.text[:200]}")
            except httpx.HTTPError:
                if stop.is_set():
                    return
                time.sleep(0.05)


def test_sigkill_under_write_load_loses_nothing_acknowledged(
    settings_env: dict[str, str], db: Database, tenant: Tenant
) -> None:
    grant(db, tenant, 1_000_000_000)
    env = {**settings_env, "SESSIONARY_RESERVATION_TTL_SECONDS": "1"}
    seen = Acknowledged()
    server = LiveServer(env)
    base = f"{server.base_url}/v1"
    with httpx.Client(base_url=base, headers=tenant.headers, timeout=120) as setup:
        setup.post("/external_users/session", json={"external_user": USER})
        setup.post(
            "/external_users/credits/grant",
            json={"external_user": USER, "input": {"credits": 500}},
        ).raise_for_status()
        thread = setup.post("/threads", json={}).json()["id"]
        made = setup.post("/chat/create_embedding", json={"records": [{"id": "seed", "t": "x"}]})
        ids = {"thread": thread, "template": made.json()["template_id"]}
    seen.records.add("seed")
    kills = 0
    try:
        for cycle in range(CYCLES):
            if cycle:
                server = LiveServer(env)
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=writer,
                    args=(f"{server.base_url}/v1", tenant.headers, ids, seen, n, stop),
                )
                for n in range(WRITERS)
            ]
            for t in threads:
                t.start()
            time.sleep(1.0 + (cycle % 3) * 0.4)
            os.killpg(server.process.pid, signal.SIGKILL)  # no shutdown, no flush
            server.process.wait()
            kills += 1
            stop.set()
            for t in threads:
                t.join(timeout=60)
    finally:
        server.stop()

    assert kills == CYCLES >= 1
    assert seen.errors == []
    assert seen.messages and seen.charges and len(seen.records) > 1
    # Once their TTL (1 s here) passes, a restarted server sweeps the orphaned holds back on its
    # own (nobody calls it to); then every invariant holds.
    time.sleep(1.2)
    server = LiveServer(env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with db.session(write=False) as session:
                if Ledger(session).store.count_open_reservations() == 0:
                    break
            time.sleep(0.1)
    finally:
        server.stop()
    with db.session(write=False) as session:
        stored_messages = set(
            session.scalars(
                select(ConversationMessage.id).where(
                    ConversationMessage.session_id == ids["thread"]
                )
            )
        )
        assert seen.messages <= stored_messages
        template = session.get(EmbeddingTemplate, ids["template"])
        assert template is not None
        documents = set(
            session.scalars(
                select(SearchDocument.source_id).where(SearchDocument.template_id == template.id)
            )
        )
        assert seen.records <= documents
        assert template.record_count == len(documents)
        ledger = Ledger(session)
        user_id = session.execute(
            text("SELECT id FROM external_users WHERE unique_key = 'spender'")
        ).scalar_one()
        owner = Owner.external_user(user_id, tenant.account_id)
        assert ledger.balance(owner) == ledger.ledger_sum(owner)
        account = Owner.account(tenant.account_id)
        assert ledger.balance(account) == ledger.ledger_sum(account)
        assert ledger.store.count_open_reservations() == 0
        charges = session.scalar(
            text(
                "SELECT count(*) FROM credit_ledger WHERE owner_id = :o AND kind = 'charge'"
            ).bindparams(o=user_id)
        )
        assert seen.charges <= charges <= seen.attempted_charges
        spent = Decimal(500) - Decimal(ledger.balance(owner)) / 1_000_000
        assert spent == Decimal(charges) * Decimal("0.01")
        if db.dialect == "sqlite":
            assert session.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
        assert session.scalar(select(func.count()).select_from(SearchDocument)) == len(documents)
    print(
        f"crash safety: {kills} SIGKILLs, {len(seen.messages)} messages, {seen.charges} charges, "
        f"{len(seen.records)} records acknowledged; none lost"
    )
