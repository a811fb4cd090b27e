"""Errors, limits, request ids, health and metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field
from starlette.routing import Match

from sessionary.accounts.principal import Caller
from sessionary.accounts.service import AccountService
from sessionary.app import API_ROUTERS, create_app
from sessionary.config import Settings
from sessionary.kit.db import Database
from sessionary.kit.dependencies import DbSession
from sessionary.kit.errors import InvalidRequest
from tests.conftest import Tenant
from tests.test_auth import assert_error


class Payload(BaseModel):
    name: str
    count: int = Field(ge=1)
    nested: dict[str, int] = {}


def _probe_router() -> APIRouter:
    router = APIRouter()

    @router.post("/probe")
    def probe(body: Payload, caller: Caller) -> dict[str, str]:
        return {"name": body.name}

    @router.post("/probe/write-then-fail")
    def write_then_fail(session: DbSession) -> None:
        AccountService(session).create_account("should-not-exist")
        raise InvalidRequest("refused after writing", param="name")

    @router.post("/probe/write")
    def write(session: DbSession) -> dict[str, str]:
        account, _ = AccountService(session).create_account("committed")
        return {"id": account.id}

    @router.get("/probe/crash")
    def crash() -> None:
        raise RuntimeError("boom")

    return router


@pytest.fixture
def probe_client(settings: Settings, db: Database) -> Iterator[TestClient]:
    small = settings.model_copy(update={"max_body_bytes": 1024})
    app: FastAPI = create_app(small)
    app.include_router(_probe_router(), prefix="/v1")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _names(db: Database) -> list[str]:
    with db.session(write=False) as session:
        return [a.name for a in AccountService(session).store.list_accounts()]


def test_validation_errors_are_400_naming_the_field(
    probe_client: TestClient, tenant: Tenant
) -> None:
    error = assert_error(
        probe_client.post("/v1/probe", json={"name": "x", "count": 0}, headers=tenant.headers), 400
    )
    assert error["param"] == "count"
    assert error["type"] == "invalid_request_error"
    error = assert_error(
        probe_client.post("/v1/probe", json={"count": 2}, headers=tenant.headers), 400
    )
    assert error["param"] == "name"
    assert "name" in error["message"]
    error = assert_error(
        probe_client.post(
            "/v1/probe",
            json={"name": "x", "count": 1, "nested": {"a": "b"}},
            headers=tenant.headers,
        ),
        400,
    )
    assert error["param"] == "nested.a"


def test_invalid_json_is_400(probe_client: TestClient, tenant: Tenant) -> None:
    response = probe_client.post(
        "/v1/probe",
        content=b'{"name": ',
        headers={**tenant.headers, "content-type": "application/json"},
    )
    assert "JSON" in assert_error(response, 400)["message"]


def test_body_over_the_limit_is_413(probe_client: TestClient, tenant: Tenant) -> None:
    big = {"name": "x" * 2000, "count": 1}
    assert_error(probe_client.post("/v1/probe", json=big, headers=tenant.headers), 413)


def test_chunked_body_over_the_limit_is_413(probe_client: TestClient, tenant: Tenant) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'", "count": 1}'

    response = probe_client.post(
        "/v1/probe",
        content=chunks(),
        headers={**tenant.headers, "content-type": "application/json"},
    )
    assert_error(response, 413)


def test_failed_request_rolls_back_its_writes(probe_client: TestClient, db: Database) -> None:
    assert_error(probe_client.post("/v1/probe/write-then-fail"), 400)
    assert "should-not-exist" not in _names(db)
    assert probe_client.post("/v1/probe/write").status_code == 200
    assert "committed" in _names(db)


def test_unexpected_errors_are_500_envelopes_without_internals(probe_client: TestClient) -> None:
    error = assert_error(probe_client.get("/v1/probe/crash"), 500)
    assert "boom" not in error["message"]


def test_unknown_route_and_wrong_method(probe_client: TestClient) -> None:
    assert_error(probe_client.get("/v1/no-such-thing"), 404, "route_not_found")
    assert_error(probe_client.delete("/v1/me"), 405, "method_not_allowed")


def test_request_ids_are_generated_or_echoed(client: TestClient) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert first != second
    assert first.startswith("req_")
    assert client.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == (
        "abc-123"
    )
    # An id that could corrupt logs or headers is replaced, not echoed.
    replaced = client.get("/healthz", headers={"x-request-id": "a b\tc"}).headers["x-request-id"]
    assert replaced.startswith("req_")


def test_every_answer_says_how_long_the_server_took(client: TestClient, tenant: Tenant) -> None:
    """`Server-Timing: app;dur=<ms>`, once, on answers and errors alike, within what the client
    itself waited (the bench reads it as the server-side time of a request)."""
    for path, headers in (("/v1/me", tenant.headers), ("/v1/me", {}), ("/healthz", {})):
        started = time.perf_counter()
        answer = client.get(path, headers=headers)
        waited = (time.perf_counter() - started) * 1000
        timings = answer.headers.get_list("server-timing")
        assert len(timings) == 1, timings
        name, _, duration = timings[0].partition(";dur=")
        assert name == "app"
        assert 0 < float(duration) <= waited


def test_health_and_readiness(client: TestClient, backend: str) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == backend.replace("postgresql", "postgresql")


def test_readiness_fails_when_the_database_is_unreachable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"postgresql+psycopg://nobody@/nowhere?host={tmp_path}/no-socket",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert_error(client.get("/readyz"), 503)
        assert client.get("/healthz").status_code == 200
        # A route that needs the database refuses cleanly instead of failing with a 500.
        key = "sk_sy_" + "a" * 52
        response = client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert_error(response, 503, "database_unavailable")
        assert response.headers["retry-after"] == "1"


def test_metrics_count_requests_by_route_and_status(client: TestClient, tenant: Tenant) -> None:
    """Counted through remembered label children (`kit/metrics.labelled`): every request adds
    to the series the registry renders."""
    client.get("/v1/me", headers=tenant.headers)
    client.get("/v1/me", headers=tenant.headers)
    client.get("/v1/me")
    client.get("/api/v1/me", headers=tenant.headers)
    text = client.get("/metrics").text
    assert 'sessionary_http_requests_total{method="GET",route="/v1/me",status="200"} 2.0' in text
    assert 'sessionary_http_requests_total{method="GET",route="/v1/me",status="401"} 1.0' in text
    assert 'route="/api/v1/me",status="200"' in text
    assert "sessionary_http_request_duration_seconds_bucket" in text


def test_openapi_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/me" in paths
    assert not any(p.startswith("/api/v1") for p in paths)


def test_no_api_route_is_shadowed_by_one_matched_before_it() -> None:
    """The API's routers are matched in the order of `API_ROUTERS` (the busiest first): every
    route's own path, its parameters filled in, still reaches that route and no earlier one."""
    routes = [r for router in API_ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    checked = 0
    for route in routes:
        if ":" in route.path:  # a custom converter: a filled-in value need not satisfy it
            continue
        path = re.sub(r"\{[^}]+\}", "x1", route.path)
        for method in route.methods:
            scope = {"type": "http", "path": path, "method": method, "root_path": ""}
            first = next(r for r in routes if r.matches(scope)[0] == Match.FULL)
            assert first.endpoint is route.endpoint, f"{method} {route.path} -> {first.path}"
            checked += 1
    assert checked > 80
