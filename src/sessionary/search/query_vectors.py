"""Query embeddings remembered per (model, exact text), so a repeated query skips the model.

Embedding the query was most of a search's time (about 60% at 10,000 records), and the same
queries come back: a page of results asked again, a client retrying, several users typing the
same words. The cache keeps the vector and the tokens the model billed for that text; a hit is
billed exactly as the first call was (the embedding price of those tokens), so caching changes
the server's cost, never the caller's. The key is the account and the model's name (so one
tenant cannot time another's queries) and the text unchanged (no case or space folding: a
different text may embed differently). Bounded by entry count
(`SESSIONARY_SEARCH__QUERY_CACHE`; 0 turns it off), least recently used out first; one entry of
384 float32 dimensions is about 1.6 KB, so the default 1,024 hold under 2 MB.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

# Longer texts (a JSON record given to similar_to_embedding) are embedded each time: they are
# rarely repeated word for word, and would make an entry's size depend on the caller.
MAX_CACHED_CHARS = 2000


class QueryVectors:
    """A bounded LRU of (vector, billed tokens) by (model, text); safe across threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str], tuple[np.ndarray, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str, text: str) -> tuple[np.ndarray, int] | None:
        with self._lock:
            entry = self._entries.get((model, text))
            if entry is not None:
                self._entries.move_to_end((model, text))
            return entry

    def put(self, model: str, text: str, vector: np.ndarray, tokens: int) -> None:
        if self.size <= 0 or len(text) > MAX_CACHED_CHARS:
            return
        frozen = np.array(vector, dtype=np.float32)
        frozen.setflags(write=False)  # shared by every later hit: nobody may change it
        with self._lock:
            self._entries[(model, text)] = (frozen, tokens)
            self._entries.move_to_end((model, text))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def cache_scope(account_id: str, model: str) -> str:
    """The query cache's partition: one per account, so another tenant cannot tell from a
    search's speed whether a text was searched recently."""
    return f"{account_id}/{model}"
