"""`/healthz` (the process answers), `/readyz` (the database answers), `/metrics` (Prometheus)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST

from sessionary.accounts.principal import bearer_of
from sessionary.kit.db import Database
from sessionary.kit.errors import Forbidden, ServiceUnavailable, Unauthorized

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database is reachable")
async def readyz(request: Request) -> dict[str, Any]:
    db: Database = request.app.state.db
    try:
        await run_in_threadpool(db.ping)
    except Exception as exc:
        raise ServiceUnavailable(f"Database unreachable: {type(exc).__name__}.") from exc
    return {"status": "ready", "database": db.dialect}


_LOOPBACK = {"127.0.0.1", "::1", "localhost", "testclient"}


def _may_read_metrics(request: Request) -> None:
    """With SESSIONARY_METRICS_TOKEN: that bearer token; without: loopback clients only.

    The figures are aggregates (no tenant's balance), but request rates and credit flows are
    still the operator's business, not the public's.
    """
    token = request.app.state.settings.metrics_token
    if token is not None:
        presented = bearer_of(request.headers) or ""
        if not hmac.compare_digest(presented.encode(), token.get_secret_value().encode()):
            raise Unauthorized("Metrics need the token set in SESSIONARY_METRICS_TOKEN.")
        return
    host = request.client.host if request.client else ""
    if host not in _LOOPBACK:
        raise Forbidden(
            "Metrics are served to loopback clients only; set SESSIONARY_METRICS_TOKEN to "
            "scrape them from elsewhere.",
            code="metrics_forbidden",
        )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    _may_read_metrics(request)
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
