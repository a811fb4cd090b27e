"""PostgreSQL's units on the event loop (`kit/pg_loop_units.py`): taken only by a request that is
its process's only one, and given up, from the unit's start, for a worker whenever the unit
would wait on a lock, with every turn still stored once and charged once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from sessionary.kit import pg_loop_units
from sessionary.kit.db import Database
from sessionary.kit.pg_loop_units import PgLoopUnits
from tests.conftest import Tenant, check_money
from tests.support.fake_upstream import FakeUpstream
from tests.support.money import charges
from tests.test_search import create, post
from tests.test_search import funded as funded
from tests.test_turn_commit import payer, remote, upstream  # noqa: F401  (fixtures)

HELD_S = 0.6  # how long a test holds a row lock: far past `LOCK_WAIT_MS`


@pytest.fixture
def postgres_only(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL's loop units (SQLite's: tests/test_loop_units.py)")


@pytest.fixture
def served(postgres_only: None, remote: TestClient) -> TestClient:  # noqa: F811
    return remote


def _units(client: TestClient) -> PgLoopUnits:
    units = client.app.state.db.pg_loop  # type: ignore[attr-defined]
    assert isinstance(units, PgLoopUnits)
    return units


def _turn(client: TestClient, tenant: Tenant, **extra: Any) -> Any:
    answer = client.post("/v1/responses", json={"input": "Hi.", **extra}, headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


@contextmanager
def locked(db: Database, sql: str, **params: Any) -> Iterator[None]:
    """The rows `sql` selects, locked by another connection (`FOR UPDATE`) for the block."""
    with db.engine.connect() as connection, connection.begin():
        assert connection.execute(text(sql + " FOR UPDATE"), params).first() is not None
        yield


def _messages(db: Database, session_id: str) -> int:
    with db.engine.connect() as connection:
        found = connection.execute(
            text("SELECT count(*) FROM conversation_messages WHERE session_id = :s"),
            {"s": session_id},
        )
        return int(found.scalar_one())


def test_a_turn_alone_runs_both_its_units_on_the_loop(
    served: TestClient,
    db: Database,
    payer: Tenant,  # noqa: F811
) -> None:
    units = _units(served)
    _turn(served, payer)  # the process's first units: connections opened, statements compiled
    ran, away = units.ran, units.sent_away
    _turn(served, payer)
    assert (units.ran - ran, units.sent_away - away) == (2, 0)  # plan and hold; the end
    assert len(charges(db, payer)) == 2
    check_money(db)


def test_with_another_request_under_way_units_keep_to_the_workers(
    served: TestClient,
    db: Database,
    payer: Tenant,  # noqa: F811
) -> None:
    """A second request running meanwhile (a stream, a slow search) would wait for the loop
    through every round trip of a unit run there."""
    units = _units(served)
    served.app.state.db.work_under_way = lambda: 2  # type: ignore[attr-defined]
    ran = units.ran
    _turn(served, payer)
    assert units.ran == ran
    assert len(charges(db, payer)) == 1
    check_money(db)


def test_a_balance_locked_elsewhere_sends_the_hold_to_a_worker_and_the_loop_stays_free(
    served: TestClient,
    db: Database,
    payer: Tenant,  # noqa: F811
) -> None:
    """The hold meets its owner's balance row locked by another connection: after
    `LOCK_WAIT_MS` the unit goes, from its start, to a worker, which waits for the lock while
    the loop answers another request; the turn then ends 200, charged once, and the next units
    take the workers for `PAUSE_S`."""
    units = _units(served)
    _turn(served, payer)
    away = units.sent_away
    with ThreadPoolExecutor(2) as pool:
        with locked(db, "SELECT 1 FROM credit_balances WHERE account_id = :a", a=payer.account_id):
            began = time.monotonic()
            turn = pool.submit(_turn, served, payer)
            while units.sent_away == away and time.monotonic() - began < 2:
                time.sleep(0.01)
            # Asked from a thread: a loop held by the lock answers only once it is released.
            probe = pool.submit(served.get, "/v1/models", headers=payer.headers)
            answered = wait([probe], timeout=HELD_S / 2).done
            time.sleep(HELD_S)
            still_waiting = not turn.done()  # the worker waits for the lock
        assert answered, "the loop waited for the lock"
        assert still_waiting
        assert probe.result(timeout=30).status_code == 200
        assert turn.result(timeout=30)["status"] == "completed"
    assert units.sent_away == away + 1
    ran = units.ran
    _turn(served, payer)  # within `PAUSE_S` of the lock: straight to the workers
    assert units.ran == ran
    assert len(charges(db, payer)) == 3
    check_money(db)


def test_a_session_locked_elsewhere_at_the_end_stores_the_turn_once_and_charges_once(
    served: TestClient,
    db: Database,
    payer: Tenant,  # noqa: F811
    upstream: FakeUpstream,  # noqa: F811
) -> None:
    """The end of a turn on a stored session moves the session on (`raw_sql.at_once_guard`) in
    the statement that writes its messages and its charge. With the session's row locked
    elsewhere while the model answers, that statement gives up on the loop having written
    nothing, and the worker's run of the whole end writes the messages once, charges once."""
    units = _units(served)
    answer = served.post("/v1/assistant/session", json={}, headers=payer.headers)
    session_id = answer.json()["session_id"]
    body = {"session_id": session_id, "input": "Hi."}
    assert served.post("/v1/assistant/completion", json=body, headers=payer.headers).is_success
    assert _messages(db, session_id) == 2
    upstream.delay_seconds = 0.5  # the plan and the hold are done when the lock is taken
    away = units.sent_away

    def completion() -> Any:
        return served.post("/v1/assistant/completion", json=body, headers=payer.headers)

    with ThreadPoolExecutor(1) as pool:
        turn = pool.submit(completion)
        time.sleep(0.2)
        with locked(db, "SELECT 1 FROM conversation_sessions WHERE id = :s", s=session_id):
            time.sleep(HELD_S)
            assert not turn.done()
        answer = turn.result(timeout=30)
    assert answer.status_code == 200, answer.text
    assert units.sent_away == away + 1
    assert _messages(db, session_id) == 4
    assert len(charges(db, payer)) == 2
    check_money(db)


def test_slow_units_turn_the_path_off_for_a_while(
    served: TestClient,
    db: Database,
    payer: Tenant,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A distant or busy database: a round trip there costs more than a hand-off saves. But one
    slow unit among many (a commit that waited for the disk) leaves the path on."""
    units = _units(served)
    _turn(served, payer)
    monkeypatch.setattr(pg_loop_units, "WARM_UNITS", 0)
    monkeypatch.setattr(pg_loop_units, "SLOW_MS", 0.0)  # every unit is slow from here
    monkeypatch.setattr(pg_loop_units, "SLOW_UNITS", 3)
    ran = units.ran
    _turn(served, payer)  # two slow units: the path stays on
    assert units.ran == ran + 2
    _turn(served, payer)  # its plan is the third slow unit: its end takes a worker
    assert units.ran == ran + 3
    _turn(served, payer)
    assert units.ran == ran + 3
    assert len(charges(db, payer)) == 4

    units._paused_until = 0.0  # the pause over
    monkeypatch.setattr(pg_loop_units, "SLOW_AMONG", 2)  # slow units further back are forgotten
    _turn(served, payer)
    _turn(served, payer)
    assert units.ran == ran + 7

    monkeypatch.setattr(pg_loop_units, "STALL_MS", 0.0)  # one stall is enough
    _turn(served, payer)
    assert units.ran == ran + 8
    units._paused_until = 0.0
    monkeypatch.setattr(pg_loop_units, "SLOW_MS", 1e9)
    _turn(served, payer)
    assert units.ran == ran + 10
    assert len(charges(db, payer)) == 8
    check_money(db)


def test_what_pauses_the_path_is_many_slow_units_or_much_time_in_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rule alone, on units' times: a rare stall on the disk pauses nothing; a stall that
    recurs, even spaced out to stay under the count of slow units, does."""
    monkeypatch.setattr(pg_loop_units, "WARM_UNITS", 0)

    def pauses(times_ms: list[float]) -> list[int]:
        units = pg_loop_units.PgLoopUnits(None, None, lambda: 0)  # type: ignore[arg-type]
        paused = []
        for index, took in enumerate(times_ms):
            units._paused_until = 0.0
            units._after(took)
            if units._paused_until:
                paused.append(index)
        return paused

    quick = 2.0
    assert pauses([50.0 if i % 6000 == 5999 else quick for i in range(12_000)]) == []
    assert pauses([50.0 if i % 60 == 59 else quick for i in range(300)]) == []  # two at most
    assert pauses([30.0 if i % 30 == 29 else quick for i in range(300)]) == [89, 179, 269]
    assert pauses([190.0 if i % 50 == 49 else quick for i in range(300)]) == list(
        range(49, 300, 50)
    )
    assert pauses([95.0 if i % 50 == 49 else quick for i in range(300)]) == [99, 199, 299]
    assert pauses([95.0 if i % 150 == 149 else quick for i in range(300)]) == []


def test_a_unit_of_another_thread_running_here_takes_the_worker_path(
    postgres_only: None, db: Database
) -> None:
    """One unit at a time on these engines: a second event loop's unit goes to a worker."""
    units = db.pg_loop
    assert units is not None
    inside = threading.Event()
    release = threading.Event()

    def first() -> int:
        inside.set()
        release.wait(5)
        return 1

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(units.run, first)
        assert inside.wait(5)
        assert units.run(lambda: 2) == (False, None)
        release.set()
        assert running.result(timeout=5) == (True, 1)


@pytest.mark.parametrize("path", ["raw_sql", "sqlalchemy"])
def test_a_lock_wait_on_these_connections_is_short_and_writes_nothing(
    postgres_only: None,
    db: Database,
    payer: Tenant,  # noqa: F811
    path: str,
) -> None:
    """Whichever path sends the statement (`kit/raw_sql.py`'s cursor calls, or SQLAlchemy's own
    execution), a row lock held elsewhere ends the wait after `LOCK_WAIT_MS` as `WouldBlock`,
    with nothing written: the unit can run again, whole, on a worker."""
    from sqlalchemy import bindparam, update

    from sessionary.billing.models import CreditBalance
    from sessionary.kit.loop_units import WouldBlock, running_on_the_loop
    from sessionary.kit.raw_sql import run

    units = db.pg_loop
    assert units is not None
    spend = (
        update(CreditBalance)
        .where(CreditBalance.account_id == bindparam("p_account"))
        .values(balance_micro=CreditBalance.balance_micro - 1)
    )
    before = _balance(db, payer)
    held = "SELECT 1 FROM credit_balances WHERE account_id = :a"
    with (
        locked(db, held, a=payer.account_id),
        units.write_engine.connect() as connection,
        connection.begin(),
    ):
        began = time.monotonic()
        with running_on_the_loop(), pytest.raises(WouldBlock):
            if path == "raw_sql":
                run(connection, spend, {"p_account": payer.account_id})
            else:
                connection.execute(spend, {"p_account": payer.account_id})
        assert time.monotonic() - began < HELD_S / 2
    assert _balance(db, payer) == before


def _balance(db: Database, tenant: Tenant) -> int:
    with db.engine.connect() as connection:
        found = connection.execute(
            text("SELECT balance_micro FROM credit_balances WHERE account_id = :a"),
            {"a": tenant.account_id},
        )
        return int(found.scalar_one())


def test_a_long_statement_on_the_loop_is_given_up_and_the_same_error_elsewhere_stays(
    postgres_only: None, db: Database
) -> None:
    """`statement_timeout` ends a statement the loop would wait for; on a worker's connection a
    timeout the database itself imposes (a role's `lock_timeout`, a `statement_timeout`) stays
    the error it was: only a unit on the loop can be run again elsewhere."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import OperationalError

    from sessionary.kit.loop_units import WouldBlock, running_on_the_loop
    from sessionary.kit.raw_sql import run

    units = db.pg_loop
    assert units is not None
    with units.point_engine.connect() as connection:
        began = time.monotonic()
        with running_on_the_loop(), pytest.raises(WouldBlock):
            connection.execute(text("SELECT pg_sleep(2)"))
        assert time.monotonic() - began < 1.0
    with db.engine.connect() as connection, connection.begin():  # `raw_sql`'s path
        connection.execute(text("SET LOCAL statement_timeout = 50"))
        with pytest.raises(OperationalError):
            run(connection, select(func.pg_sleep(2).label("slept")), {})


def test_a_background_response_under_way_keeps_units_on_the_workers(
    served: TestClient,
    db: Database,
    payer: Tenant,  # noqa: F811
) -> None:
    """A background response is no request, yet it needs the loop as one does."""
    units = _units(served)
    _turn(served, payer)
    served.app.state.background_runs.jobs["resp_elsewhere"] = object()  # type: ignore[attr-defined]
    try:
        ran = units.ran
        _turn(served, payer)
        assert units.ran == ran
    finally:
        served.app.state.background_runs.jobs.pop("resp_elsewhere")  # type: ignore[attr-defined]
    check_money(db)


def test_an_end_on_the_loop_never_waits_for_a_shared_flush(
    served: TestClient,
    db: Database,
    payer: Tenant,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With another hold of the process still listed (a turn's end then commits apart from its
    WAL flush on a worker, `kit/wal_flush.py`), an end on the loop commits with its flush: the
    shared flush is led or waited for by a worker thread, and the loop would wait for it."""
    from sessionary.kit.wal_flush import GroupFlush
    from tests.support.money import another_turn_under_way

    units = _units(served)
    _turn(served, payer)
    app_db = served.app.state.db  # type: ignore[attr-defined]
    if not app_db.group_flush.apart:
        pytest.skip("this PostgreSQL commits ends with their flush anyway")
    waited: list[bool] = []
    flush_wait = GroupFlush.wait
    monkeypatch.setattr(
        GroupFlush, "wait", lambda self, c: (waited.append(True), flush_wait(self, c))[1]
    )
    ran = units.ran
    with another_turn_under_way(app_db):
        _turn(served, payer)
    assert units.ran == ran + 2
    assert waited == []
    assert len(charges(db, payer)) == 2
    check_money(db)


def test_a_search_keeps_its_units_on_the_workers(
    postgres_only: None,
    client: TestClient,
    db: Database,
    funded: Tenant,
) -> None:
    """A search's SQL (an index scan, an exact scan of the filtered rows) may take far longer
    than a turn's."""
    units = client.app.state.db.pg_loop  # type: ignore[attr-defined]
    template = create(client, funded)["template_id"]
    ran = units.ran
    for _ in range(2):
        answer = post(
            client,
            funded,
            "search_against_embedding",
            {"template_id": template, "search_term": "quiet studio near the park", "limit": 3},
        )
        assert answer.status_code == 200, answer.text
    assert units.ran == ran
