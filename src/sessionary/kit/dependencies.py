"""FastAPI dependencies shared by every domain: the request's database session.

Dependencies that only read the app's state are `async def`: FastAPI runs a plain `def`
dependency in the thread pool, and a hand-off there and back costs more than the lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from sessionary.config import Settings
from sessionary.kit.db import Database

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.db
    return database


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Iterator[Session]:
    """The request's unit of work: committed when the route returns, rolled back if it raises.

    Scoped to the route function (see `DbSession`), so the commit happens before the response
    is sent: an acknowledged write is a durable write.
    """
    database: Database = request.app.state.db
    with database.session(write=request.method not in _READ_METHODS) as db:
        yield db


def get_write_db(request: Request) -> Iterator[Session]:
    """`get_db` as a write unit of work whatever the method: for the rare GET that writes (a
    sign-in link used once). A read session that then writes would upgrade its lock, and SQLite
    refuses an upgrade at once ("database is locked") while another writer is busy."""
    database: Database = request.app.state.db
    with database.session() as db:
        yield db


DbSession = Annotated[Session, Depends(get_db, scope="function")]
WriteDbSession = Annotated[Session, Depends(get_write_db, scope="function")]
AppDatabase = Annotated[Database, Depends(get_database)]
AppSettings = Annotated[Settings, Depends(get_settings)]
