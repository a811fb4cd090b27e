"""The `sessionary` command: one typer sub-app per command group."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from sessionary.cli import (
    accounts,
    chat,
    console_link,
    credits,
    external_users,
    keys,
    server,
    sessions,
    templates,
    tokens,
)
from sessionary.cli.common import err_console

app = typer.Typer(
    name="sessionary",
    help="Sessionary: session-bound assistants and semantic search, with prepaid credits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
server.register(app)
app.add_typer(accounts.app, name="accounts")
app.add_typer(keys.app, name="keys")
app.add_typer(tokens.app, name="tokens")
app.add_typer(credits.app, name="credits")
app.add_typer(templates.app, name="templates")
app.add_typer(external_users.app, name="external-users")
app.add_typer(sessions.app, name="sessions")
app.command("chat")(chat.chat)
app.command("console-link")(console_link.console_link)


def main() -> None:
    """Run the CLI; a bad setting or value is one line on stderr, never a traceback."""
    try:
        app()
    except ValidationError as exc:  # a SESSIONARY_* setting out of its range
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        _exit(f"invalid setting '{where}': {first.get('msg', 'invalid value')}")
    except (ValueError, ArithmeticError) as exc:
        _exit(str(exc) or type(exc).__name__)
    except SQLAlchemyError as exc:  # an unusable SESSIONARY_DATABASE_URL, a database refusing
        _exit(f"database: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    except OSError as exc:  # a data directory that cannot be created or written
        _exit(f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}".rstrip(": "))


def _exit(message: str) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    sys.exit(1)
