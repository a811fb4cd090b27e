"""`init`, `migrate` and `serve`."""

from __future__ import annotations

import typer
import uvicorn

from sessionary import __version__
from sessionary.accounts.service import AccountService
from sessionary.app import build_providers
from sessionary.billing.ledger import Owner
from sessionary.billing.money import credits_to_micro
from sessionary.billing.service import CreditsService
from sessionary.cli.common import (
    console,
    database,
    fail,
    migrate_database,
    print_json,
    settings,
    unit_of_work,
)
from sessionary.config import Settings
from sessionary.kit.errors import ApiError
from sessionary.kit.migrate import current_revision


def init(
    as_json: bool = typer.Option(False, "--json", help="Print {account_id, api_key}."),
) -> None:
    """Migrate the database and create the default account (printing its key) if none exists.

    It prints no URL: the server is not running yet, and `serve` prints the one it listens on.
    """
    current = settings()
    with unit_of_work() as session:
        account, issued = AccountService(session).ensure_default_account()
        if issued is not None:
            owner = Owner.account(account.id)
            credits = CreditsService(session)
            credits.ledger.open_account(owner)
            if current.init_credits > 0:
                credits.grant(owner, credits_to_micro(current.init_credits), note="initial credits")
    if as_json:
        print_json({"account_id": account.id, "api_key": issued.plaintext if issued else None})
        return
    console.print("Sessionary is ready: the database is migrated.", highlight=False)
    if issued is not None:
        console.print(
            f"Created account [bold]{account.name}[/bold] ({account.id}) "
            f"with {current.init_credits:f} credits."
        )
        console.print("API key (shown once, store it now):", highlight=False)
        typer.echo(issued.plaintext)
    else:
        console.print(
            f"Account [bold]{account.name}[/bold] ({account.id}) already exists; keys are shown "
            f"only when created. New key: sessionary keys create {account.name}",
            highlight=False,
        )
    console.print(
        "Start the server with `sessionary serve` (it prints its base URL).", highlight=False
    )


def announced_url(current: Settings, host: str, port: int) -> str:
    """The base URL `serve` tells people: the public one if set, else where it listens."""
    if current.public_base_url:
        return current.public_base_url.rstrip("/")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 (a name to call)
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}"


def migrate(as_json: bool = typer.Option(False, "--json", help="Print {revision}.")) -> None:
    """Apply database migrations up to the newest schema."""
    with database() as db:
        revision = current_revision(db)
    if as_json:
        print_json({"revision": revision})
        return
    console.print(f"Database at revision {revision}.")


def serve(
    host: str = typer.Option(None, help="Interface to bind (default from settings: 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default from settings: 8000)."),
    workers: int = typer.Option(1, min=1, help="Worker processes."),
) -> None:
    """Migrate, check the providers, then serve the API with uvicorn."""
    current = settings()
    migrate_database()
    try:  # fail here, in one line, rather than in every worker
        build_providers(current)
    except ApiError as exc:
        fail(exc.message)
    host = host or current.host
    port = port or current.port
    url = announced_url(current, host, port)
    console.print(
        f"Sessionary {__version__}: base URL [bold]{url}/v1[/bold] "
        f"(API reference {url}/docs; Ctrl-C stops it)",
        highlight=False,
        soft_wrap=True,
    )
    uvicorn.run(
        "sessionary.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level=current.log_level.lower(),
        timeout_graceful_shutdown=current.shutdown_grace_seconds,
    )


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(migrate)
    app.command()(serve)
