"""What the money attacks need: a server whose model is a fake at its HTTP boundary, the ledger's
figures of a tenant, and the two faces that answer turns (Responses, chat completions) driven
alike, so every attack runs against both."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from sessionary.billing.ledger import Ledger, Owner, Reservation
from sessionary.billing.metering import LIVE_HOLDS, Meter
from sessionary.kit.db import Database
from tests.conftest import Tenant
from tests.support.fake_upstream import FakeUpstream

Event = dict[str, Any]


def remote_env(
    settings_env: dict[str, str], upstream: FakeUpstream, **extra: str
) -> dict[str, str]:
    return {
        **settings_env,
        "SESSIONARY_LLM__PROVIDER": "openai",
        "SESSIONARY_LLM__MODEL": "gpt-4o-mini",
        "SESSIONARY_LLM__BASE_URL": upstream.base_url,
        "SESSIONARY_LLM__API": "chat",
        "SESSIONARY_LLM__API_KEY": "sk-upstream",
        "SESSIONARY_LLM__MAX_RETRIES": "0",
        **extra,
    }


def money(db: Database, tenant: Tenant) -> tuple[int, int, int]:
    """(balance, ledger sum, open reservations) of the tenant's account."""
    with db.session(write=False) as session:
        ledger = Ledger(session)
        owner = Owner.account(tenant.account_id)
        return ledger.balance(owner), ledger.ledger_sum(owner), open_holds(db)


@contextmanager
def another_turn_under_way(db: Database, client: TestClient | None = None) -> Iterator[None]:
    """Another turn of this process holding credits, as under load: a turn's end then commits
    apart from its WAL flush on PostgreSQL (`billing/metering._end_apart`). Listed only, never
    written: its hold is a reservation nobody has. `client`: its app also counts that turn's
    request as under way, so a turn's units take the workers, as under load
    (`kit/pg_loop_units.py`)."""
    meter = Meter(db, Reservation("rsv_under_way", Owner.account("acct_under_way"), 0))
    served: Database | None = client.app.state.db if client else None  # type: ignore[attr-defined]
    counted = served.work_under_way if served else None
    if served is not None and counted is not None:
        served.work_under_way = lambda: counted() + 1
    try:
        yield
    finally:
        LIVE_HOLDS.discard(meter.reservation.id)
        if served is not None and counted is not None:
            served.work_under_way = counted


def open_holds(db: Database) -> int:
    with db.session(write=False) as session:
        return Ledger(session).store.count_open_reservations()


def charges(db: Database, tenant: Tenant) -> list[int]:
    with db.session(write=False) as session:
        rows = Ledger(session).store.entries("account", tenant.account_id, limit=1000)
        return [-r.amount_micro for r in rows if r.kind == "charge"]


def charge_usage(db: Database, tenant: Tenant) -> dict[str, Any]:
    """The usage recorded with the tenant's (first) charge."""
    with db.session(write=False) as session:
        rows = Ledger(session).store.entries("account", tenant.account_id)
        usage: dict[str, Any] = json.loads(
            next(r.usage for r in rows if r.kind == "charge") or "{}"
        )
        return usage


def sse_events(lines: Iterator[str]) -> Iterator[Event]:
    """The JSON events of a stream (a chat completion's closing `[DONE]` is no JSON)."""
    for line in lines:
        if line.startswith("data: {"):
            yield json.loads(line[6:])


def wait_for(condition: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@dataclass(frozen=True)
class Face:
    """One route that answers turns, as an attacker drives it: the body of a one-message turn,
    and what its stream's events say."""

    path: str
    make_body: Callable[[str, bool, int | None], dict[str, Any]]
    text_delta: Callable[[Event], bool]  # a piece of the answer's text
    last_item: Callable[[Event], bool]  # the answer's last output, just before the charge
    completed: Callable[[Event], bool]  # the final event of a stream that ended well
    failed: Callable[[Event], bool]  # the final event of a stream whose upstream failed
    credits: Callable[[Event], dict[str, float]]  # what the final event says was charged
    output_tokens: Callable[[Event], int]  # the usage the final event reports

    def turn(self, text: str, *, stream: bool = False, max_tokens: int | None = None) -> Event:
        return self.make_body(text, stream, max_tokens)

    def __str__(self) -> str:
        return self.path


def _responses_body(text: str, stream: bool, max_tokens: int | None) -> Event:
    body: Event = {"input": text, "stream": stream}
    return body if max_tokens is None else {**body, "max_output_tokens": max_tokens}


def _chat_body(text: str, stream: bool, max_tokens: int | None) -> Event:
    body: Event = {"messages": [{"role": "user", "content": text}], "stream": stream}
    if stream:  # the usage comes on the last chunk, beside the charge
        body["stream_options"] = {"include_usage": True}
    return body if max_tokens is None else {**body, "max_tokens": max_tokens}


def _chat_choice(event: Event) -> Event:
    choices = event.get("choices") or [{}]
    choice: Event = choices[0]
    return choice


RESPONSES = Face(
    path="/v1/responses",
    make_body=_responses_body,
    text_delta=lambda e: e["type"] == "response.output_text.delta",
    last_item=lambda e: e["type"] == "response.output_item.done",
    completed=lambda e: e["type"] == "response.completed",
    failed=lambda e: e["type"] == "response.failed",
    credits=lambda e: e["response"]["credits"],
    output_tokens=lambda e: e["response"]["usage"]["output_tokens"],
)
CHAT = Face(
    path="/v1/chat/completions",
    make_body=_chat_body,
    text_delta=lambda e: bool(_chat_choice(e).get("delta", {}).get("content")),
    last_item=lambda e: _chat_choice(e).get("finish_reason") is not None,
    completed=lambda e: e.get("choices") == [] and "credits" in e,
    failed=lambda e: e.get("error", {}).get("type") == "upstream_error",
    credits=lambda e: e["credits"],
    output_tokens=lambda e: e["usage"]["completion_tokens"],
)
FACES = [RESPONSES, CHAT]
