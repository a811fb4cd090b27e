"""`/healthz` (the process answers), `/readyz` (the database answers), `/metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST

from sessionary.accounts.principal import bearer_of
from sessionary.kit.dependencies import AppDatabase, AppSettings
from sessionary.ops.schemas import Health, Readiness
from sessionary.ops.service import check_metrics_reader, check_ready

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> Health:
    return Health()


@router.get("/readyz", summary="Readiness: the database is reachable")
async def readyz(database: AppDatabase) -> Readiness:
    return Readiness(database=await run_in_threadpool(check_ready, database))


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request, settings: AppSettings) -> Response:
    host = request.client.host if request.client else ""
    check_metrics_reader(settings.metrics_token, bearer_of(request.headers), host)
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
