"""No plaintext key anywhere in the database: every table, every column, every row."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, select

from sessionary.accounts.service import AccountService
from sessionary.kit.db import Database
from tests.conftest import make_tenant
from tests.support.live import LiveServer


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


@pytest.mark.slow
def test_no_key_or_token_reaches_the_logs(settings_env: dict[str, str], db: Database) -> None:
    """A real server at INFO: access logs, auth failures and errors never carry a secret."""
    tenant = make_tenant(db, "logged")
    server = LiveServer({**settings_env, "SESSIONARY_LOG_LEVEL": "INFO"})
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            bearer = {"Authorization": f"Bearer {tenant.api_key}"}
            user = {"provider": "app", "unique_key": "logged-user"}
            made = client.post(
                "/v1/external_users/session", json={"external_user": user}, headers=bearer
            )
            user_key = made.json()["external_api_key"]
            login = client.post(
                "/v1/external_users/create_login_token",
                json={"external_user": user},
                headers=bearer,
            ).json()["loginToken"]
            verified = client.get("/users/verify_token", params={"loginToken": login})
            auth = verified.json()["authToken"]
            secrets = [tenant.api_key, user_key, login, auth]
            for secret in secrets:  # accepted, refused, and in the query string
                client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
                client.get("/v1/me", headers={"x-external-user-api-key": secret})
                client.get(
                    "/users/verify_token", params={"authToken": secret, "loginToken": secret}
                )
            client.get("/v1/me", headers={"Authorization": f"Bearer {tenant.api_key[:-1]}x"})
    finally:
        server.stop()
    text = server.log_path.read_text()
    assert '"path": "/v1/me"' in text and '"status": 401' in text  # the access log is there
    for secret in secrets:
        assert secret not in text and secret[-40:] not in text
