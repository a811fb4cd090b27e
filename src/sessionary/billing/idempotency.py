"""Idempotent POSTs: the same key and body replay the first answer; nothing runs or bills twice.

A record is claimed (state `running`) before the request runs, by an insert that only one racer
can win. Only successful answers are kept: a failed request releases its key, so a retry after a
402 top-up or a 5xx runs for real. A running record whose lease ran out (its process died) and a
record past its retention can be claimed anew.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy.orm import Session

from sessionary.billing.idempotency_store import IdempotencyStore
from sessionary.billing.models import IdempotencyRecord
from sessionary.kit.models import utcnow

Outcome = Literal["proceed", "replay", "mismatch", "in_flight"]


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Claim:
    outcome: Outcome
    answer: StoredAnswer | None = None


# Every secret this server hands out: account and external-user keys, login and auth tokens,
# ChatKit client secrets (a type prefix, then 52 base62 characters).
_SECRET = re.compile(rb"(?:sk_sy_|sk_eu_|lt_sy_|at_sy_|ek_)[A-Za-z0-9]{52}")
_QUOTED_SECRET = re.compile(b'"' + _SECRET.pattern + b'"')
REDACTED = b"[redacted: shown once]"


def without_secrets(body: bytes) -> bytes:
    """The answer as it may be kept and replayed: a secret shown once is never stored.

    A field that held a secret becomes `null`; a secret inside a longer string (a login URL)
    is replaced by a marker. A replay therefore gives the object minus its secret.
    """
    if not _SECRET.search(body):
        return body
    return _SECRET.sub(REDACTED, _QUOTED_SECRET.sub(b"null", body))


def stream_succeeded(body: bytes) -> bool:
    """Whether a Server-Sent Events answer ended in success: its last event completed (the
    Responses API), or it ended with `data: [DONE]` (chat completions send it on success only)."""
    if body.rstrip().endswith(b"\ndata: [DONE]") or body.strip() == b"data: [DONE]":
        return True
    last = body.rstrip().rsplit(b"\nevent: ", 1)[-1]
    kind = last.removeprefix(b"event: ").split(b"\n", 1)[0].strip()
    return kind in (b"response.completed", b"response.incomplete", b"done")


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), query.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyService:
    def __init__(self, db: Session, *, retention: timedelta, lease: timedelta) -> None:
        self.store = IdempotencyStore(db)
        self.retention = retention
        self.lease = lease

    def claim(self, scope: str, key: str, print_: str) -> Claim:
        now = utcnow()
        fresh = {
            "fingerprint": print_,
            "state": "running",
            "status_code": None,
            "headers": None,
            "body": None,
            "created_at": now,
            "lease_until": now + self.lease,
            "expires_at": now + self.retention,
        }
        if self.store.try_insert(IdempotencyRecord(scope=scope, key=key, **fresh)):
            return Claim("proceed")
        if self.store.take_over(scope, key, stale_before=now, values=fresh):
            return Claim("proceed")
        return self.look(scope, key, print_)

    def look(self, scope: str, key: str, print_: str) -> Claim:
        record = self.store.get(scope, key)
        if record is None:  # released between our insert attempt and this read: try again
            return Claim("in_flight")
        if record.fingerprint != print_:
            return Claim("mismatch")
        if record.state != "done" or record.status_code is None:
            return Claim("in_flight")
        headers = json.loads(record.headers or "{}")
        return Claim("replay", StoredAnswer(record.status_code, headers, record.body or b""))

    def complete(self, scope: str, key: str, answer: StoredAnswer) -> None:
        headers = dict(answer.headers)
        body = without_secrets(answer.body)
        if body != answer.body:
            headers["idempotent-secret-redacted"] = "true"
        self.store.complete(scope, key, answer.status, json.dumps(headers), body)

    def release(self, scope: str, key: str) -> None:
        self.store.remove(scope, key)

    def purge_expired(self) -> int:
        return self.store.purge_expired(utcnow())
