"""The application's routes as one flat list, whatever FastAPI nests them in.

FastAPI (0.160+) keeps each included router as one entry of `app.routes`; what a request is
really matched against are its effective routes (one per path and method).
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Match
from starlette.types import Scope


def effective_routes(app: Any) -> list[Any]:
    routes: list[Any] = []
    for route in app.router.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        routes.extend(contexts() if callable(contexts) else [route])
    return routes


def allowed_methods(app: Any, scope: Scope) -> list[str]:
    """Every method some route serves at the request's path (for a 405's Allow header)."""
    methods: set[str] = set()
    for route in effective_routes(app):
        if getattr(route, "methods", None) and route.matches(scope)[0] != Match.NONE:
            methods |= set(route.methods)
    return sorted(methods)
