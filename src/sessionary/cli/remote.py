"""What commands that talk to a running server share: where it is, the key, one-line errors."""

from __future__ import annotations

import os
from typing import Any

import httpx
import typer

from sessionary.cli.common import fail

BASE_URL_OPTION = typer.Option(
    None,
    "--base-url",
    help="Server API base (env SESSIONARY_BASE_URL; default http://127.0.0.1:8000/v1).",
)
API_KEY_OPTION = typer.Option(None, "--api-key", help="API key (env SESSIONARY_API_KEY).")


class Remote:
    def __init__(self, base_url: str | None, api_key: str | None, timeout: float = 600) -> None:
        self.base_url = (
            base_url or os.environ.get("SESSIONARY_BASE_URL") or "http://127.0.0.1:8000/v1"
        ).rstrip("/")
        key = api_key or os.environ.get("SESSIONARY_API_KEY")
        if not key:
            fail("No API key: pass --api-key or set SESSIONARY_API_KEY.")
        self.client = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            fail(f"Cannot reach {self.base_url}: {exc}")
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            fail(f"{response.status_code}: {message}")
        return response

    def close(self) -> None:
        self.client.close()
