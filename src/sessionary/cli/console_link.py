"""`sessionary console-link [ACCOUNT] [--operator]`: a one-time console sign-in link.

Printed on the server's machine, as Jupyter prints its token URL: whoever can run commands there
may open the console without handling a key. The link works once, for ten minutes.
"""

from __future__ import annotations

import typer

from sessionary.accounts.store import AccountStore
from sessionary.cli.common import fail, print_json, resolve_account, settings, unit_of_work
from sessionary.console.service import LINK_TTL, ConsoleService


def console_link(
    account: str = typer.Argument(
        None, help="Account id or unique name (default: the first account)."
    ),
    operator: bool = typer.Option(
        False, "--operator", help="The session may switch between all accounts."
    ),
    base_url: str = typer.Option(
        None, "--base-url", help="The server's URL as the browser reaches it (default: settings)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print a single-use link that signs a browser into the console."""
    root = (base_url or settings().base_url).rstrip("/")
    with unit_of_work() as session:
        if account is not None:
            account_id = resolve_account(session, account)
        else:
            first = AccountStore(session).first_account()
            if first is None:
                fail("No account yet: run `sessionary init` first.")
            account_id = first.id
        issued = ConsoleService(session).issue_link(account_id, operator=operator)
    url = f"{root}/console/link/{issued.token}"
    if as_json:
        print_json({"url": url, "account_id": account_id, "operator": operator})
        return
    minutes = int(LINK_TTL.total_seconds() // 60)
    typer.echo(f"Open this link once, within {minutes} minutes:", err=True)
    typer.echo(url)
