"""A unit sent as one statement in autocommit (`kit/at_once.py`): all of it or nothing, never
a part of it committed alone, and a turn's end on PostgreSQL in one statement."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from sessionary.billing.ledger import Ledger
from sessionary.billing.metering import Meter
from sessionary.billing.models import CreditReservation
from sessionary.billing.store import _CLOSE, _RESERVE
from sessionary.kit import db as kit_db
from sessionary.kit.at_once import commit_at_once
from sessionary.kit.db import Database
from sessionary.kit.raw_sql import run
from sessionary.kit.wal_flush import FLUSH
from tests.conftest import Tenant
from tests.support.money import another_turn_under_way, charges, money
from tests.support.statements import from_a_request
from tests.test_raw_sql import _hold, _stored
from tests.test_turn_commit import payer, remote, upstream  # noqa: F401  (fixtures)


def _postgres_only(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no round trips to save")


def _open(db: Database, tenant: Tenant, rid: str) -> dict[str, Any]:
    with db.session() as session:
        run(session.connection(), _RESERVE, _hold(tenant, rid))
    with db.single_statements() as session:  # its pool's first connection asks the server
        session.execute(text("SELECT 1"))  # about itself: counted statements come after that
    return {"p_id": rid, "p_status": "settled", "p_now": datetime.now(UTC)}


def _release_before_the_end(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The turn's hold is released (as the sweep of expired holds does) right before the
    statement that ends the turn at once."""
    at_once = Meter.settle_at_once_in

    def released_first(meter: Meter, *args: Any, **kwargs: Any) -> Any:
        with db.session() as session:
            assert Ledger(session).release(meter.reservation.id) is not None
        return at_once(meter, *args, **kwargs)

    monkeypatch.setattr(Meter, "settle_at_once_in", released_first)


def _inserts(tenant: Tenant, *rids: str) -> Any:
    def part(session: Session) -> None:
        for rid in rids:
            run(session.connection(), _RESERVE, _hold(tenant, rid))

    return part


def test_the_rows_and_the_last_statement_commit_together_in_one_statement(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    _postgres_only(db)
    close = _open(db, tenant, "rsv_once_open")
    calls: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(query)[:30])
        return execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    sent, closed = commit_at_once(
        db,
        _inserts(tenant, "rsv_once_1", "rsv_once_2", "rsv_once_3"),
        lambda session: run(session.connection(), _CLOSE, close).first(),
    )
    monkeypatch.undo()
    assert sent and closed is not None and closed.status == "settled"
    # no wait for a flush: that is for an end whose settle committed apart from it (FLUSH_OWED)
    assert calls[0].startswith("WITH held_0 AS (INSERT") and calls[1:] == [], calls
    assert all(_stored(db, f"rsv_once_{n}") is not None for n in (1, 2, 3))
    row = _stored(db, "rsv_once_open")
    assert row is not None and row.status == "settled"


def test_a_failing_statement_writes_nothing_and_says_so(db: Database, tenant: Tenant) -> None:
    """The last statement fails (here a held row is a duplicate key): (False, None), and
    neither the other rows nor the last statement's own change were kept."""
    _postgres_only(db)
    close = _open(db, tenant, "rsv_fail_open")
    _open(db, tenant, "rsv_fail_dup")
    sent, answer = commit_at_once(
        db,
        _inserts(tenant, "rsv_fail_new", "rsv_fail_dup"),
        lambda session: run(session.connection(), _CLOSE, close).first(),
    )
    assert (sent, answer) == (False, None)
    assert _stored(db, "rsv_fail_new") is None
    row = _stored(db, "rsv_fail_open")
    assert row is not None and row.status == "open"


def test_anything_else_in_the_unit_sends_nothing(db: Database, tenant: Tenant) -> None:
    """A statement SQLAlchemy runs, a second raw statement, or no statement for the held rows
    to go with: nothing is sent, not even what was held before it ((False, None)). Without
    this, the held rows would commit on their own in autocommit."""
    _postgres_only(db)
    close = _open(db, tenant, "rsv_else_open")

    def orm_read(session: Session) -> None:
        _inserts(tenant, "rsv_else_1")(session)
        session.scalar(select(CreditReservation.id).limit(1))

    def nothing(_session: Session) -> None:
        return None

    assert commit_at_once(db, orm_read, lambda s: run(s.connection(), _CLOSE, close)) == (
        False,
        None,
    )
    assert commit_at_once(db, _inserts(tenant, "rsv_else_2"), nothing) == (False, None)

    def two(session: Session) -> None:
        run(session.connection(), _CLOSE, close)
        run(session.connection(), _CLOSE, close)

    with pytest.raises(RuntimeError):  # the first went out and committed: never "not sent"
        commit_at_once(db, _inserts(tenant, "rsv_else_3"), two)
    assert _stored(db, "rsv_else_1") is None and _stored(db, "rsv_else_2") is None
    assert _stored(db, "rsv_else_3") is not None


def test_sqlite_sends_nothing_at_once(db: Database, tenant: Tenant) -> None:
    if db.dialect == "postgresql":
        pytest.skip("SQLite only")
    ran: list[str] = []
    assert commit_at_once(db, lambda _s: ran.append("part"), lambda _s: ran.append("rest")) == (
        False,
        None,
    )
    assert ran == []


@pytest.mark.parametrize("others", [False, True], ids=["alone", "others_under_way"])
def test_a_new_sessions_turn_ends_in_one_statement(
    remote: TestClient,  # noqa: F811
    db: Database,
    payer: Tenant,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    others: bool,
) -> None:
    """PostgreSQL: after the first requests of a key, a `/v1/responses` turn on a new session
    sends two statements from the process's synchronous connections: its hold, and its end
    (the session, the two messages, the response and the charge, in one statement), then the
    wait for the end's WAL flush where the end committed without it (`kit/wal_flush.py`), and
    psycopg converts neither's placeholders again (`raw_sql.keep_long_conversions`)."""
    _postgres_only(db)
    for _ in range(3):
        assert remote.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers).is_success
    from psycopg import _queries

    calls: list[str] = []
    converted: list[bytes] = []  # placeholders converted again (psycopg kept no conversion)
    execute, convert = psycopg.Cursor.execute, _queries._query2pg_nocache

    def counted(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if from_a_request():
            calls.append(" ".join(str(query).split())[:40])
        return execute(cursor, query, *args, **kwargs)

    def uncached(query: bytes, *args: Any) -> Any:
        converted.append(query)
        return convert(query, *args)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    monkeypatch.setattr(_queries, "_query2pg_nocache", uncached)
    # No idle ping at checkout: on a slow machine the setup can leave a connection idle past
    # PING_AFTER_IDLE_S, and its `SELECT 1` is not the turn's (tests/test_storage.py tests it).
    monkeypatch.setattr(kit_db, "PING_AFTER_IDLE_S", float("inf"))
    with another_turn_under_way(db, remote) if others else nullcontext():
        answer = remote.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers)
    monkeypatch.undo()
    assert answer.status_code == 200, answer.text
    assert calls[1].startswith("WITH held_0 AS (INSERT INTO conversation"), calls
    apart = others and db.group_flush.apart
    assert calls[2:] == ([" ".join(FLUSH.split())[:40]] if apart else []), calls
    assert converted == []  # the end's statement is long, with many parameters (raw_sql.py)
    stored = remote.get(f"/v1/responses/{answer.json()['id']}", headers=payer.headers)
    assert stored.status_code == 200
    assert len(charges(db, payer)) == 4


def test_a_hold_gone_before_the_end_keeps_the_transcript_once_and_charges_once(
    remote: TestClient,  # noqa: F811
    db: Database,
    payer: Tenant,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL: the turn's hold was released under it (as the sweep of expired holds does):
    the statement sent at once stores the transcript, and its charge, finding no open hold,
    writes nothing; the charge is then made in a transaction, from the balance, once."""
    _postgres_only(db)
    _release_before_the_end(db, monkeypatch)
    answer = remote.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers)
    monkeypatch.undo()
    assert answer.status_code == 200, answer.text
    stored = remote.get(f"/v1/responses/{answer.json()['id']}", headers=payer.headers)
    assert stored.status_code == 200
    items = remote.get(
        f"/v1/conversations/{answer.json()['session_id']}/items", headers=payer.headers
    )
    assert items.status_code == 200 and len(items.json()["data"]) == 2
    charged = charges(db, payer)
    assert len(charged) == 1 and charged[0] > 0
    balance, ledger_sum, holds = money(db, payer)
    assert balance == ledger_sum and holds == 0


def test_an_error_before_the_statement_went_out_is_no_commit(db: Database, tenant: Tenant) -> None:
    """The driver refuses a parameter before sending anything (a lone surrogate cannot be
    encoded): nothing was written, so (False, None) and the usual path may do the work. Taken
    for a committed statement, the error was raised and the usual path never ran."""
    _postgres_only(db)
    close = _open(db, tenant, "rsv_enc_open")

    def part(session: Session) -> None:
        run(session.connection(), _RESERVE, _hold(tenant, "rsv_enc_1", route="\ud800"))

    sent = commit_at_once(db, part, lambda s: run(s.connection(), _CLOSE, close).first())
    assert sent == (False, None)
    assert _stored(db, "rsv_enc_1") is None
    row = _stored(db, "rsv_enc_open")
    assert row is not None and row.status == "open"


def test_a_hold_gone_and_a_charge_refused_keep_no_transcript(
    remote: TestClient,  # noqa: F811
    db: Database,
    payer: Tenant,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL: the hold was released under the turn, and the database refuses its charge
    in the transaction too. The statement sent at once must not have kept the transcript
    without its charge (an answer stored, readable and never paid for): it fails as a whole,
    and the transaction fails whole: an error, no transcript, nothing charged."""
    _postgres_only(db)
    with db.session() as session:
        session.execute(
            text(
                "CREATE FUNCTION refuse_charges() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.kind = 'charge' THEN "
                "RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END IF; "
                "RETURN NEW; END $$"
            )
        )
        session.execute(
            text("CREATE TRIGGER refuse_charges BEFORE INSERT ON credit_ledger "
                 "FOR EACH ROW EXECUTE FUNCTION refuse_charges()")
        )  # fmt: skip
    _release_before_the_end(db, monkeypatch)
    answer = remote.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers)
    monkeypatch.undo()
    assert answer.status_code >= 500, answer.text
    with db.session(write=False) as session:
        kept = session.execute(
            text("SELECT count(*) FROM stored_responses WHERE account_id = :a"),
            {"a": payer.account_id},
        ).scalar()
    assert kept == 0
    assert charges(db, payer) == []
    balance, ledger_sum, holds = money(db, payer)
    assert balance == ledger_sum and holds == 0


def _on_a_stored_session(remote: TestClient, payer: Tenant, face: str) -> tuple[str, Any]:  # noqa: F811
    """A stored session (its id) and a call that makes a turn on it: `/v1/assistant/completion`
    on an assistant session, or `/v1/responses` with `previous_response_id`."""
    if face == "completion":
        made = remote.post("/v1/assistant/session", json={}, headers=payer.headers)
        session_id = made.json()["session_id"]
        body = {"session_id": session_id, "input": "Hi."}
        return session_id, lambda: remote.post(
            "/v1/assistant/completion", json=body, headers=payer.headers
        )
    first = remote.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers).json()
    follow = {"input": "Hi.", "previous_response_id": first["id"]}
    return first["session_id"], lambda: remote.post(
        "/v1/responses", json=follow, headers=payer.headers
    )


def _transcript(db: Database, session_id: str) -> tuple[int, str | None, list[str]]:
    """(messages, last_response_id, stored response ids) of a session."""
    with db.session(write=False) as session:
        count = session.execute(
            text("SELECT count(*) FROM conversation_messages WHERE session_id = :s"),
            {"s": session_id},
        ).scalar()
        last = session.execute(
            text("SELECT last_response_id FROM conversation_sessions WHERE id = :s"),
            {"s": session_id},
        ).scalar()
        stored = session.execute(
            text("SELECT id FROM stored_responses WHERE session_id = :s"), {"s": session_id}
        ).scalars()
        return int(count or 0), last, sorted(stored)


ON_A_STORED_SESSION = pytest.mark.parametrize("face", ["completion", "previous_response_id"])


@ON_A_STORED_SESSION
def test_a_stored_sessions_turn_ends_in_one_statement(
    remote: TestClient,  # noqa: F811
    db: Database,
    payer: Tenant,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    face: str,
) -> None:
    """PostgreSQL: a turn on a stored session ends in one statement too: the session's move to
    this turn (guarded: it must still be there), its two messages, its response and its charge.
    It was five round trips (BEGIN, the move, the rows, the charge, COMMIT). Its plan reads the
    session and its history (and the response it continues from, without that response's
    payload, which can be large): two or three plain statements before the hold."""
    _postgres_only(db)
    session_id, turn = _on_a_stored_session(remote, payer, face)
    for _ in range(2):
        assert turn().is_success
    before, _, responses = _transcript(db, session_id)
    calls: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if from_a_request():
            calls.append(" ".join(str(query).split()))
        return execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    monkeypatch.setattr(kit_db, "PING_AFTER_IDLE_S", float("inf"))
    answer = turn()
    monkeypatch.undo()
    assert answer.status_code == 200, answer.text
    hold = next(n for n, call in enumerate(calls) if call.startswith("WITH spent AS"))
    reads = [call.split(" FROM ")[1].split()[0] for call in calls[:hold]]
    continued = ["stored_responses"] if face == "previous_response_id" else []
    assert reads == [
        *continued,
        "conversation_sessions",
        *(["conversation_messages"] if continued else []),
    ], calls
    assert not [call for call in calls[:hold] if "payload_json" in call], calls
    assert calls[hold + 1].startswith("WITH held_0 AS (UPDATE conversation_sessions"), calls
    assert calls[hold + 2 :] == [], calls
    after, last, stored = _transcript(db, session_id)
    assert after == before + 2
    assert len(stored) == len(responses) + 1 and last == max(stored)
    assert len(charges(db, payer)) == 3 + (face != "completion")
    balance, ledger_sum, holds = money(db, payer)
    assert balance == ledger_sum and holds == 0


@ON_A_STORED_SESSION
def test_a_session_deleted_before_the_end_keeps_no_transcript_and_the_turn_is_paid_once(
    remote: TestClient,  # noqa: F811
    db: Database,
    payer: Tenant,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    face: str,
) -> None:
    """PostgreSQL: the session is deleted after the turn's end was built and before its one
    statement goes out. The guarded move finds nothing, so the messages refuse their missing
    session and the statement writes nothing (no messages in a deleted session, no response
    stored); the usual transaction then charges the turn, once, and the answer is delivered."""
    _postgres_only(db)
    session_id, turn = _on_a_stored_session(remote, payer, face)
    before, last_before, responses = _transcript(db, session_id)
    paid = len(charges(db, payer))
    at_once = Meter.settle_at_once_in
    sent: list[str] = []

    def deleted_first(meter: Meter, *args: Any, **kwargs: Any) -> Any:
        with db.session() as session:
            session.execute(
                text("UPDATE conversation_sessions SET deleted_at = now() WHERE id = :s"),
                {"s": session_id},
            )
        sent.append("deleted")
        return at_once(meter, *args, **kwargs)

    monkeypatch.setattr(Meter, "settle_at_once_in", deleted_first)
    answer = turn()
    monkeypatch.undo()
    assert sent == ["deleted"]  # the end was tried at once, after the delete
    assert answer.status_code == 200, answer.text
    assert _transcript(db, session_id) == (before, last_before, responses)
    charged = charges(db, payer)
    assert len(charged) == paid + 1 and charged[0] > 0
    balance, ledger_sum, holds = money(db, payer)
    assert balance == ledger_sum and holds == 0


def test_a_guard_that_gates_nothing_or_a_second_guard_sends_nothing(
    db: Database, tenant: Tenant
) -> None:
    """A guard (`raw_sql.at_once_guard`) with no held INSERT taking its value would let the rows
    commit whether it matched or not; two guards are not supported: nothing is sent."""
    _postgres_only(db)
    from sessionary.conversations.store import _ADVANCE

    close = _open(db, tenant, "rsv_guard_open")
    move = {"p_id": "sess_none", "p_last": "resp_none", "p_now": datetime.now(UTC)}

    def guarded(twice: bool) -> Any:
        def part(session: Session) -> None:
            run(session.connection(), _ADVANCE, move)
            if twice:
                run(session.connection(), _ADVANCE, move)
            _inserts(tenant, f"rsv_guard_{int(twice)}")(session)

        return part

    for twice in (False, True):
        rest = lambda s: run(s.connection(), _CLOSE, close).first()  # noqa: E731
        assert commit_at_once(db, guarded(twice), rest) == (False, None)
        assert _stored(db, f"rsv_guard_{int(twice)}") is None
    row = _stored(db, "rsv_guard_open")
    assert row is not None and row.status == "open"
