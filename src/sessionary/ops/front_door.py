"""`GET /`: what this server is and where to go next, for a person (HTML) or a script (JSON).

Someone who opens the base URL in a browser should not meet a 404: the page names the version,
the API base URL to give clients, and links to the API reference (served offline by the app),
the health checks and, once it is mounted, the console. Nothing on it loads from another host.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from sessionary import __version__

router = APIRouter()

PAGES = (
    ("docs", "/docs", "API reference (Swagger UI: try the routes with your key)"),
    ("redoc", "/redoc", "API reference (ReDoc: one readable page)"),
    ("openapi", "/openapi.json", "OpenAPI document"),
    ("health", "/healthz", "Liveness"),
    ("ready", "/readyz", "Readiness (the database answers)"),
)
CONSOLE = ("console", "/console", "Console")


def _links(request: Request) -> list[tuple[str, str, str]]:
    paths = {getattr(route, "path", None) for route in request.app.routes}
    return [*PAGES, CONSOLE] if CONSOLE[1] in paths else list(PAGES)


def base_url(request: Request) -> str:
    """The API base to give clients: the configured public URL, else the one this request used."""
    configured = request.app.state.settings.public_base_url
    root = (configured or str(request.base_url)).rstrip("/")
    return f"{root}/v1"


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


@router.get("/", include_in_schema=False)
async def front_door(request: Request) -> Response:
    links = _links(request)
    api = base_url(request)
    if wants_json(request):
        body: dict[str, Any] = {
            "name": "Sessionary",
            "version": __version__,
            "base_url": api,
            "links": {name: path for name, path, _ in links},
        }
        return JSONResponse(body)
    items = "\n".join(
        f'      <li><a href="{path}">{escape(label)}</a> <code>{path}</code></li>'
        for _, path, label in links
    )
    page = f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Sessionary {escape(__version__)}</title>
    <style>
      body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 3rem auto;
             padding: 0 1rem; color: #1d2330; }}
      code {{ background: #f1f3f6; padding: 0.1rem 0.3rem; border-radius: 3px; }}
      li {{ margin: 0.3rem 0; }}
    </style>
  </head>
  <body>
    <h1>Sessionary <small>{escape(__version__)}</small></h1>
    <p>Session-bound assistants and semantic search, with accounts and prepaid credits.</p>
    <p>API base URL: <code>{escape(api)}</code> (give it to the <code>openai</code> SDK as
      <code>base_url</code>, to samsar-js as <code>baseUrl</code>), with
      <code>Authorization: Bearer &lt;key&gt;</code>.</p>
    <ul>
{items}
    </ul>
  </body>
</html>
"""
    return HTMLResponse(page)
