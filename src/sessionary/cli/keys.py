"""`sessionary keys create|list|revoke`."""

from __future__ import annotations

from typing import Any

import typer

from sessionary.accounts.models import ApiKey
from sessionary.accounts.service import AccountService
from sessionary.cli.common import (
    console,
    print_json,
    print_table,
    resolve_account,
    unit_of_work,
)

app = typer.Typer(help="API keys (local admin: works on the database directly).")


def _row(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "account_id": key.account_id,
        "prefix": key.prefix,
        "name": key.name,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


@app.command("create")
def create(
    account: str = typer.Argument(..., help="Account id, or its name when unique."),
    name: str = typer.Option(None, help="A label to recognise the key by."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create an API key for an account and print it (shown once)."""
    with unit_of_work() as session:
        account_id = resolve_account(session, account)
        issued = AccountService(session).create_key(account_id, name)
    if as_json:
        print_json({"key_id": issued.key.id, "api_key": issued.plaintext})
        return
    console.print(f"Key {issued.key.id} for {account_id} (shown once):")
    typer.echo(issued.plaintext)


@app.command("list")
def list_keys(
    account: str = typer.Argument(None, help="Only this account's keys (id or unique name)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List keys (prefixes only; the secrets are not stored)."""
    with unit_of_work() as session:
        account_id = resolve_account(session, account) if account is not None else None
        rows = [_row(k) for k in AccountService(session).list_keys(account_id)]
    if as_json:
        print_json(rows)
        return
    print_table(
        ("id", "account", "prefix", "name", "last used", "revoked"),
        [
            (
                row["id"],
                row["account_id"],
                row["prefix"] + "…",
                row["name"],
                row["last_used_at"] or "never",
                row["revoked_at"],
            )
            for row in rows
        ],
        ids=2,
    )


@app.command("revoke")
def revoke(key_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Revoke a key: it stops working at once."""
    with unit_of_work() as session:
        key = AccountService(session).revoke_key(key_id)
        row = _row(key)
    if as_json:
        print_json(row)
        return
    console.print(f"Revoked {key.id} ({key.prefix}…).")
