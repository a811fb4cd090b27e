"""Mounting the console on an app: its pages, its assets, its cookie, its security headers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionary.accounts.bearers import register_cookie_kind
from sessionary.console.limits import SignInLimiter
from sessionary.console.routes import router
from sessionary.console.service import ConsoleCookies

STATIC = Path(__file__).parent / "static"
# Nothing from another origin: no CDN, no font host, no inline script, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # A sign-in link carries its token in the URL: never pass it to another origin. (Not
    # no-referrer: then the browser sends `Origin: null` with forms, and sign-in checks it.)
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


class ConsoleHeaders:
    """Security headers on every answer under /console (pages and assets)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/console" or path.startswith("/console/")):
            await self.app(scope, receive, send)
            return
        pages = not path.startswith("/console/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if pages:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_console(app: FastAPI) -> None:
    register_cookie_kind(ConsoleCookies())  # the public API accepts the console's session
    app.state.console_limiter = SignInLimiter()
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_middleware(ConsoleHeaders)
