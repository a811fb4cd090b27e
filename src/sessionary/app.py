"""The application factory: settings in, a ready FastAPI app out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
import structlog
from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from sessionary import __version__
from sessionary.accounts.bearers import register_bearer_kind
from sessionary.accounts.principal import caller_scope
from sessionary.accounts.routes import router as accounts_router
from sessionary.assistant.background import BackgroundRuns
from sessionary.assistant.chat_completions_routes import router as chat_completions_router
from sessionary.assistant.responses_routes import router as responses_router
from sessionary.assistant.routes import router as assistant_router
from sessionary.billing.idempotency_middleware import IdempotencyMiddleware
from sessionary.billing.metering import HoldKeeper
from sessionary.billing.routes import router as billing_router
from sessionary.chatkit.routes import router as chatkit_router
from sessionary.chatkit.service import ClientSecrets
from sessionary.config import Settings, load_settings
from sessionary.console.setup import install_console
from sessionary.conversations.conversation_routes import router as conversations_router
from sessionary.conversations.routes import router as threads_router
from sessionary.external.routes import root_router as external_root_router
from sessionary.external.routes import router as external_router
from sessionary.kit.db import Database
from sessionary.kit.errors import install_error_handlers
from sessionary.kit.heap import freeze_once
from sessionary.kit.http import BodySizeLimitMiddleware, ObservabilityMiddleware, RunningRequests
from sessionary.kit.logging import configure_logging
from sessionary.kit.metrics import Metrics
from sessionary.kit.openapi import install_openapi
from sessionary.kit.text_rule import TextRuleMiddleware
from sessionary.ops.front_door import router as front_door_router
from sessionary.ops.routes import router as ops_router
from sessionary.profiles.routes import router as profiles_router
from sessionary.providers.container import Providers
from sessionary.providers.routes import router as models_router
from sessionary.search.embeddings_routes import router as embeddings_router
from sessionary.search.query_vectors import QueryVectors
from sessionary.search.routes import router as search_router

DOCS_ASSETS = "/docs/assets"
# Answer headers a browser page may read (credits, request id, retries, replays).
EXPOSED_HEADERS = [
    "x-request-id",
    "x-credits-charged",
    "x-credits-remaining",
    "x-credits-reserved",
    "retry-after",
    "idempotent-replayed",
]

# Matched in this order, route by route (each router tries all of its routes): the turn and
# search routes that carry nearly all traffic first. No route is reached through an earlier
# one (`tests/test_http_plumbing.py -k shadowed`).
API_ROUTERS: list[APIRouter] = [
    responses_router,
    chat_completions_router,
    assistant_router,
    search_router,
    embeddings_router,
    models_router,
    accounts_router,
    billing_router,
    threads_router,
    conversations_router,
    profiles_router,
    chatkit_router,
    external_router,
]


def build_providers(settings: Settings) -> Providers:
    """Fails fast (ProviderUnavailable) when a configured provider cannot load."""
    return Providers.build(settings.llm, settings.embeddings, settings.images)


log = structlog.get_logger("sessionary.app")
# At shutdown, how long the requests uvicorn cancelled may take to end (a charge, a release).
REQUESTS_FINISH_SECONDS = 10.0


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    register_bearer_kind(ClientSecrets())  # accounts authenticates them without importing chatkit
    db = Database(settings)
    providers = build_providers(settings)
    background_runs = BackgroundRuns(db)
    running = RunningRequests()
    # PostgreSQL's units run on the loop when nothing else is under way (`kit/pg_loop_units.py`)
    db.work_under_way = lambda: running.count() + len(background_runs.jobs)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.preload_models:
            await run_in_threadpool(providers.load)
        freeze_once()  # what the server holds from now on is left out of full collections
        db.start_listening()
        async with anyio.create_task_group() as background:
            background.start_soon(HoldKeeper(db).run)
            # Background responses run in this task group, not in the request that made them.
            background_runs.attach(background)
            background.start_soon(background_runs.run)
            yield
            # uvicorn cancels requests still running when its graceful shutdown times out
            # (`SESSIONARY_SHUTDOWN_GRACE_SECONDS`) and comes straight here: they charge what
            # they delivered or give their holds back before the database closes.
            left = await running.finished(timeout=REQUESTS_FINISH_SECONDS)
            if left:
                log.warning("requests_still_running_at_shutdown", count=left)
            # Background responses are no requests: uvicorn's grace did not wait for them.
            # They get as long again, then are cancelled (failed, charged what they made).
            left = await background_runs.finished(timeout=settings.shutdown_grace_seconds)
            if left:
                log.warning("background_responses_cut_at_shutdown", count=left)
            background.cancel_scope.cancel()
        await providers.aclose()
        db.dispose()

    # /docs and /redoc with Swagger UI and ReDoc served from the fastapi-offline package (FastAPI's
    # own pages load them from a CDN: a blank page offline); no validator badge from swagger.io.
    app = FastAPIOffline(
        title="Sessionary",
        version=__version__,
        summary="Session-bound assistants and semantic search, with accounts and prepaid credits.",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    app.state.db = db
    app.state.metrics = Metrics()
    app.state.providers = providers
    app.state.background_runs = background_runs
    app.state.query_vectors = QueryVectors(settings.search.query_cache)

    install_error_handlers(app)
    install_openapi(app)
    # Routes are matched in the order they are added, one by one: the API under /v1 first,
    # since nearly every request is for it (no other path starts with /v1).
    for router in API_ROUTERS:
        app.include_router(router, prefix="/v1")
    app.include_router(front_door_router)
    install_console(app)  # /console: pages and assets, and its cookie as an API credential
    app.include_router(ops_router)
    # samsar-js calls these at the server root (verifyClientSession, createExternalEmbeddings).
    app.include_router(external_root_router)
    for router in API_ROUTERS:
        # The same routes under /api/v1, kept out of the schema so each operation appears once.
        app.include_router(router, prefix="/api/v1", include_in_schema=False)

    # Outermost last: the request id exists before the size check can refuse a request, and
    # idempotency sees only bodies within the limit.
    app.add_middleware(
        IdempotencyMiddleware,
        database=db,
        caller_scope=caller_scope(db),
        retention=timedelta(hours=settings.idempotency_retention_hours),
        lease=timedelta(seconds=settings.idempotency_lease_seconds),
        wait_seconds=settings.idempotency_wait_seconds,
    )
    app.add_middleware(TextRuleMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors.origins:
        # Outside everything else: a preflight never reaches authentication or idempotency.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors.origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=EXPOSED_HEADERS,
            max_age=settings.cors.max_age_seconds,
        )
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.metrics, running=running)
    return app
