"""The `sessionary` command: one typer sub-app per command group."""

from __future__ import annotations

import typer

from sessionary.cli import accounts, credits, keys, server, templates

app = typer.Typer(
    name="sessionary",
    help="Sessionary: session-bound assistants and semantic search, with prepaid credits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
server.register(app)
app.add_typer(accounts.app, name="accounts")
app.add_typer(keys.app, name="keys")
app.add_typer(credits.app, name="credits")
app.add_typer(templates.app, name="templates")


def main() -> None:
    app()
