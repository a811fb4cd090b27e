"""`sessionary tokens list|revoke`: the auth tokens client apps hold."""

from __future__ import annotations

import typer

from sessionary.accounts.identity import Principal
from sessionary.accounts.payloads import token_info
from sessionary.accounts.tokens import TokenService
from sessionary.cli.common import (
    console,
    print_json,
    print_table,
    resolve_account,
    unit_of_work,
)

app = typer.Typer(help="Auth tokens (local admin: works on the database directly).")


@app.command("list")
def list_tokens(
    account: str = typer.Argument(..., help="Account id, or its name when unique."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """An account's live auth tokens (ids and lineage; the tokens themselves are not stored)."""
    with unit_of_work() as session:
        account_id = resolve_account(session, account)
        rows = TokenService(session).live_tokens(Principal(account_id, None))
        infos = [token_info(r).model_dump(mode="json") for r in rows]
    if as_json:
        print_json(infos)
        return
    print_table(
        ("id", "external user", "from key", "expires"),
        [(i["id"], i["external_user_id"], i["api_key_id"], i["expires_at"]) for i in infos],
        ids=3,
    )


@app.command("revoke")
def revoke(account_id: str, token_id: str) -> None:
    """Revoke one auth token; every token minted from it stops working too."""
    with unit_of_work() as session:
        row = TokenService(session).revoke_by_id(Principal(account_id, None), token_id)
        console.print(f"Revoked {row.id} ({row.prefix}…).")
