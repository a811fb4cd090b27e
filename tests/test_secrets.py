"""No plaintext key anywhere in the database: every table, every column, every row."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select

from sessionary.accounts.service import AccountService
from sessionary.kit.db import Database
from tests.conftest import make_tenant


def dump_database(db: Database) -> str:
    metadata = MetaData()
    metadata.reflect(db.engine)
    parts: list[str] = []
    with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                parts.append(repr(tuple(row)))
    return "\n".join(parts)


def test_no_plaintext_key_is_stored(db: Database, client: TestClient) -> None:
    tenants = [make_tenant(db, f"t{i}") for i in range(3)]
    with db.session() as session:
        extra = AccountService(session).create_key(tenants[0].account_id, "second")
    secrets = [t.api_key for t in tenants] + [extra.plaintext]
    for tenant in tenants:  # use them, so last_used_at and friends are written too
        assert client.get("/v1/me", headers=tenant.headers).status_code == 200
    dump = dump_database(db)
    assert tenants[0].account_id in dump  # the dump does see the data
    for secret in secrets:
        assert secret not in dump
        assert secret[-40:] not in dump  # nor the secret part alone
