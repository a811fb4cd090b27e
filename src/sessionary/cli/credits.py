"""`sessionary credits grant|show`: local admin over the ledger."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import typer

from sessionary.billing.ledger import Owner
from sessionary.billing.money import credits_to_micro, format_credits
from sessionary.billing.service import CreditsService
from sessionary.cli.common import console, fail, print_json, resolve_account, unit_of_work

app = typer.Typer(help="Credits (local admin: works on the database directly).")


def parse_credits(text: str) -> int:
    """Micro-credits from a positive decimal with at most 6 places, or a one-line error."""
    try:
        micro = credits_to_micro(Decimal(text))
    except (InvalidOperation, ValueError):
        fail(
            f"'{text}' is not an amount of credits (a finite number of at most 10^12, with at "
            "most 6 decimals)."
        )
    if micro <= 0:
        fail("The amount of credits must be positive.")
    return micro


@app.command("grant")
def grant(
    account: str = typer.Argument(..., help="Account id, or its name when unique."),
    credits: str = typer.Argument(..., help="Credits to add (100 credits = 1 USD)."),
    note: str = typer.Option(None, help="Why (kept in the ledger)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Add credits to an account's balance."""
    micro = parse_credits(credits)
    with unit_of_work() as session:
        account_id = resolve_account(session, account)
        balance = CreditsService(session).grant(Owner.account(account_id), micro, note=note)
    if as_json:
        print_json({"account_id": account_id, "remainingCredits": float(format_credits(balance))})
        return
    console.print(f"Granted {format_credits(micro)} credits; balance {format_credits(balance)}.")


@app.command("show")
def show(
    account: str = typer.Argument(..., help="Account id, or its name when unique."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show an account's balance and last top-up."""
    with unit_of_work() as session:
        account_id = resolve_account(session, account)
        owner = Owner.account(account_id)
        service = CreditsService(session)
        balance = service.balance(owner)
        micro = service.ledger.spendable(owner)
        top_up = service.ledger.last_top_up(owner)
    if as_json:
        print_json(balance.model_dump())
        return
    console.print(f"{account_id}: {format_credits(micro)} credits")
    if top_up is not None:
        console.print(
            f"Last top-up: {format_credits(top_up.amount_micro)} credits on "
            f"{top_up.created_at.isoformat()}"
        )
