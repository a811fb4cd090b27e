"""The `sessionary` command: one typer sub-app per command group."""

from __future__ import annotations

import typer

from sessionary.cli import (
    accounts,
    chat,
    credits,
    external_users,
    keys,
    server,
    sessions,
    templates,
)

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
app.add_typer(external_users.app, name="external-users")
app.add_typer(sessions.app, name="sessions")
app.command("chat")(chat.chat)


def main() -> None:
    app()
