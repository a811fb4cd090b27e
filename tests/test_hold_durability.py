"""Holds commit without waiting for the WAL flush on PostgreSQL (`synchronous_commit = off`
for their transaction only); charges, and everything else, wait as before."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from sessionary.billing import ledger as ledger_module
from sessionary.billing.ledger import Ledger, Owner
from sessionary.billing.metering import Meter
from sessionary.kit.db import Database
from sessionary.kit.errors import InsufficientCredits
from tests.conftest import Tenant


def _synchronous_commit(db: Database, **options: Any) -> str:
    with db.session(**options) as session:
        return str(session.execute(text("SHOW synchronous_commit")).scalar())


def test_only_a_hold_skips_the_flush(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL only: SQLite's WAL commits never wait for the disk here")
    assert _synchronous_commit(db) == "on"
    assert _synchronous_commit(db, durable=False) == "off"
    assert _synchronous_commit(db) == "on"  # SET LOCAL: the pooled connection is back to on
    seen: dict[str, list[str]] = {"hold": [], "hold at once": [], "settle": []}
    reserve, settle, at_once = Ledger.reserve, Ledger.settle, ledger_module.hold_at_once

    def spying_reserve(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        seen["hold"].append(str(self.store.db.execute(text("SHOW synchronous_commit")).scalar()))
        return reserve(self, *args, **kwargs)

    def spying_at_once(*args: Any, **kwargs: Any) -> Any:
        row = at_once(*args, **kwargs)  # the setting its own statement made
        seen["hold at once"].append("refused" if row is None else row.synchronous_commit)
        return row

    def spying_settle(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        seen["settle"].append(str(self.store.db.execute(text("SHOW synchronous_commit")).scalar()))
        return settle(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "reserve", spying_reserve)
    monkeypatch.setattr(ledger_module, "hold_at_once", spying_at_once)
    monkeypatch.setattr(Ledger, "settle", spying_settle)
    owner = Owner.account(tenant.account_id)
    with db.session() as session:
        Ledger(session).grant(owner, 1_000)
    reservation = Meter.hold(db, owner, 500, "/v1/responses")  # one statement
    with db.session() as session:
        settled = Meter(db, reservation).settle_in(session, 200, model="m", usage={})
    assert settled.charged_micro == 200
    with pytest.raises(InsufficientCredits):  # refused at once, then by the transaction
        Meter.hold(db, owner, 900, "/v1/responses")
    assert seen == {"hold": ["off"], "hold at once": ["off", "refused"], "settle": ["on"]}
    assert _synchronous_commit(db) == "on"
