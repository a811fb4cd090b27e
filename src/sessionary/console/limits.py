"""Sign-in attempts per client address: a few failures, then a pause.

Kept in the process's memory: it slows a guesser down without a write per attempt, and a key
or a link has far too many bits to be guessed anyway. Each server process counts on its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

MAX_FAILURES = 10
WINDOW_SECONDS = 300.0


class SignInLimiter:
    def __init__(self, max_failures: int = MAX_FAILURES, window: float = WINDOW_SECONDS) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, client: str) -> int:
        """Seconds until this client may try again (0: it may try now)."""
        now = time.monotonic()
        with self._lock:
            failures = self._recent(client, now)
            if len(failures) < self.max_failures:
                return 0
            return max(1, math.ceil(failures[0] + self.window - now))

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._failures) > 10_000:
                self._failures.clear()
            self._recent(client, time.monotonic()).append(time.monotonic())
