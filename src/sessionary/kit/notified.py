"""Rows every request reads and almost nothing changes (a key, an account's prompt), kept in
the process on PostgreSQL until the database says they changed.

On PostgreSQL each of those reads is a round trip: the key check was one statement of the
seven a turn makes, the account's prompt another. Here a row read once is kept, with the
account it belongs to, and every process drops what it keeps of an account as soon as the
database reports a change to it:

- triggers on the tables send a notice on `CHANNEL` at the commit of any change, naming the
  account changed (migrations 0014 and 0015: the API, the CLI, plain SQL and cascades alike;
  a TRUNCATE names none, and everything is dropped);
- each process listens on its own connection, in a thread of its own (`_listen`), and drops
  the named account's entries at each notice: one account changing its prompt in a loop
  never empties what the processes keep for the others;
- nothing is kept while that connection is not listening: before it first listens, from the
  moment it fails until it listens again (and it clears everything then, since a notice may
  have been missed meanwhile);
- a value read while any notice arrived is not kept (`epoch`: taken before the read, checked
  when the value is put);
- nothing kept is used while the listener has not been heard of for `ALIVE_S` (3 s): a
  connection that went quiet without failing (a stopped server, a dropped network);
- an entry is used for at most `ttl_s` seconds (`auth_cache_seconds`), whatever happens;
- a missing row is never kept: a new key is found at its first use.

So a change reaches every process within the time the notice takes to arrive: milliseconds,
tens of them under load, while the listener's thread waits for the interpreter; the process
that made the change drops the account's entries at its own commit (`drop_at_commit`). Where notices
never arrive (a pooler in transaction mode between the server and PostgreSQL, replication
with triggers off) only `ttl_s` bounds what a process keeps: set it to 0 there.

On SQLite nothing is kept: its reads run on the event loop without a round trip
(`kit/loop_read.py`), and there is no one to notify.
Tests: `tests/test_notified.py`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Any

import structlog
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

log = structlog.get_logger("sessionary.db")

CHANNEL = "sessionary_auth"
APPLICATION_NAME = "sessionary-listen"
MAX_ENTRIES = 10_000
# An account's own entries beyond this evict its own oldest, never another account's: one
# tenant cycling through thousands of keys (or external users' keys) cannot empty the cache.
ACCOUNT_ENTRIES = 100
CHECK_S = 1.0  # how often a quiet listener checks that its connection is alive
ALIVE_S = 3 * CHECK_S  # nothing is used once the listener has not been heard of for this long
RETRY_S = 1.0
# A connection that goes quiet (a network drop, a stopped server) is noticed: TCP keepalives
# (libpq ignores them on a Unix socket), and a bounded connect.
CONNECT = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 5,
           "keepalives_interval": 2, "keepalives_count": 2}  # fmt: skip
# `Session.info` keys: the database's cache (every session), and whether a session's reads may
# be kept (point reads only: they see committed rows, never a transaction's own changes).
NOTIFIED = "sessionary.notified"
KEEPS = "sessionary.keeps"


class NotifiedCache:
    """Values by key, kept while this process listens for `CHANNEL` (PostgreSQL only)."""

    def __init__(self, engine: Engine, ttl_s: float) -> None:
        dialect = engine.dialect
        self.enabled = ttl_s > 0 and dialect.name == "postgresql" and dialect.driver == "psycopg"
        self.ttl_s = ttl_s
        self._connect = dialect.create_connect_args(engine.url) if self.enabled else None
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        # the keys of each account's entries, oldest first (a dict as an ordered set)
        self._of_account: dict[str, dict[Hashable, None]] = {}
        self._epoch = 0
        self._listening = False
        self._alive_until = 0.0  # monotonic: the listener was last heard of ALIVE_S before
        self._last_failure = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.notices = 0  # notices received (for tests and logs)

    @property
    def listening(self) -> bool:
        """Listening, and heard of lately: a listener stuck on a connection that went quiet
        (a stopped server, a dropped network) stops counting after `ALIVE_S`."""
        return self._listening and time.monotonic() < self._alive_until

    def get(self, key: Hashable) -> tuple[bool, Any]:
        """(True, value) for a kept, fresh entry; (False, None) otherwise."""
        entry = self._entries.get(key) if self.listening else None
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def epoch(self) -> int:
        """Take before reading what will be `put`."""
        return self._epoch

    def put(self, key: Hashable, value: Any, epoch: int, account_id: str) -> None:
        """Keep `value`, of `account_id` (a notice naming it drops it), unless a notice came
        (or listening stopped) since `epoch` was taken."""
        if value is None or not self.listening:
            return
        with self._lock:
            if epoch != self._epoch or not self.listening:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
                self._of_account.clear()
            own = self._of_account.setdefault(account_id, {})
            if key not in own and len(own) >= ACCOUNT_ENTRIES:
                oldest = next(iter(own))
                del own[oldest]
                self._entries.pop(oldest, None)
            self._entries[key] = (time.monotonic() + self.ttl_s, value)
            own[key] = None

    def start(self) -> None:
        """Start listening in a daemon thread (once); nothing on SQLite."""
        if not self.enabled or self._thread is not None:
            return
        self._stop = threading.Event()  # an earlier thread, still ending, keeps its own
        self._thread = threading.Thread(
            target=self._listen, args=(self._stop,), name=APPLICATION_NAME, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Keep nothing from now on; the thread ends by itself within `CHECK_S` (a shutdown
        does not wait for it)."""
        self._stop.set()
        self._drop_all(listening=False)
        self._thread = None

    def drop(self, account_id: str | None = None) -> None:
        """Drop the entries of `account_id`, or (None) every entry: a change this process
        committed, or a notice."""
        if account_id is None:
            self._drop_all(listening=self._listening)
            return
        with self._lock:
            self._epoch += 1
            for key in self._of_account.pop(account_id, ()):
                self._entries.pop(key, None)

    def _drop_all(self, *, listening: bool) -> None:
        with self._lock:
            self._epoch += 1
            self._entries.clear()
            self._of_account.clear()
            self._listening = listening

    def _listen(self, stop: threading.Event) -> None:
        import psycopg  # only where PostgreSQL is used

        assert self._connect is not None
        args, kwargs = self._connect
        options = {**CONNECT, **kwargs, "autocommit": True, "application_name": APPLICATION_NAME}
        while not stop.is_set():
            try:
                with psycopg.Connection.connect(*args, **options) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self._heard()
                    self._drop_all(listening=True)  # a notice may have come while not listening
                    self._serve(connection, stop)
            except Exception as exc:
                if not stop.is_set():
                    self._failed(str(exc)[:200])
            self._drop_all(listening=False)
            stop.wait(RETRY_S)
        self._drop_all(listening=False)  # stopped while it listened

    def _serve(self, connection: Any, stop: threading.Event) -> None:
        """Drop the account a notice names (all, for one naming none); check the connection
        whenever `CHECK_S` passes quietly."""
        while not stop.is_set():
            quiet = True
            for notice in connection.notifies(timeout=CHECK_S, stop_after=1):
                quiet = False
                self.notices += 1
                self.drop(notice.payload or None)
            if quiet:
                connection.execute("SELECT 1")
            self._heard()

    def _heard(self) -> None:
        self._alive_until = time.monotonic() + ALIVE_S
        self._last_failure = ""

    def _failed(self, reason: str) -> None:
        """A warning when listening stops, or stops for another reason; the retries that
        fail the same way, once a second, are debug lines."""
        emit = log.debug if reason == self._last_failure else log.warning
        emit("notices_lost", reason=reason, retry_s=RETRY_S, keeping="nothing")
        self._last_failure = reason


def notified_of(session: Session) -> NotifiedCache | None:
    """The cache a session's reads may be kept in; None where they may not (`Database` puts
    it in `Session.info`)."""
    found = session.info.get(NOTIFIED)
    return found if isinstance(found, NotifiedCache) and session.info.get(KEEPS) else None


def drop_at_commit(session: Session, account_id: str) -> None:
    """This process drops what it keeps of `account_id` as soon as `session` commits, without
    waiting for the notice: the process that made a change (a revoked key) never serves the
    old value after it answered. Other processes drop it at the notice, milliseconds later."""
    found = session.info.get(NOTIFIED)
    if isinstance(found, NotifiedCache) and found.enabled:
        event.listen(session, "after_commit", lambda _s: found.drop(account_id), once=True)
