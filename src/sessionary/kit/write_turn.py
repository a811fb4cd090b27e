"""SQLite's write turn: which connection may hold SQLite's one write lock, among this
process's threads and among the processes of one server (`WriteTurn`, `FileTurn`). Taken at
`BEGIN IMMEDIATE` and given back at the end of the transaction by `kit/db.py`'s hooks; lent
to an event loop's next unit while it queues (`kit/loop_units.py`)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

try:  # not on Windows: processes there meet on SQLite's own lock alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

# `WriteTurn`'s holder while the turn is lent to an event loop's next write transaction.
_LENT = object()


class WriteTurn:
    """The turn at SQLite's one write lock, held from `BEGIN IMMEDIATE` to the end of the
    transaction by whichever connection took it: among this process's threads (a lock), and
    among the processes that share the database file (`FileTurn`, when given a path).

    Without the second, processes met on SQLite's own lock, whose busy handler sleeps and polls
    (1, 2, 5, 10 ... up to 100 ms a nap): two workers served fewer turns a second than one."""

    def __init__(self, path: str | None = None) -> None:
        self._lock = threading.Lock()
        self._holder: Any = None  # the DB-API connection whose transaction holds the turn
        self._file = FileTurn(path) if path and FileTurn.supported() else None
        self._lent_to = 0  # the thread the turn is lent to (`lend`), while `_holder` is _LENT

    def take(self, dbapi_connection: Any, timeout_s: float | None) -> str | None:
        """Wait up to `timeout_s` for the turn (None: do not wait at all). None when taken;
        else who holds it: "here" (another thread of this process) or "elsewhere" (another
        process of this server, which holds SQLite's write lock meanwhile)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        taken = (
            self._lock.acquire(blocking=False)
            if timeout_s is None
            else self._lock.acquire(timeout=timeout_s)
        )
        if not taken:
            return "here"
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if self._file is not None and not self._file.take(left):  # within the same deadline
            self._lock.release()
            return "elsewhere"
        self._holder = dbapi_connection
        return None

    def lend(self, thread: int, timeout_s: float | None) -> bool:
        """Take the turn, waiting up to `timeout_s` (None: not at all), for the next write
        transaction that `thread` (an event loop's) begins: `adopt` hands it to that
        transaction's connection, `give_back` returns it if none began. Whether it was taken."""
        if self.take(_LENT, timeout_s) is not None:
            return False
        self._lent_to = thread
        return True

    def adopt(self, dbapi_connection: Any) -> bool:
        """At a write transaction's BEGIN: when the turn is lent to the calling thread, the
        transaction of `dbapi_connection` holds it from now on."""
        if self._holder is _LENT and self._lent_to == threading.get_ident():
            self._holder = dbapi_connection
            return True
        return False

    def give_back(self) -> None:
        """Release the turn if it is still lent (no transaction adopted it)."""
        self.release(_LENT)

    def release(self, dbapi_connection: Any) -> None:
        """Give the turn back if `dbapi_connection` holds it (after its COMMIT or ROLLBACK)."""
        if dbapi_connection is not None and self._holder is dbapi_connection:
            self._holder = None
            if self._file is not None:
                self._file.release()
            self._lock.release()

    def close(self) -> None:
        """Close the file turn's descriptor (the database is being disposed of)."""
        if self._file is not None:
            self._file.close()


class FileTurn:
    """The write turn among processes: an exclusive `flock` on a file beside the database
    (`<database>.writeturn`), taken by the thread that holds this process's turn. The kernel
    drops it with its process, so a crashed holder frees it at once.

    Waiting polls, a tenth of a millisecond between tries at first and a millisecond at most,
    so a turn given back is taken within a millisecond instead of SQLite's next nap. Only
    processes of this server take it: another program writing the file still meets SQLite's
    own lock and busy handler, as before."""

    FIRST_NAP_S = 0.0001
    LAST_NAP_S = 0.001

    def __init__(self, path: str) -> None:
        self.path = f"{path}.writeturn"
        self._fd: int | None = None
        self._pid = 0
        self._held = False

    @staticmethod
    def supported() -> bool:
        return fcntl is not None

    def take(self, timeout_s: float | None) -> bool:
        """Take the file's lock, waiting up to `timeout_s` (None: not at all)."""
        fd = self._open()
        deadline = time.monotonic() + (timeout_s or 0.0)
        nap = self.FIRST_NAP_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if timeout_s is None or time.monotonic() >= deadline:
                    return False
                time.sleep(nap)
                nap = min(nap * 2, self.LAST_NAP_S)
                continue
            self._held = True
            return True

    def release(self) -> None:
        if self._held and self._fd is not None:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)  # a lock still held goes with it
        self._fd, self._held = None, False

    def _open(self) -> int:
        """This process's descriptor of the file (a forked child opens its own: a descriptor
        it inherited shares its parent's lock)."""
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd
