"""`init`, `migrate` and `serve`."""

from __future__ import annotations

import typer
import uvicorn

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
    settings,
    unit_of_work,
)
from sessionary.kit.errors import ApiError
from sessionary.kit.migrate import current_revision


def init() -> None:
    """Migrate the database and create the default account (printing its key) if none exists."""
    current = settings()
    with unit_of_work() as session:
        account, issued = AccountService(session).ensure_default_account()
        if issued is not None:
            owner = Owner.account(account.id)
            credits = CreditsService(session)
            credits.ledger.open_account(owner)
            if current.init_credits > 0:
                credits.grant(owner, credits_to_micro(current.init_credits), note="initial credits")
    base_url = current.base_url
    console.print(f"Sessionary is ready. Base URL: [bold]{base_url}/v1[/bold]", highlight=False)
    if issued is not None:
        console.print(
            f"Created account [bold]{account.name}[/bold] ({account.id}) "
            f"with {current.init_credits:f} credits."
        )
        console.print("API key (shown once, store it now):", highlight=False)
        typer.echo(issued.plaintext)
        console.print(
            f'Try: curl -H "Authorization: Bearer {issued.plaintext}" {base_url}/v1/credits',
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"Account [bold]{account.name}[/bold] ({account.id}) already exists; keys are shown "
            f"only when created. New key: sessionary keys create {account.id}",
            highlight=False,
        )


def migrate() -> None:
    """Apply database migrations up to the newest schema."""
    with database() as db:
        console.print(f"Database at revision {current_revision(db)}.")


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
    uvicorn.run(
        "sessionary.app:create_app",
        factory=True,
        host=host or current.host,
        port=port or current.port,
        workers=workers,
        access_log=False,
        log_level=current.log_level.lower(),
    )


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(migrate)
    app.command()(serve)
