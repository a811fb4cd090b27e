"""A turn's plan-and-hold and settle run on the event loop on SQLite (`kit/loop_units.py`), and
whatever would make the loop wait sends them to a worker instead: another process's write, a
worker holding the write turn, a reader locked out. Each attack checks that the loop kept
answering meanwhile, that the turn still ends with one charge, and that checkpoints and slow
units never stay on the loop."""

from __future__ import annotations

import base64
import fcntl
import gc
import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

import sessionary.conversations.service as conversations_service
import sessionary.kit.loop_read as loop_read_module
import sessionary.kit.loop_units as loop_units_module
from sessionary.kit.db import Database
from sessionary.kit.loop_read import SlowPauses
from sessionary.kit.loop_units import LoopUnits
from tests.conftest import Tenant, make_tenant
from tests.support.fake_upstream import FakeUpstream
from tests.support.money import charges, money
from tests.test_credits_http import grant
from tests.test_turn_commit import FUNDS, remote, upstream  # noqa: F401  (fixtures)

TURNS: dict[str, dict[str, Any]] = {
    "/v1/responses": {"input": "Hi."},
    "/v1/chat/completions": {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi."}],
    },
}


@pytest.fixture
def sqlite_only(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")


@pytest.fixture
def served(
    no_housekeeping: None,
    sqlite_only: None,
    remote: TestClient,  # noqa: F811
) -> TestClient:
    """test_turn_commit's server (a fake upstream at its HTTP boundary), on SQLite only, with
    no housekeeping: the checks above run before the server is built."""
    return remote


@pytest.fixture
def payer(db: Database) -> Tenant:
    tenant = make_tenant(db, "payer")
    grant(db, tenant, FUNDS)
    return tenant


def _units(client: TestClient) -> LoopUnits:
    units = client.app.state.db.loop_units  # type: ignore[attr-defined]
    assert units is not None
    return units


def _path(db: Database) -> str:
    path = db.engine.url.database
    assert path
    return path


def _warm(client: TestClient, payer: Tenant) -> None:
    """The key's first use in a process writes its `last_used_at` (on a worker): done before a
    lock is taken, so that the turn meets the lock in its own units, not in authentication."""
    assert client.get("/v1/models", headers=payer.headers).status_code == 200


def _paid(db: Database, payer: Tenant, *, turns: int) -> None:
    """`turns` charges, the balance equal to the ledger's sum, and no hold left open."""
    assert len(charges(db, payer)) == turns
    balance, ledger_sum, holds = money(db, payer)
    assert balance == ledger_sum and holds == 0


def _turn_in_thread(client: TestClient, payer: Tenant) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []
    thread = threading.Thread(
        target=lambda: answers.append(
            client.post("/v1/responses", json={"input": "Hi."}, headers=payer.headers)
        )
    )
    thread.start()
    return thread, answers


def _loop_answers_while_held(client: TestClient, payer: Tenant, hold_s: float) -> float:
    """Seconds a GET took on the same loop while a turn waited on the lock (held `hold_s`)."""
    time.sleep(hold_s / 3)
    began = time.monotonic()
    listed = client.get("/v1/models", headers=payer.headers)
    took = time.monotonic() - began
    assert listed.status_code == 200
    return took


@pytest.mark.parametrize("route", list(TURNS))
def test_a_light_turn_runs_both_units_on_the_loop(
    served: TestClient, db: Database, payer: Tenant, route: str
) -> None:
    units = _units(served)
    ran, away = units.ran, units.sent_away
    for _ in range(3):
        answer = served.post(route, json=TURNS[route], headers=payer.headers)
        assert answer.status_code == 200, answer.text
    assert units.ran - ran == 6  # plan-and-hold, then settle, three times
    assert units.sent_away == away
    _paid(db, payer, turns=3)


def test_a_stored_sessions_plan_reads_through_the_loop_reader_without_a_connection(
    served: TestClient,
    db: Database,
    payer: Tenant,
    upstream: FakeUpstream,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A turn on a stored session (`/v1/assistant/completion`, `previous_response_id`) reads
    the session, the response it continues and its history through the loop's reader: no
    connection is checked out of the pool for the plan (about 60 µs of CPU a turn), and the
    model still reads the whole history. A read the reader cannot answer: the session's
    connection reads it."""
    units = _units(served)
    for _ in range(5):
        upstream.script_text("Noted.")
    checkouts: list[int] = []
    event.listen(units.engine, "checkout", lambda *_: checkouts.append(1))
    session_id = served.post("/v1/assistant/session", json={}, headers=payer.headers).json()[
        "session_id"
    ]

    def turn(**body: Any) -> dict[str, Any]:
        route = "/v1/responses" if "previous_response_id" in body else "/v1/assistant/completion"
        db.loop_reads._paused_until = min(db.loop_reads._paused_until, time.monotonic())
        answer = served.post(route, json=body, headers=payer.headers)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def history_sent() -> list[str]:
        sent = upstream.bodies("chat")[-1]["messages"]
        return [m["content"] for m in sent if m["role"] == "user"]

    turn(session_id=session_id, input="One.")
    first = turn(session_id=session_id, input="Two.")
    ran, before = units.ran, len(checkouts)
    turn(session_id=session_id, input="Three.")
    assert history_sent() == ["One.", "Two.", "Three."]
    turn(previous_response_id=first["id"], input="Branch.")
    assert history_sent() == ["One.", "Two.", "Branch."]
    assert units.ran == ran + 4  # both turns' units ran on the loop
    assert len(checkouts) == before  # and their plans took no pooled connection

    # A read the reader cannot answer (it failed, or it is paused): the session's connection
    monkeypatch.setattr(loop_read_module.LoopReader, "rows", lambda *_: (False, []))
    answer = served.post(
        "/v1/assistant/completion",
        json={"session_id": session_id, "input": "Four."},
        headers=payer.headers,
    )
    assert answer.status_code == 200, answer.text
    assert history_sent() == ["One.", "Two.", "Three.", "Branch.", "Four."]
    assert len(checkouts) == before + 1
    _paid(db, payer, turns=5)


def test_a_turn_with_a_file_runs_on_a_worker(
    served: TestClient, db: Database, payer: Tenant
) -> None:
    """A file is decoded while the turn is planned: that never holds up the loop."""
    units = _units(served)
    ran = units.ran
    data = base64.b64encode(b"notes: the meeting is at noon").decode()
    part = {"type": "input_file", "filename": "notes.txt", "file_data": data}
    content = [{"type": "input_text", "text": "When?"}, part]
    answer = served.post(
        "/v1/responses",
        json={"input": [{"role": "user", "content": content}]},
        headers=payer.headers,
    )
    assert answer.status_code == 200, answer.text
    assert units.ran == ran
    assert len(charges(db, payer)) == 1


def test_another_process_writing_never_stalls_the_loop(
    served: TestClient, db: Database, payer: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds SQLite's write lock: the turn's hold meets it at BEGIN IMMEDIATE,
    goes to a worker (which waits), and the loop answers other requests meanwhile. The units
    after it then go to a worker for `SHARED_PAUSE_S`."""
    monkeypatch.setattr(loop_units_module, "SHARED_PAUSE_S", 60.0)
    units = _units(served)
    away = units.sent_away
    _warm(served, payer)
    other = sqlite3.connect(_path(db), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        thread, answers = _turn_in_thread(served, payer)
        took = _loop_answers_while_held(served, payer, 1.5)
        time.sleep(1.0)
        assert thread.is_alive()  # the turn waits for the lock, on a worker
        other.execute("ROLLBACK")
    finally:
        other.close()
    thread.join(timeout=30)
    assert took < 0.75
    assert answers[0].status_code == 200, answers[0].text
    assert units.sent_away > away
    assert len(charges(db, payer)) == 1  # sent away before anything was written: one hold
    ran = units.ran
    assert served.post(**_post(payer)).status_code == 200
    assert units.ran == ran  # the processes take turns on a worker for a while
    assert len(charges(db, payer)) == 2


def test_a_worker_holding_the_write_turn_queues_the_unit_on_the_loop(
    served: TestClient, db: Database, payer: Tenant
) -> None:
    """Within the process: a worker's write transaction holds the write turn. The turn's unit
    queues for it without holding up the loop, and runs there once the worker commits."""
    units = _units(served)
    away, queued, ran = units.sent_away, units.queued, units.ran
    _warm(served, payer)
    database: Database = served.app.state.db  # type: ignore[attr-defined]
    release = threading.Event()
    holding = threading.Event()

    def writer() -> None:
        with database.session() as session:
            session.connection()  # BEGIN IMMEDIATE: the turn is taken
            holding.set()
            release.wait(10)

    held = threading.Thread(target=writer)
    held.start()
    assert holding.wait(5)
    thread, answers = _turn_in_thread(served, payer)
    took = _loop_answers_while_held(served, payer, 1.5)
    time.sleep(0.5)
    assert thread.is_alive()  # its unit waits for the turn
    release.set()
    held.join(timeout=10)
    thread.join(timeout=30)
    assert took < 0.75
    assert answers[0].status_code == 200, answers[0].text
    assert units.queued > queued and units.sent_away == away
    assert units.ran == ran + 2  # plan-and-hold and settle both ran on the loop
    assert len(charges(db, payer)) == 1


def _hold_file_turn(db: Database) -> int:
    """Another process of this server holding the write turn: the turn file's lock, taken on
    a descriptor of its own (two descriptors' `flock`s exclude each other, as two processes'
    do). Closing the descriptor gives it back."""
    fd = os.open(f"{_path(db)}.writeturn", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_another_server_process_holding_the_turn_queues_the_turn_on_the_loop(
    served: TestClient, db: Database, payer: Tenant
) -> None:
    """Two workers of one server share the file's turn: the turn waits for it on the loop
    (which answers meanwhile), runs there once it is free, and is charged once."""
    units = _units(served)
    away, ran = units.sent_away, units.ran
    _warm(served, payer)
    fd = _hold_file_turn(db)
    try:
        thread, answers = _turn_in_thread(served, payer)
        took = _loop_answers_while_held(served, payer, 1.5)
        time.sleep(0.5)
        assert thread.is_alive()
    finally:
        os.close(fd)
    thread.join(timeout=30)
    assert took < 0.75
    assert answers[0].status_code == 200, answers[0].text
    assert units.sent_away == away and units.ran == ran + 2
    _paid(db, payer, turns=1)


def test_a_turn_held_past_the_busy_timeout_is_a_503_with_nothing_charged(
    served: TestClient, db: Database, payer: Tenant
) -> None:
    """The other process keeps the turn longer than the busy timeout: the queued turn is
    refused as a worker's would be (503 `database_unavailable`), with no hold left and no
    charge; the next turn, once the lock is free, is served."""
    units = _units(served)
    units.wait_s = 0.3
    _warm(served, payer)
    before = money(db, payer)
    fd = _hold_file_turn(db)
    try:
        answer = served.post(**_post(payer))
    finally:
        os.close(fd)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "database_unavailable"
    assert money(db, payer) == before and charges(db, payer) == []
    assert served.post(**_post(payer)).status_code == 200
    assert len(charges(db, payer)) == 1


def test_checkpoints_run_off_the_loop(
    served: TestClient, db: Database, payer: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's connections never checkpoint at commit; every CHECKPOINT_EVERY units a thread
    of its own copies the WAL into the database file."""
    monkeypatch.setattr(loop_units_module, "CHECKPOINT_EVERY", 4)
    units = _units(served)
    connection = units.engine.raw_connection()
    try:
        assert connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == 0
    finally:
        connection.close()
    database_file = Path(_path(db))
    before = hashlib.sha256(database_file.read_bytes()).hexdigest()
    for _ in range(4):  # 8 units: two checkpoints asked for
        assert served.post(**_post(payer)).status_code == 200
    deadline = time.monotonic() + 10
    while hashlib.sha256(database_file.read_bytes()).hexdigest() == before:
        assert time.monotonic() < deadline, "no checkpoint reached the database file"
        time.sleep(0.05)


def _post(payer: Tenant) -> dict[str, Any]:
    return {"url": "/v1/responses", "json": {"input": "Hi."}, "headers": payer.headers}


def test_a_slow_unit_turns_the_loop_path_off(
    served: TestClient, db: Database, payer: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop_units_module, "SLOW_MS", -1)  # every unit counts as slow
    monkeypatch.setattr(loop_units_module, "SLOW_UNITS", 1)
    monkeypatch.setattr(loop_units_module, "WARM_UNITS", 0)
    units = _units(served)
    ran = units.ran
    assert served.post(**_post(payer)).status_code == 200
    assert units.ran == ran + 1  # the plan ran here, was slow: the settle went to a worker
    assert served.post(**_post(payer)).status_code == 200
    assert units.ran == ran + 1
    assert len(charges(db, payer)) == 2


def test_a_read_that_meets_a_lock_sends_the_unit_away(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read on the loop's engine that SQLite answers "database is locked" (here: a database
    attached to that connection, which another connection holds exclusively) is `WouldBlock`:
    the unit is reported as not run, for the worker path, instead of failing or waiting."""
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    monkeypatch.setattr(loop_units_module, "SHARED_PAUSE_S", 0.0)  # the retry below runs here
    locked = tmp_path / "locked.db"
    other = sqlite3.connect(locked, isolation_level=None)
    other.execute("CREATE TABLE t (x INTEGER)")
    other.execute("BEGIN EXCLUSIVE")
    attempts: list[int] = []

    def work() -> int:
        attempts.append(1)
        with db.point_reads() as session:
            session.execute(text(f"ATTACH DATABASE '{locked}' AS locked"))
            try:
                return int(session.execute(text("SELECT count(*) FROM locked.t")).scalar_one())
            finally:
                session.execute(text("DETACH DATABASE locked"))

    try:
        began = time.monotonic()
        assert db.loop_units.run(work) == (False, None)
        assert time.monotonic() - began < 1
        assert attempts == [1] and db.loop_units.sent_away == 1
    finally:
        other.close()
    assert db.loop_units.run(work) == (True, 0)  # the lock gone, the same unit runs here


def test_one_thread_at_a_time_runs_units_here(db: Database) -> None:
    """A second thread (another event loop of the process) meanwhile takes the worker path."""
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    units = db.loop_units
    inner: list[tuple[bool, Any]] = []

    def work() -> int:
        other = threading.Thread(target=lambda: inner.append(units.run(lambda: 1)))
        other.start()
        other.join()
        return 2

    assert units.run(work) == (True, 2)
    assert inner == [(False, None)]
    assert units.run(lambda: 1) == (True, 1)


def test_a_process_first_units_compile_and_pause_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first `WARM_UNITS` may be slow (statements compiled once) without turning the path
    off; the next slow one does."""
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    monkeypatch.setattr(loop_units_module, "SLOW_MS", -1)
    monkeypatch.setattr(loop_units_module, "SLOW_UNITS", 1)
    units = db.loop_units
    for _ in range(loop_units_module.WARM_UNITS):
        assert units.run(lambda: 1) == (True, 1)
    assert units.run(lambda: 1) == (True, 1)  # slow, after the warm-up: pauses the path
    assert units.run(lambda: 1) == (False, None)


def test_one_slow_unit_pauses_nothing_a_run_of_them_does(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow unit may be the machine's hiccup: only `SLOW_UNITS` of them within
    `SLOW_WINDOW_S` turn the path off."""
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    monkeypatch.setattr(loop_units_module, "SLOW_MS", -1)  # every unit counts as slow
    monkeypatch.setattr(loop_units_module, "WARM_UNITS", 0)
    units = db.loop_units
    for _ in range(loop_units_module.SLOW_UNITS):
        assert units.run(lambda: 1) == (True, 1)
    assert units.run(lambda: 1) == (False, None)


def test_slow_units_far_apart_pause_nothing(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    monkeypatch.setattr(loop_units_module, "SLOW_MS", -1)
    monkeypatch.setattr(loop_units_module, "WARM_UNITS", 0)
    monkeypatch.setattr(loop_units_module, "SLOW_WINDOW_S", 0.05)
    units = db.loop_units
    for _ in range(loop_units_module.SLOW_UNITS * 2):
        assert units.run(lambda: 1) == (True, 1)
        time.sleep(0.06)  # the previous slow unit has left the window


def test_a_stall_pauses_the_path_at_once(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    monkeypatch.setattr(loop_units_module, "SLOW_MS", 10)
    monkeypatch.setattr(loop_units_module, "STALL_MS", 30)
    monkeypatch.setattr(loop_units_module, "WARM_UNITS", 0)
    units = db.loop_units
    assert units.run(lambda: time.sleep(0.015)) == (True, None)  # slow, not a stall
    assert units.run(lambda: time.sleep(0.05)) == (True, None)  # a stall
    assert units.run(lambda: 1) == (False, None)


def test_the_pause_lasts_as_long_as_the_slowness_calls_for(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stall turns the path off for `PAUSE_PER_SLOW_S` times its length
    (`loop_read.SlowPauses`, whose doubling `tests/test_loop_read.py` checks), not for
    `PAUSE_S`; a run of slow units for that many times their sum."""
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    monkeypatch.setattr(loop_units_module, "SLOW_MS", 10)
    monkeypatch.setattr(loop_units_module, "STALL_MS", 30)
    monkeypatch.setattr(loop_units_module, "WARM_UNITS", 0)
    monkeypatch.setattr(loop_read_module, "MIN_PAUSE_S", 0.0)
    monkeypatch.setattr(loop_read_module, "PAUSE_PER_SLOW_S", 5.0)
    units = db.loop_units

    def paused_for(stall_s: float) -> tuple[float, float]:
        """(how long the path is off from the unit's start, how long the unit slept)"""
        slept: list[float] = []

        def stall() -> None:
            began = time.perf_counter()
            time.sleep(stall_s)
            slept.append(time.perf_counter() - began)

        began = time.monotonic()
        assert units.run(stall) == (True, None)
        assert units.run(lambda: 1) == (False, None)
        return units._paused_until - began, slept[0]

    off, slept = paused_for(0.05)  # a stall: off for 5 times its length
    assert 5 * slept - 0.01 <= off <= 5 * slept + 0.1
    time.sleep(off + 0.02)
    assert units.run(lambda: 1) == (True, 1)  # back on once it has passed
    units._slow_pauses = SlowPauses()  # no streak: the next pause is not doubled
    monkeypatch.setattr(loop_units_module, "STALL_MS", 1_000)
    began = time.perf_counter()
    for _ in range(loop_units_module.SLOW_UNITS - 1):
        assert units.run(lambda: time.sleep(0.02)) == (True, None)
    off, slept = paused_for(0.02)  # the third slow unit: off for 5 times the three together
    slow_s = time.perf_counter() - began  # a little more than the three units took
    assert 5 * 3 * 0.02 - 0.01 <= off <= 5 * slow_s + 0.1


def test_the_collector_pauses_are_not_counted_as_the_units(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full collection stops every thread wherever the unit runs: a unit that met one is not
    slow for it. Here the unit itself runs a collection over a million objects; the thresholds
    are a quarter of what that collection took outside a unit, so counting it would pause."""
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    heap = [[index] for index in range(1_000_000)]  # containers the collector walks
    began = time.perf_counter()
    gc.collect()
    collection_ms = (time.perf_counter() - began) * 1000
    monkeypatch.setattr(loop_units_module, "SLOW_MS", collection_ms / 4)
    monkeypatch.setattr(loop_units_module, "STALL_MS", collection_ms / 4)
    monkeypatch.setattr(loop_units_module, "SLOW_UNITS", 1)
    monkeypatch.setattr(loop_units_module, "WARM_UNITS", 0)
    units = db.loop_units
    took: list[float] = []

    def collecting() -> int:
        began = time.perf_counter()
        found = gc.collect()
        took.append((time.perf_counter() - began) * 1000)
        return found

    assert units.run(collecting)[0]
    assert took[0] > collection_ms / 4  # the unit did take that long, in the collector
    assert units.run(lambda: 1) == (True, 1)  # and the path is still on
    assert len(heap) == 1_000_000


def test_a_long_stored_history_sends_the_plan_to_a_worker(
    served: TestClient, db: Database, payer: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A light request on a long session: the plan reads one row more than the loop's share
    of history, finds it long, and goes to a worker; the settle still runs on the loop."""
    monkeypatch.setattr(conversations_service, "LOOP_HISTORY_ROWS", 3)
    units = _units(served)
    first = served.post(**_post(payer))
    assert first.status_code == 200
    previous = first.json()["id"]
    second = served.post(
        "/v1/responses",
        json={"input": "And then?", "previous_response_id": previous},
        headers=payer.headers,
    )
    assert second.status_code == 200  # a history of 2 messages: planned on the loop
    ran, away = units.ran, units.sent_away
    third = served.post(
        "/v1/responses",
        json={"input": "And then?", "previous_response_id": second.json()["id"]},
        headers=payer.headers,
    )
    assert third.status_code == 200, third.text
    assert (units.ran - ran, units.sent_away - away) == (1, 1)  # plan sent away, settle here
    assert len(charges(db, payer)) == 3
    assert len(third.json()["output"]) == 1


def test_a_long_session_read_with_its_history_sends_the_plan_to_a_worker(
    served: TestClient,
    db: Database,
    payer: Tenant,
    upstream: FakeUpstream,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A turn on a session known by id reads the session and its history in one statement
    (`ConversationService.turn_session_and_history`), one row more than the loop's share: a
    long one sends the plan to a worker, which reads the whole history and sends all of it."""
    monkeypatch.setattr(conversations_service, "LOOP_HISTORY_ROWS", 3)
    units = _units(served)
    made = served.post("/v1/conversations", json={}, headers=payer.headers)
    assert made.status_code == 200, made.text
    turn = {"input": "And then?", "conversation": made.json()["id"]}
    for n in range(4):
        upstream.script_text(f"Answer {n}.")  # scripted answers record the bodies sent
    for expected in ((2, 0), (2, 0), (1, 1), (1, 1)):  # histories of 0, 2, 4 and 6 messages:
        # the last two plans go to a worker, their settles stay here
        ran, away = units.ran, units.sent_away
        answer = served.post("/v1/responses", json=turn, headers=payer.headers)
        assert answer.status_code == 200, answer.text
        assert (units.ran - ran, units.sent_away - away) == expected
    sent = upstream.bodies("chat")[-1]["messages"]
    assert [m["role"] for m in sent if m["role"] != "system"] == ["user", "assistant"] * 3 + [
        "user"
    ]
    assert len(charges(db, payer)) == 4


@pytest.mark.parametrize("route", ["/v1/responses", "/v1/chat/completions"])
def test_a_turn_with_a_large_output_schema_runs_on_a_worker(
    served: TestClient, db: Database, payer: Tenant, route: str
) -> None:
    """Checking an output schema costs its size (0.5 s for 1,600 properties, found by an
    attack): a schema past `kit/light.py`'s bounds sends the turn's units to a worker; a small
    one leaves them on the loop."""
    units = _units(served)

    def schema(properties: int) -> dict[str, Any]:
        fields = {f"p{n}": {"type": "string", "description": "x"} for n in range(properties)}
        return {"type": "object", "properties": fields}

    for properties, on_loop in ((3, 2), (600, 0)):
        ran = units.ran
        if route == "/v1/responses":
            extra: dict[str, Any] = {
                "text": {
                    "format": {"type": "json_schema", "name": "x", "schema": schema(properties)}
                }
            }
        else:
            extra = {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": schema(properties)},
                }
            }
        answer = served.post(route, json={**TURNS[route], **extra}, headers=payer.headers)
        assert answer.status_code == 200, answer.text
        assert units.ran - ran == on_loop
    assert len(charges(db, payer)) == 2


@pytest.mark.parametrize("route", list(TURNS))
def test_json_schema_type_lists_in_tools_are_light(
    served: TestClient, payer: Tenant, route: str
) -> None:
    """A nullable field's `"type": ["string", "null"]` (strict mode's form) is a list where
    the lightness check looks for a part's type: it is a tool like any other."""
    parameters = {
        "type": "object",
        "properties": {"city": {"type": ["string", "null"]}},
        "required": ["city"],
        "additionalProperties": False,
    }
    if route == "/v1/responses":
        tool: dict[str, Any] = {"type": "function", "name": "weather", "parameters": parameters}
    else:
        tool = {"type": "function", "function": {"name": "weather", "parameters": parameters}}
    body = {**TURNS[route], "tools": [tool]}
    answer = served.post(route, json=body, headers=payer.headers)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("kind", [["file"], {"a": 1}, 5])
def test_an_input_item_whose_type_is_not_a_string_is_a_400(
    served: TestClient, db: Database, payer: Tenant, kind: Any
) -> None:
    answer = served.post(
        "/v1/responses",
        json={"input": [{"type": kind, "role": "user", "content": "x"}]},
        headers=payer.headers,
    )
    assert answer.status_code == 400, answer.text
    assert charges(db, payer) == []


@pytest.mark.parametrize("route", list(TURNS))
def test_a_settle_sent_away_after_a_refused_transcript_is_run_again_whole(
    served: TestClient, db: Database, payer: Tenant, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """The end of a turn is one unit (transcript, then settle); a unit that leaves the loop
    (`WouldBlock`) runs again from its start on a worker, so it must change nothing outside its
    transaction before that. Here the stored transcript is refused and the settle leaves the
    loop once: the rerun is refused the same way and the turn is delivered (a chat completion
    without its `session_id`) and charged once, not a 500 from the first run's leftovers."""
    from sqlalchemy.exc import IntegrityError

    from sessionary.billing.ledger import Ledger
    from sessionary.conversations.completions import CompletionService
    from sessionary.kit.loop_units import WouldBlock, running_here

    def refused(*_: object, **__: object) -> None:
        raise IntegrityError("INSERT INTO conversation_messages", {}, Exception("refused"))

    monkeypatch.setattr(CompletionService, "record", refused)
    monkeypatch.setattr(conversations_service.ConversationService, "store_response", refused)
    settle = Ledger.settle
    left: list[bool] = []

    def leaves_once(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        if running_here() and not left:
            left.append(True)
            raise WouldBlock("injected", elsewhere=True)
        return settle(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "settle", leaves_once)
    answer = served.post(route, json={**TURNS[route], "store": True}, headers=payer.headers)
    assert answer.status_code == 200, answer.text
    assert left == [True]  # the settle did leave the loop
    if route == "/v1/chat/completions":
        assert "session_id" not in answer.json()
    charged = charges(db, payer)
    assert len(charged) == 1 and charged[0] > 0
    assert money(db, payer) == (FUNDS - charged[0], FUNDS - charged[0], 0)


def _scratch(db: Database) -> None:
    with db.engine.begin() as connection:
        connection.execute(text("CREATE TABLE scratch (x INTEGER)"))


def _written(db: Database) -> list[int]:
    with db.engine.connect() as connection:
        return sorted(connection.execute(text("SELECT x FROM scratch")).scalars())


def _insert(connection: Any, x: int) -> Any:
    """The DB-API connection the insert ran on."""
    connection.execute(text("INSERT INTO scratch (x) VALUES (:x)"), {"x": x})
    return connection.connection.dbapi_connection


def test_write_units_here_keep_one_connection_and_end_their_transactions(
    db: Database,
) -> None:
    """Units run one at a time here, so their writes share one connection, kept checked out
    (`LoopUnits.connection`); each unit's transaction ends with it, committed or rolled back.
    A unit that raised leaves it behind (the next unit takes a new one), and so does a unit
    sent away (a second write begun inside it)."""
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    _scratch(db)
    units = db.loop_units
    seen: list[Any] = []  # the SQLAlchemy connection each write ran on

    def bare(x: int) -> None:
        with db.bare_write() as connection:
            _insert(connection, x)
            seen.append(connection)

    def in_session(x: int) -> None:
        with db.session() as session:
            _insert(session.connection(), x)
            seen.append(session.connection())

    def failing() -> None:
        with db.session() as session:
            _insert(session.connection(), 99)
            seen.append(session.connection())
            raise LookupError("the unit's own failure")

    assert units.run(lambda: bare(1)) == (True, None)
    assert units.run(lambda: in_session(2)) == (True, None)
    with pytest.raises(LookupError):
        units.run(failing)
    assert seen[1] is seen[0] and seen[2] is seen[0]  # one connection for the three units
    assert units.run(lambda: bare(3)) == (True, None)
    assert units.run(lambda: bare(4)) == (True, None)
    assert seen[3] is not seen[0] and seen[4] is seen[3]  # a new one after the raise, kept
    assert _written(db) == [1, 2, 3, 4]  # the failed unit's row rolled back with it

    def nested() -> None:  # SQLite's one write lock: a second write transaction cannot begin
        with db.session() as session:
            _insert(session.connection(), 5)
            bare(6)

    assert units.run(nested) == (False, None)  # sent to a worker, nothing of it committed
    assert units.run(lambda: bare(7)) == (True, None)
    assert _written(db) == [1, 2, 3, 4, 7]

    def lazy_nested() -> None:  # the outer session has not begun when the inner write does
        with db.session() as outer:
            with db.bare_write() as inner:
                _insert(inner, 8)
                _insert(outer.connection(), 9)
            raise LookupError("the outer unit fails")

    assert units.run(lazy_nested) == (False, None)  # one transaction each, never a shared one
    assert _written(db) == [1, 2, 3, 4, 7]
    db.loop_units.close()  # the disposal gives it back: the pool has every connection again
    assert db.loop_units.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def _turn_free(db: Database) -> bool:
    """Whether another thread can take the process's write turn at once (then given back)."""
    got: list[str | None] = []
    probe = object()
    thread = threading.Thread(target=lambda: got.append(db.write_turn.take(probe, None)))
    thread.start()
    thread.join()
    if got == [None]:
        db.write_turn.release(probe)
        return True
    return False


def test_a_thread_not_running_a_unit_here_never_gets_the_kept_connection(db: Database) -> None:
    """Only the thread running a unit of these `LoopUnits` is lent the kept connection: a
    thread in a unit of another database of the process (tests build several) gets a pooled
    one, so no two threads ever use one connection."""
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    units = db.loop_units

    def lent() -> Any:
        with units.connection() as connection:
            return connection

    kept = units.run(lent)[1]
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(lent()))
    thread.start()
    thread.join()
    assert got[0] is not kept and got[0].closed  # a pooled one, given back
    assert units.run(lent)[1] is kept


def test_an_interrupt_after_begin_leaves_neither_lock_nor_turn_held(db: Database) -> None:
    """An interrupt that lands after BEGIN IMMEDIATE went out but before SQLAlchemy recorded
    the transaction: only the driver knows of it. The unit's end rolls it back and gives the
    write turn back, as the pool's return did."""
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    _scratch(db)
    units = db.loop_units
    fire = [True]

    @event.listens_for(units.engine, "begin")
    def _late(_connection: object) -> None:
        if fire[0]:
            fire[0] = False
            raise KeyboardInterrupt("lands after BEGIN IMMEDIATE")

    def write(x: int) -> None:
        with db.bare_write() as connection:
            _insert(connection, x)

    with pytest.raises(KeyboardInterrupt):
        units.run(lambda: write(1))
    assert _turn_free(db)
    assert units.run(lambda: write(2)) == (True, None)
    assert _written(db) == [2]


def test_a_refused_begin_leaves_the_next_unit_a_connection_that_begins(db: Database) -> None:
    """SQLAlchemy's `Connection` whose BEGIN was refused (the write turn held elsewhere) no
    longer begins a transaction on its own: kept, a later statement would have run in
    SQLite's autocommit, with no BEGIN IMMEDIATE and no write turn. The unit's connection is
    left behind instead."""
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    _scratch(db)
    units = db.loop_units

    def write(x: int) -> None:
        with db.bare_write() as connection:
            _insert(connection, x)

    assert units.run(lambda: write(1)) == (True, None)
    holder = object()
    thread = threading.Thread(target=lambda: db.write_turn.take(holder, None))
    thread.start()
    thread.join()
    try:
        assert units.run(lambda: write(2)) == (False, None)
    finally:
        db.write_turn.release(holder)

    def implicit() -> tuple[bool, bool]:
        with units.connection() as connection:
            _insert(connection, 3)  # no begin(): SQLAlchemy's own
            raw = connection.connection.dbapi_connection
            return connection.in_transaction(), db.write_turn._holder is raw

    assert units.run(implicit) == (True, (True, True))
    assert _written(db) == [1]  # and what it left open was rolled back at its end


def test_a_kept_connection_left_invalid_is_replaced(db: Database) -> None:
    """A unit whose connection was invalidated (a driver error that took it) leaves it behind:
    the next unit writes on a new one."""
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    _scratch(db)
    units = db.loop_units
    seen: list[Any] = []

    def broken() -> None:
        with db.bare_write() as connection:
            seen.append(_insert(connection, 1))
            connection.invalidate()
            raise ConnectionError("gone")

    def works() -> None:
        with db.bare_write() as connection:
            seen.append(_insert(connection, 2))

    with pytest.raises(ConnectionError):
        units.run(broken)
    assert units.run(works) == (True, None)
    assert seen[1] is not seen[0]
    assert _written(db) == [2]
    db.loop_units.close()  # the disposal gives it back: the pool has every connection again
    assert db.loop_units.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_unit_that_leaves_its_transaction_open_does_not_keep_the_write_lock(
    db: Database,
) -> None:
    """The kept connection is never given back to the pool, whose return would roll back what
    a unit left open: its end does it instead. Left open, the write transaction would hold
    SQLite's write lock (and the process's write turn) against every other writer."""
    if db.loop_units is None:
        pytest.skip("SQLite's loop units (PostgreSQL's: tests/test_pg_loop_units.py)")
    _scratch(db)
    units = db.loop_units

    def leaves_it_open() -> None:
        with units.connection() as connection:
            connection.begin()
            _insert(connection, 1)

    def leaves_the_driver_in_one() -> None:
        with units.connection() as connection:
            connection.connection.driver_connection.execute("BEGIN IMMEDIATE")
            connection.connection.driver_connection.execute("INSERT INTO scratch VALUES (2)")

    def cannot_be_rolled_back() -> None:  # closed instead, which ends it for good
        with units.connection() as connection:
            connection.begin()
            _insert(connection, 4)

            def refused() -> None:
                raise OSError("the rollback failed")

            connection.rollback = refused  # type: ignore[method-assign]

    for unit in (leaves_it_open, leaves_the_driver_in_one, cannot_be_rolled_back):
        assert units.run(unit) == (True, None)
        other = sqlite3.connect(_path(db), timeout=0, isolation_level=None)
        try:  # another program writes at once: the lock is free
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO scratch (x) VALUES (10)")
            other.execute("COMMIT")
        finally:
            other.close()

    def writes(x: int) -> None:
        with db.bare_write() as connection:
            _insert(connection, x)

    assert units.run(lambda: writes(3)) == (True, None)  # and the process's write turn too
    assert _written(db) == [3, 10, 10, 10]
