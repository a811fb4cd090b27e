"""What words name a field or one of its values, learnt from the template itself.

Nothing here knows a domain. A field is named by the words of its path (`host_is_superhost`,
`hostIsSuperhost`, `owner.email` split into words, singular and plural alike), by the initials
or a contraction of those words (`mpg` for `Miles_per_Gallon`, `hp` for `horsepower`), by the
owner's `field_options.<field>.aliases`, and by words the bundled embedding model places close
to those. A categorical value is named by its folded spelling (case, accents and spacing
ignored), by its distinctive word (the word no other value of the field has: `entire` for
`Entire home/apt`), by `value_aliases`, and by words the model places close to that word.

"Close" is calibrated on the template's own vocabulary, not on queries: two different values of
one field (or words of two different fields) are by construction different meanings, so a query
word must sit nearer to its match than such pairs typically sit to each other (their median
similarity plus a margin, never under a floor), and clearly nearer to it than to the runner-up
(an ambiguous word names nothing).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from sessionary.search.records import fold, words

# Words that carry no meaning of their own in a field name or a query.
FUNCTION_WORDS = {
    "a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "with", "and", "or", "is",
    "are", "has", "have", "per", "from", "near", "any", "some", "that", "which", "my", "me",
    "i", "want", "need", "looking", "find", "show", "something", "one", "ones",
}  # fmt: skip
NAME_NOISE = {"is", "has", "have", "num", "number", "count", "total", "of", "the", "a", "an"}
SIMILARITY_FLOOR = 0.55  # below this MiniLM calls unrelated words alike
SIMILARITY_MARGIN = 0.05  # above the typical similarity of two different values
RUNNER_UP_GAP = 0.10  # the best match must beat the second best by this much
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

Embed = Callable[[Sequence[str]], np.ndarray]


def singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")) and len(word) > 4:
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def name_words(path: str) -> list[str]:
    """`host_is_superhost` → host, superhost; `maxPrice` → max, price; `owner.email` → owner,
    email. Singular forms; words that only glue a name together are dropped."""
    spaced = _CAMEL.sub(" ", path.replace(".", " ").replace("_", " ").replace("-", " "))
    return [singular(w) for w in words(spaced) if w not in NAME_NOISE]


def compact(text: str) -> str:
    """Folded and without spaces or punctuation: `St. Hanshaugen` and `st hanshaugen` agree."""
    return re.sub(r"[^a-z0-9]", "", fold(text))


def abbreviates(token: str, name: list[str]) -> bool:
    """`mpg` for miles per gallon (initials), `hp` for horsepower (a contraction that keeps the
    first letter and the letters in order). Two letters at least, and never a plain word."""
    if len(token) < 2 or not token.isalpha():
        return False
    initials = "".join(w[0] for w in name if w)
    if len(name) > 1 and token == initials:
        return True
    if len(name) == 1 and len(token) <= 4 and len(name[0]) >= 2 * len(token):
        word = name[0]
        if token[0] != word[0]:
            return False
        rest = iter(word[1:])
        return all(ch in rest for ch in token[1:])
    return False


def same_stem(a: str, b: str) -> bool:
    """`japanese` / `japan`, `booking` / `bookable`: a common start of four letters at least
    that leaves at most three letters of the shorter word."""
    if a == b:
        return True
    common = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        common += 1
    return common >= max(4, min(len(a), len(b)) - 3)


class VectorCache:
    """Word vectors of the embedding model, remembered per model (words recur across queries,
    and a template's vocabulary is asked for at every search)."""

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def vectors(self, model: str, texts: Sequence[str], embed: Embed) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in texts:
                vector = self._entries.get((model, text))
                if vector is not None:
                    found[text] = vector
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            matrix = np.asarray(embed(missing), dtype=np.float32)
            with self._lock:
                for text, vector in zip(missing, matrix, strict=True):
                    self._entries[(model, text)] = vector
                    found[text] = vector
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return found


VECTORS = VectorCache()


@dataclass
class Semantic:
    """Similarity of words through the embedding model; absent when none is configured."""

    model: str
    embed: Embed
    cache: VectorCache = field(default_factory=lambda: VECTORS)

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        found = self.cache.vectors(self.model, list(texts), self.embed)
        return np.vstack([found[t] for t in texts])

    def threshold(self, groups: Sequence[Sequence[str]]) -> float:
        """Above how alike words of different groups (different values, different fields)
        already are: their median similarity plus a margin, and at least the floor."""
        labelled = [(g, w) for g, group in enumerate(groups) for w in group]
        if len({g for g, _ in labelled}) < 2:
            return SIMILARITY_FLOOR + SIMILARITY_MARGIN
        matrix = self.matrix([w for _, w in labelled])
        sims = matrix @ matrix.T
        labels = np.array([g for g, _ in labelled])
        cross = sims[labels[:, None] != labels[None, :]]
        return max(SIMILARITY_FLOOR, float(np.median(cross)) + SIMILARITY_MARGIN)

    def best(
        self, queries: Sequence[str], targets: Sequence[str], threshold: float
    ) -> dict[str, tuple[str, float]]:
        """For each query word, the most similar target word when above `threshold` and clearly
        above the runner-up (an ambiguous word names nothing)."""
        if not queries or not targets:
            return {}
        sims = self.matrix(list(queries)) @ self.matrix(list(targets)).T
        out: dict[str, tuple[str, float]] = {}
        for i, query in enumerate(queries):
            order = np.argsort(-sims[i])
            top = float(sims[i, order[0]])
            second = float(sims[i, order[1]]) if len(order) > 1 else -1.0
            if top >= threshold and top - second >= RUNNER_UP_GAP:
                out[query] = (targets[int(order[0])], top)
        return out


@dataclass
class FieldWords:
    path: str
    kind: str
    name: list[str]
    aliases: list[list[str]]
    values: dict[str, list[str]] = field(default_factory=dict)  # value → its folded words
    value_aliases: dict[str, list[list[str]]] = field(default_factory=dict)
    distinctive: dict[str, str] = field(default_factory=dict)  # word → the one value it names

    def names(self, tokens: Sequence[str]) -> bool:
        """Whether these query words name the field (all of one alias, or a name word)."""
        wanted = [singular(t) for t in tokens]
        if any(alias == wanted for alias in self.aliases):
            return True
        return any(self._names_word(t) for t in wanted)

    def _names_word(self, word: str) -> bool:
        """`word` is a name word, shares its stem or abbreviates the name. Asked of each field
        for most words of every query: the stem and abbreviation rules run only where their
        first letters allow them (a stem shares its first four, an abbreviation its first or
        is the initials), half the cost of an extraction on the Oslo listings before."""
        if word in self.name:
            return True
        stems, initials, first = self._name_keys
        if len(word) >= 4 and word[:4] in stems and any(same_stem(word, w) for w in self.name):
            return True
        if word == initials or (len(word) <= 4 and word[:1] == first):
            return abbreviates(word, self.name)
        return False

    @cached_property
    def _name_keys(self) -> tuple[frozenset[str], str | None, str | None]:
        """The name words' first four letters, the initials of a name of several words, and
        the first letter of a name of one."""
        stems = frozenset(w[:4] for w in self.name if len(w) >= 4)
        initials = "".join(w[0] for w in self.name if w) if len(self.name) > 1 else None
        first = self.name[0][:1] if len(self.name) == 1 and self.name[0] else None
        return stems, initials, first


def field_words(path: str, info: dict[str, Any], options: dict[str, Any] | None) -> FieldWords:
    options = options or {}
    aliases = [[singular(w) for w in words(a)] for a in options.get("aliases", [])]
    entry = FieldWords(path, info["kind"], name_words(path), [a for a in aliases if a])
    if info["kind"] == "categorical":
        values = [str(v) for v in info.get("values", [])]
        entry.values = {v: words(v) for v in values}
        counts: dict[str, int] = {}
        for value_words in entry.values.values():
            for w in set(value_words):
                counts[w] = counts.get(w, 0) + 1
        for value, value_words in entry.values.items():
            own = [w for w in value_words if counts[w] == 1 and w not in FUNCTION_WORDS]
            word = next((w for w in own if len(w) >= 3 and not w.isdigit()), None)
            if word is not None:
                entry.distinctive.setdefault(word, value)
        taught = options.get("value_aliases", {})
        for value, phrases in taught.items():
            stored = next((v for v in values if fold(v) == fold(value)), value)
            entry.value_aliases[stored] = [words(p) for p in phrases if words(p)]
    return entry
