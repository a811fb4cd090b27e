"""`/healthz` (the process answers), `/readyz` (the database answers), `/metrics` (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST

from sessionary.kit.db import Database
from sessionary.kit.errors import ServiceUnavailable

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


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
