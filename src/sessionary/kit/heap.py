"""The garbage collector: the objects a process starts with frozen out of its full
collections, and the time spent in it measured.

A started server holds a few hundred thousand objects that live as long as it does: modules,
classes, the models' and the ORM's structures. Python's full collection walks them all each time
it runs (100-150 ms in a loaded process, every thread stopped meanwhile), to find nothing. Frozen
once the server has started (`gc.freeze`, after a collection that leaves only live objects), they
are skipped: what a collection walks is what requests made since. Once per process: a frozen
object that later becomes garbage in a reference cycle is never freed, so only the start-up's
objects are frozen, never a later server's (tests start many in one process).
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

_frozen = threading.Event()


def freeze_once() -> int:
    """Collect, then freeze every object this process holds; the number frozen (0 when this
    process froze its objects already)."""
    if _frozen.is_set():
        return 0
    _frozen.set()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class _CollectorTime:
    """Seconds this process has spent in the garbage collector (`gc.callbacks`: about a
    microsecond a collection). A collection stops every thread wherever it starts: the loop's
    own short work (`kit/loop_units.py`, `kit/loop_read.py`) leaves these pauses out of the
    time that decides whether the database is too slow to run it there."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def __call__(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began


COLLECTOR_TIME = _CollectorTime()
gc.callbacks.append(COLLECTOR_TIME)
