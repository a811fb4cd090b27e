"""FastAPI dependencies shared by every domain: the request's database session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from sessionary.config import Settings
from sessionary.kit.db import Database

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_database(request: Request) -> Database:
    database: Database = request.app.state.db
    return database


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[Session]:
    """The request's unit of work: committed when the route returns, rolled back if it raises.

    Scoped to the route function (see `DbSession`), so the commit happens before the response
    is sent: an acknowledged write is a durable write.
    """
    with get_database(request).session(write=request.method not in _READ_METHODS) as db:
        yield db


DbSession = Annotated[Session, Depends(get_db, scope="function")]
AppDatabase = Annotated[Database, Depends(get_database)]
AppSettings = Annotated[Settings, Depends(get_settings)]
