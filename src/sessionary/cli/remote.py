"""What commands that talk to a running server share: the SDK client, its options, one-line
errors (never a traceback for a user error)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from sessionary.cli.common import fail
from sessionary.client import APIConnectionError, APIStatusError, Sessionary, SessionaryError

BASE_URL_OPTION = typer.Option(
    None,
    "--base-url",
    help="Server API base (env SESSIONARY_BASE_URL; default http://127.0.0.1:8000/v1).",
)
API_KEY_OPTION = typer.Option(None, "--api-key", help="API key (env SESSIONARY_API_KEY).")
JSON_OPTION = typer.Option(False, "--json", help="Print the answer as JSON.")


@contextmanager
def remote(base_url: str | None, api_key: str | None, timeout: float = 600) -> Iterator[Sessionary]:
    """An SDK client for the command; SDK errors become one line and exit code 1."""
    client = Sessionary(api_key=api_key, base_url=base_url, timeout=timeout)
    if client.config.api_key is None:
        fail("No API key: pass --api-key or set SESSIONARY_API_KEY.")
    try:
        with client:
            yield client
    except APIStatusError as exc:
        fail(f"{exc.status_code}: {exc.message}")
    except APIConnectionError as exc:
        fail(f"{exc.message}")
    except SessionaryError as exc:
        fail(exc.message)


def resolve_template(client: Sessionary, reference: str) -> str:
    """A template id from an id or a unique name among the key's templates (one-line errors)."""
    if reference.startswith("tmpl_"):
        return reference
    named: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = client.list_embedding_templates(limit=100, offset=offset).data
        named += [t for t in page.templates if t.get("name") == reference]
        offset += len(page.templates)
        if not page.pagination.get("has_more") or not page.templates:
            break
    if len(named) == 1:
        return str(named[0]["template_id"])
    if not named:
        fail(f"No template with the id or name '{reference}' (see: sessionary templates list).")
    ids = ", ".join(str(t["template_id"]) for t in named)
    fail(f"{len(named)} templates are named '{reference}' ({ids}): give the id.")
