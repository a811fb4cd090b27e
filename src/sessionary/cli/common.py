"""Helpers shared by the command groups: settings, the database, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from sqlalchemy.orm import Session

from sessionary.config import Settings, load_settings
from sessionary.kit.db import Database
from sessionary.kit.errors import ApiError
from sessionary.kit.migrate import upgrade

console = Console()
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
