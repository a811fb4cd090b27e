"""Credits in Prometheus: what the ledger moved, counted only once the transaction commits.

Movements are noted on the SQLAlchemy session and counted by an `after_commit` hook, so a
rolled-back charge (a failed request) never shows up. Process-wide, like the ledger itself.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter
from sqlalchemy import event
from sqlalchemy.orm import Session

from sessionary.kit.metrics import DOMAIN_REGISTRY, labelled

CREDITS_MOVED = Counter(
    "sessionary_credits_total",
    "Credits moved by committed ledger entries, by kind (charge, grant, refund), owner type "
    "and route.",
    ["kind", "owner_type", "route"],
    registry=DOMAIN_REGISTRY,
)
_KEY = "sessionary_ledger_moves"
_COUNTED = {"charge", "grant", "refund"}


def note(db: Session, kind: str, owner_type: str, route: str | None, micro: int) -> None:
    if kind in _COUNTED:
        db.info.setdefault(_KEY, []).append((kind, owner_type, route or "", abs(micro)))


@event.listens_for(Session, "after_commit")
def _count(db: Session) -> None:
    for kind, owner_type, route, micro in db.info.pop(_KEY, []):
        labelled(CREDITS_MOVED, kind, owner_type, route).inc(micro / 1_000_000)


@event.listens_for(Session, "after_rollback")
def _forget(db: Any) -> None:
    db.info.pop(_KEY, None)
