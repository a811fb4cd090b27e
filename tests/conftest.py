"""Fixtures: every storage test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from sessionary.accounts.service import AccountService
from sessionary.app import create_app
from sessionary.assistant.background import BackgroundRuns
from sessionary.billing.metering import HoldKeeper
from sessionary.billing.models import CreditBalance, CreditReservation, LedgerEntry
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.migrate import upgrade
from sessionary.kit.models import utcnow
from tests.support.databases import PostgresFixture

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, saying why, where the bundled chat model would crash the test process: a
    llama.cpp built with its AMX kernels, on a CPU that has AMX (the Makefile builds it without
    them; a wheel built elsewhere, or before, may not be)."""
    cpu = Path("/proc/cpuinfo")
    if not cpu.exists() or " amx_int8" not in cpu.read_text():
        return
    import llama_cpp

    if "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode():
        pytest.exit(
            "llama-cpp-python was built with llama.cpp's AMX kernels, which crash this CPU on "
            "the bundled model; rebuild it with the Makefile's CMAKE_ARGS: `.venv/bin/pip "
            "uninstall -y llama-cpp-python && .venv/bin/pip cache remove llama_cpp_python && "
            "rm .venv/.dev-installed && make install-dev`",
            returncode=3,
        )


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresFixture]:
    fixture = PostgresFixture(tmp_path_factory.mktemp("pg"))
    yield fixture
    fixture.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings_env(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment that points a server (in-process or not) at this test's database."""
    env = {
        "SESSIONARY_DATA_DIR": str(tmp_path / "data"),
        "SESSIONARY_LOG_LEVEL": "WARNING",
        "SESSIONARY_PRELOAD_MODELS": "false",
    }
    if backend == "postgresql":
        postgres: PostgresFixture = request.getfixturevalue("postgres")
        env["SESSIONARY_DATABASE_URL"] = postgres.new_database()
    return env


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    return Settings(
        data_dir=Path(settings_env["SESSIONARY_DATA_DIR"]),
        database_url=settings_env.get("SESSIONARY_DATABASE_URL"),
        log_level="WARNING",
        preload_models=False,
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings)
    upgrade(database)
    yield database
    try:
        check_money(database)
    finally:
        database.dispose()


def check_money(database: Database) -> None:
    """The money invariant, after every test that had a database: for every owner the cached
    balance equals the sum of its ledger, never below zero, no hold is open past its TTL (a test
    that kills a turn must see its hold swept back), and no hold was charged twice."""
    with database.session(write=False) as session:
        balances = session.execute(
            select(CreditBalance.owner_type, CreditBalance.owner_id, CreditBalance.balance_micro)
        ).all()
        sums = dict(
            ((t, o), int(total))
            for t, o, total in session.execute(
                select(
                    LedgerEntry.owner_type, LedgerEntry.owner_id, func.sum(LedgerEntry.amount_micro)
                ).group_by(LedgerEntry.owner_type, LedgerEntry.owner_id)
            )
        )
        doubled = session.execute(
            select(LedgerEntry.reservation_id)
            .where(LedgerEntry.kind == "charge")
            .where(LedgerEntry.reservation_id.is_not(None))
            .group_by(LedgerEntry.reservation_id)
            .having(func.count() > 1)
        ).all()
        stale = session.scalar(
            select(func.count())
            .select_from(CreditReservation)
            .where(CreditReservation.status == "open")
            .where(CreditReservation.expires_at < utcnow())
        )
    for owner_type, owner_id, micro in balances:
        assert micro >= 0, f"{owner_type} {owner_id} is below zero"
        assert micro == sums.get((owner_type, owner_id), 0), (
            f"{owner_type} {owner_id}: balance != ledger sum"
        )
    assert not stale, f"{stale} credit hold(s) left open past their TTL"
    assert not doubled, f"holds charged more than once: {doubled}"


@dataclass
class Tenant:
    account_id: str
    api_key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def make_tenant(db: Database, name: str = "acme") -> Tenant:
    with db.session() as session:
        account, issued = AccountService(session).create_account(name)
    return Tenant(account.id, issued.plaintext, issued.key.id)


@pytest.fixture
def tenant(db: Database) -> Tenant:
    return make_tenant(db, "tenant-a")


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def no_housekeeping(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's own periodic writers (the hold keeper, background runs' beat and purge) do
    not start: each takes the write turn on a worker for a moment, and a unit that meets it
    there rightly goes to a worker, which a count of units run here cannot tell from a defect.
    Ask for it before the server is built (first, or with `usefixtures`)."""

    async def idle(self: Any) -> None:
        return None

    monkeypatch.setattr(HoldKeeper, "run", idle)
    monkeypatch.setattr(BackgroundRuns, "run", idle)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def served(client: TestClient) -> Database:
    """The serving app's own database. A change made through it (a revoked key) drops what the
    server keeps at its commit; made through the test's `db`, another Database, it reaches the
    server by a notice a few milliseconds later on PostgreSQL (`kit/notified.py`), and a
    request sent at once may be answered from what was kept before."""
    database: Database = client.app.state.db  # type: ignore[attr-defined]
    return database
