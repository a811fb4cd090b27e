"""Which threads' statements belong to a request, for the tests that count them."""

from __future__ import annotations

import threading

from sessionary.kit.notified import APPLICATION_NAME as LISTENER

# anyio's default worker threads: the server's periodic ticks run there (the sweep of expired
# holds, `billing/metering.py`; the background runs' beat and purge, `assistant/background.py`),
# never a turn's units (`kit/unit_threads.py`, or the event loop on SQLite).
ANYIO_WORKER = "AnyIO worker thread"


def from_a_request() -> bool:
    """Whether the statement being sent comes from a request's work: not the key listener's
    `SELECT 1` every quiet second (`kit/notified.py`), nor a periodic tick, either of which
    may fall inside a counted request (CI runs met both)."""
    return threading.current_thread().name not in (LISTENER, ANYIO_WORKER)
