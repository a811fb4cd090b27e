"""What commands that talk to a running server share: the SDK client, its options, one-line
errors (never a traceback for a user error)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
