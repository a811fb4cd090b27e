"""Helpers shared by the command groups: settings, the database, one-line errors, tables, and
names accepted where an id is expected."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from sessionary.accounts.store import AccountStore
from sessionary.config import Settings, load_settings
from sessionary.kit.db import Database
from sessionary.kit.errors import ApiError
from sessionary.kit.migrate import upgrade

console = Console()
MIN_WRAPPED_WIDTH = 10
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings() -> Settings:
    return load_settings()


@contextmanager
def database(migrate: bool = True) -> Iterator[Database]:
    db = Database(settings())
    try:
        if migrate:
            upgrade(db)
        yield db
    except ApiError as exc:
        fail(exc.message)
    finally:
        db.dispose()


def migrate_database() -> None:
    """Bring the schema up to date (and fail in one line if the database cannot be reached)."""
    with database():
        pass


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """A migrated database and one committed transaction, for admin commands."""
    with database() as db, db.session() as session:
        yield session


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, default=str))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], ids: int = 1) -> None:
    """Rows as a table that never cuts an id (the first `ids` columns).

    On a terminal: a table whose id columns keep their full width and whose other columns wrap;
    when the terminal is too narrow for that, one block per row (the id, then a line per field).
    Piped or redirected: tab-separated lines with a header, every value whole, so an id can be
    copied or cut out with `cut -f1`.
    """
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    if not console.is_terminal:
        typer.echo("\t".join(columns))
        for row in cells:
            typer.echo("\t".join(value.replace("\t", " ").replace("\n", " ") for value in row))
        return
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    # Borders and padding take 3 characters a column; a wrapped column needs some room to be read.
    needed = sum(widths[:ids]) + MIN_WRAPPED_WIDTH * (len(columns) - ids) + 3 * len(columns) + 1
    if needed > console.width:
        label = max(len(name) for name in columns[1:]) if len(columns) > 1 else 0
        for row in cells:
            console.print(row[0], style="bold", highlight=False, soft_wrap=True)
            for name, value in zip(columns[1:], row[1:], strict=True):
                console.print(f"  {name:<{label}}  {value}", highlight=False, soft_wrap=True)
        return
    table = Table()
    for index, name in enumerate(columns):
        if index < ids:
            table.add_column(name, no_wrap=True, min_width=widths[index])
        else:
            table.add_column(name, overflow="fold", min_width=min(widths[index], MIN_WRAPPED_WIDTH))
    for row in cells:
        table.add_row(*row)
    console.print(table)


def resolve_account(session: Session, reference: str) -> str:
    """An account id from an id or a unique name; a one-line error when unknown or ambiguous."""
    store = AccountStore(session)
    if store.get_account(reference) is not None:
        return reference
    named = [a for a in store.list_accounts() if a.name == reference]
    if not named:
        named = [a for a in store.list_accounts() if a.name.casefold() == reference.casefold()]
    if len(named) == 1:
        return named[0].id
    if not named:
        fail(f"No account with the id or name '{reference}' (see: sessionary accounts list).")
    ids = ", ".join(a.id for a in named)
    fail(f"{len(named)} accounts are named '{reference}' ({ids}): give the id.")
