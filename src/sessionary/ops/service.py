"""Rules of the operations routes: when the server is ready, and who may read its metrics."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from sessionary.kit.db import Database
from sessionary.kit.errors import Forbidden, ServiceUnavailable, Unauthorized

_LOOPBACK = {"127.0.0.1", "::1", "localhost", "testclient"}


def check_ready(database: Database) -> str:
    """The database's dialect once it answers; 503 while it does not."""
    try:
        database.ping()
    except Exception as exc:
        raise ServiceUnavailable(f"Database unreachable: {type(exc).__name__}.") from exc
    return database.dialect


def check_metrics_reader(token: SecretStr | None, presented: str | None, host: str) -> None:
    """With SESSIONARY_METRICS_TOKEN: that bearer token; without: loopback clients only.

    The figures are aggregates (no tenant's balance), but request rates and credit flows are
    still the operator's business, not the public's.
    """
    if token is not None:
        given = presented or ""
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise Unauthorized("Metrics need the token set in SESSIONARY_METRICS_TOKEN.")
        return
    if host not in _LOOPBACK:
        raise Forbidden(
            "Metrics are served to loopback clients only; set SESSIONARY_METRICS_TOKEN to "
            "scrape them from elsewhere.",
            code="metrics_forbidden",
        )
