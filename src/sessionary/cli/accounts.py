"""`sessionary accounts ...`: admin commands that work on the database directly."""

from __future__ import annotations

import typer

from sessionary.accounts.service import AccountService
from sessionary.billing.ledger import Owner
from sessionary.billing.service import CreditsService
from sessionary.cli.common import (
    console,
    print_json,
    print_table,
    resolve_account,
    unit_of_work,
)
from sessionary.cli.credits import parse_credits

app = typer.Typer(help="Accounts (local admin: works on the database directly).")


@app.command("create")
def create(
    name: str,
    credits: str = typer.Option(None, help="Credits to grant at creation (100 credits = 1 USD)."),
    as_json: bool = typer.Option(False, "--json", help="Print only {account_id, api_key}."),
) -> None:
    """Create an account and print its id and a new API key (shown once)."""
    micro = parse_credits(credits) if credits is not None else None
    with unit_of_work() as session:
        account, issued = AccountService(session).create_account(name)
        owner = Owner.account(account.id)
        service = CreditsService(session)
        service.ledger.open_account(owner)
        if micro is not None:
            service.grant(owner, micro, note="initial credits")
    if as_json:
        print_json({"account_id": account.id, "api_key": issued.plaintext})
        return
    console.print(f"Account [bold]{account.name}[/bold]: {account.id}")
    console.print("API key (shown once):")
    typer.echo(issued.plaintext)


@app.command("list")
def list_accounts(as_json: bool = typer.Option(False, "--json")) -> None:
    """List accounts."""
    with unit_of_work() as session:
        accounts = AccountService(session).store.list_accounts()
    rows = [{"id": a.id, "name": a.name, "created_at": a.created_at.isoformat()} for a in accounts]
    if as_json:
        print_json(rows)
        return
    print_table(("id", "name", "created"), [(r["id"], r["name"], r["created_at"]) for r in rows])


@app.command("set-assistant")
def set_assistant(
    account: str = typer.Argument(..., help="Account id, or its name when unique."),
    model: str = typer.Option(None, help="The model the account's assistant turns use."),
    system_prompt: str = typer.Option(
        None, "--system-prompt", help="The account's system prompt ('' clears it)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Set an account's assistant model and/or system prompt."""
    with unit_of_work() as session:
        account_id = resolve_account(session, account)
        service = AccountService(session)
        current = service.get_account(account_id)
        prompt = current.system_prompt if system_prompt is None else system_prompt
        current = service.set_assistant(account_id, system_prompt=prompt, model=model)
        shown = {"model": current.assistant_model, "system_prompt": current.system_prompt}
    if as_json:
        print_json({"account_id": account_id, **shown})
        return
    console.print(f"{account_id}: model {shown['model'] or '(server default)'}", highlight=False)
    console.print(f"system prompt: {shown['system_prompt'] or '(default)'}", highlight=False)
