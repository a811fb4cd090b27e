"""Structured filters from a plain-language query, grounded in the template's schema.

The rules know English, not a domain: which words bound a number (`quantities`), how a value or
a field is named (`vocabulary`: folded spellings, names split into words, distinctive words,
the owner's `aliases` / `value_aliases`, and the embedding model's sense of which words are
alike). Passes, each taking the words it uses so a later pass cannot reuse them:

1. categorical values: whole values (`grunerlokka`, `gruner lokka` → `Grünerløkka`), taught
   phrases, distinctive words (`entire` → `Entire home/apt`, `japanese` → `Japan`); `A or B`
   is a set, `not A` / `except A` an inequality;
2. booleans named by their field (`superhost`, `instant book`, `not instant bookable`);
3. dates (`in 1975`, `after 1978`, `between 1976 and 1979`, `last 3 months`) and numbers with
   their bounds (`quantities`);
4. words left over that the embedding model places close to a value's distinctive word
   (`whole` → `entire`, `american` → `USA`).

Private fields (not retrievable) are never extracted: only explicit filters may use them.
Every phrase used for a filter leaves the query; what remains is searched semantically.
"""

from __future__ import annotations

import copy
import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import date
from typing import Any

from sessionary.kit.loop_units import leave_the_loop
from sessionary.search import quantities
from sessionary.search.records import fold
from sessionary.search.vocabulary import (
    FUNCTION_WORDS,
    FieldWords,
    Semantic,
    compact,
    field_words,
    same_stem,
    singular,
)

NEGATIONS = {"not", "no", "without", "except", "excluding", "non", "but"}
ARTICLES = {"a", "an", "the", "any"}
# Words that may stand between a negation and what it negates ("not made in Japan").
NEGATION_GAP = {"from", "in", "made", "built", "located", "based", "at", "of", "on", "by"}
# Answers an extractor remembers when its caller asks it to (with the query cache on).
REMEMBERED_TERMS = 256
_TOKEN = re.compile(r"\$?\d+(?:[.,]\d+)*k?\+?|[a-z]+")


class Query:
    def __init__(self, term: str) -> None:
        self.tokens: list[str] = _TOKEN.findall(fold(term))
        self.used = [False] * len(self.tokens)

    def free(self, index: int) -> bool:
        return 0 <= index < len(self.tokens) and not self.used[index]

    def token(self, index: int) -> str | None:
        return self.tokens[index] if 0 <= index < len(self.tokens) else None

    def take(self, *indices: int) -> None:
        for i in indices:
            if 0 <= i < len(self.tokens):
                self.used[i] = True

    def phrase_before(self, end: int, phrase: tuple[str, ...]) -> bool:
        start = end - len(phrase)
        return (
            start >= 0
            and tuple(self.tokens[start:end]) == phrase
            and all(self.free(i) for i in range(start, end))
        )

    def remaining(self) -> str:
        kept = [t for t, used in zip(self.tokens, self.used, strict=True) if not used]
        while kept and kept[-1] in FUNCTION_WORDS | {"than", "or", "but"}:
            kept.pop()
        while kept and kept[0] in {"and", "or", "but", "with", "than"}:
            kept.pop(0)
        return " ".join(kept)


class ValueIndex:
    """A categorical field's ways of naming its values, indexed by the query words that can
    start them, built once per extractor. Trying every phrase at every position of the query
    cost a third of a millisecond a search on the Oslo listings (thousands of comparisons for
    a dozen words); here each word is looked up. The matches and their order are those of that
    plain scan (`tests/test_search_extraction.py -k index`): phrase by phrase (values, then
    taught phrases), each by position, a whole phrase before the same letters spaced otherwise
    (widest last); then distinctive words, word by word, each by position."""

    def __init__(self, entry: FieldWords) -> None:
        self.path = entry.path
        phrases = [(v, ws) for v, ws in entry.values.items() if ws]
        phrases += [(v, ws) for v, taught in entry.value_aliases.items() for ws in taught]
        # first word -> (phrase order, value, words); letters without spaces -> (order, value, n)
        self.by_first: dict[str, list[tuple[int, str, list[str]]]] = {}
        self.by_letters: dict[str, list[tuple[int, str, int]]] = {}
        for order, (value, value_words) in enumerate(phrases):
            self.by_first.setdefault(value_words[0], []).append((order, value, value_words))
            squeezed = "".join(value_words)
            self.by_letters.setdefault(squeezed, []).append((order, value, len(value_words)))
        # distinctive word -> (order, value) when the word itself counts (not stem-only), and
        # by its first four letters (what any two words of one stem share) for stems.
        self.exact: dict[str, tuple[int, str]] = {}
        self.by_stem: dict[str, list[tuple[int, str, str]]] = {}
        for order, (word, value) in enumerate(entry.distinctive.items()):
            # A one-word value: its exact form is matched as a phrase.
            stem_only = len(entry.values.get(value, [])) < 2 and word == compact(value)
            if not stem_only:
                self.exact[word] = (order, value)
            if len(word) >= 4:
                self.by_stem.setdefault(word[:4], []).append((order, word, value))

    def matches(self, tokens: list[str]) -> list[tuple[int, int, str, str]]:
        path = self.path
        phrased: list[tuple[tuple[int, int, int], tuple[int, int, str, str]]] = []
        for start, token in enumerate(tokens):
            for order, value, value_words in self.by_first.get(token, ()):
                if tokens[start : start + len(value_words)] == value_words:
                    phrased.append(
                        ((order, start, 0), (start, start + len(value_words), path, value))
                    )
            for width in range(1, 5):  # the same letters spaced otherwise
                if start + width > len(tokens):
                    break
                for order, value, n in self.by_letters.get(
                    "".join(tokens[start : start + width]), ()
                ):
                    if width != n:
                        phrased.append(((order, start, width), (start, start + width, path, value)))
        named: list[tuple[tuple[int, int], tuple[int, int, str, str]]] = []
        for i, token in enumerate(tokens):
            if not token.isalpha():
                continue
            exact = self.exact.get(token)
            if exact is not None:
                named.append(((exact[0], i), (i, i + 1, path, exact[1])))
            if len(token) >= 4:
                for order, word, value in self.by_stem.get(token[:4], ()):
                    if token != word and same_stem(token, word):
                        named.append(((order, i), (i, i + 1, path, value)))
        phrased.sort(key=lambda m: m[0])
        named.sort(key=lambda m: m[0])
        return [m for _, m in phrased] + [m for _, m in named]


# On the event loop, the passes run for terms and templates up to these sizes (a 2,000-character
# term against 250 fields took 1.3-1.8 s); larger ones run on a worker. A remembered answer is a
# lookup, wherever it runs.
LOOP_TERM_CHARS = 256
LOOP_FIELDS = 64


class Extractor:
    def __init__(
        self,
        schema: dict[str, Any],
        options: dict[str, Any] | None = None,
        semantic: Semantic | None = None,
        remember: int = 0,
    ) -> None:
        self.fields: dict[str, dict[str, Any]] = schema["fields"]
        self.ranges: dict[str, dict[str, str]] = schema.get("ranges", {})
        self.semantic = semantic
        options = options or {}
        self.words: dict[str, FieldWords] = {
            path: field_words(path, info, options.get(path))
            for path, info in self.fields.items()
            if self._extractable(info)
        }
        self._indexes = {
            path: ValueIndex(entry)
            for path, entry in self.words.items()
            if entry.kind == "categorical"
        }
        # A field's similarity threshold depends only on its words and the model: computed on
        # the first query that needs it (a product and a median over its values' words).
        self._thresholds: dict[str, float] = {}
        # Up to `remember` answers by (term, date): the same words against the same schema give
        # the same filters, so a repeated query skips the passes (callers turn it off with the
        # query cache, so a server without one measures a new query's whole cost).
        self.remember = remember
        self._answers: OrderedDict[tuple[str, date], tuple[dict[str, Any], str]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _extractable(info: dict[str, Any]) -> bool:
        return not info.get("private") and info.get("filterable") is not False

    def of_kind(self, *kinds: str) -> list[str]:
        return [p for p, w in self.words.items() if w.kind in kinds]

    def extract(self, term: str, search_date: date | None = None) -> tuple[dict[str, Any], str]:
        """The filters the term names, and what is left of it (copies: callers add to them)."""
        key = (term, search_date or date.today())
        if self.remember:
            with self._lock:
                known = self._answers.get(key)
                if known is not None:
                    self._answers.move_to_end(key)
            if known is not None:
                return copy.deepcopy(known[0]), known[1]
        if len(term) > LOOP_TERM_CHARS or len(self.fields) > LOOP_FIELDS:
            leave_the_loop("a long term or a wide template")  # its passes cost words by fields
        filters, rest = self._passes(term, key[1])
        if self.remember:
            with self._lock:
                self._answers[key] = (copy.deepcopy(filters), rest)
                while len(self._answers) > self.remember:
                    self._answers.popitem(last=False)
        return filters, rest

    def _passes(self, term: str, search_date: date) -> tuple[dict[str, Any], str]:
        query = Query(term)
        filters: dict[str, Any] = {}
        self._categorical(query, filters)
        self._booleans(query, filters)
        quantities.dates(self, query, filters, search_date)
        quantities.numbers(self, query, filters)
        if self.semantic is not None:
            self._similar_values(query, filters)
        return filters, query.remaining()

    # Categorical values

    def _value_matches(self, query: Query) -> list[tuple[int, int, str, str]]:
        """(start, end, path, value) for every way the query names a value: field by field, its
        phrases' matches (phrase by phrase, then by position), then its distinctive words'
        (`ValueIndex`, which finds them in the query's words instead of trying each phrase at
        each position)."""
        found: list[tuple[int, int, str, str]] = []
        for index in self._indexes.values():  # the categorical fields, in the schema's order
            found.extend(index.matches(query.tokens))
        return found

    def _categorical(self, query: Query, filters: dict[str, Any]) -> None:
        matches = self._value_matches(query)
        matches.sort(key=lambda m: (-(m[1] - m[0]), m[0]))
        chosen: list[tuple[int, int, str, str]] = []
        for match in matches:
            if all(query.free(i) for i in range(match[0], match[1])):
                query.take(*range(match[0], match[1]))
                chosen.append(match)
        self._apply_values(query, filters, chosen)

    def _apply_values(
        self, query: Query, filters: dict[str, Any], chosen: list[tuple[int, int, str, str]]
    ) -> None:
        chosen.sort()
        by_field: dict[str, list[tuple[int, int, str]]] = {}
        for start, end, path, value in chosen:
            by_field.setdefault(path, []).append((start, end, value))
        for path, found in by_field.items():
            values = list(dict.fromkeys(v for _, _, v in found))
            negated = self.negated(query, found[0][0])
            for (_, end, _), (start, _, _) in itertools.pairwise(found):
                query.take(*[i for i in range(end, start) if query.tokens[i] in ("or", ",")])
            if path in filters:
                continue  # an earlier pass named this field already
            if negated and len(values) == 1:
                filters[path] = {"ne": values[0]}
            elif len(values) == 1:
                filters[path] = values[0]
            else:
                filters[path] = {"in": values}

    def negated(self, query: Query, start: int) -> bool:
        """A negation right before `start`, over articles and a few linking words."""
        index, gap = start - 1, 0
        while index >= 0 and (
            query.tokens[index] in ARTICLES or (query.tokens[index] in NEGATION_GAP and gap < 2)
        ):
            gap += query.tokens[index] in NEGATION_GAP
            index -= 1
        if index >= 0 and query.tokens[index] in NEGATIONS and query.free(index):
            query.take(*range(index, start))
            return True
        return False

    # Booleans

    def _booleans(self, query: Query, filters: dict[str, Any]) -> None:
        tokens = query.tokens
        for path in self.of_kind("boolean"):
            entry = self.words[path]
            if not entry.name:
                continue
            key = max(entry.name, key=len)
            others = [w for w in entry.name if w != key]
            for index, token in enumerate(tokens):
                if not query.free(index):
                    continue
                word = singular(token)
                joined = word + singular(tokens[index + 1]) if index + 1 < len(tokens) else ""
                width = 1
                if joined == key and query.free(index + 1):
                    width = 2  # "super host"
                elif word != key and not (
                    same_stem(word, key) and self._beside(query, index, others)
                ):
                    continue
                start = index
                for offset in (-1, width):
                    near = index + offset
                    if query.free(near) and singular(tokens[near]) in others:
                        query.take(near)
                        start = min(start, near)
                query.take(*range(index, index + width))
                filters[path] = not self.negated(query, start)
                break

    @staticmethod
    def _beside(query: Query, index: int, others: list[str]) -> bool:
        """A stem alone (`book`) names a flag only next to another word of its name."""
        return any(
            (near := query.token(index + offset)) is not None and singular(near) in others
            for offset in (-1, 1)
        )

    # Values named by a word the model finds alike

    def _similar_values(self, query: Query, filters: dict[str, Any]) -> None:
        assert self.semantic is not None
        candidates = {
            i: token
            for i, token in enumerate(query.tokens)
            if query.free(i)
            and token.isalpha()
            and len(token) >= 3
            and any(vowel in token for vowel in "aeiouy")  # a code or a typo, not a word
            and token not in FUNCTION_WORDS | NEGATIONS | quantities.BOUND_WORDS
            and not any(w.names([token]) for w in self.words.values())
        }
        if not candidates:
            return
        chosen: list[tuple[int, int, str, str]] = []
        best: dict[int, tuple[float, str, str]] = {}
        for path in self.of_kind("categorical"):
            if path in filters:
                continue
            entry = self.words[path]
            targets = list(entry.distinctive)
            if not targets:
                continue
            threshold = self._thresholds.get(path)
            if threshold is None:
                groups = [
                    [w for w in entry.distinctive if entry.distinctive[w] == v]
                    for v in entry.values
                ]
                threshold = self.semantic.threshold([g for g in groups if g])
                self._thresholds[path] = threshold
            hits = self.semantic.best(list(dict.fromkeys(candidates.values())), targets, threshold)
            for i, token in candidates.items():
                if token in hits:
                    word, score = hits[token]
                    if score > best.get(i, (0.0, "", ""))[0]:
                        best[i] = (score, path, entry.distinctive[word])
        for i, (_, path, value) in best.items():
            query.take(i)
            chosen.append((i, i + 1, path, value))
        self._apply_values(query, filters, chosen)

    # Helpers for `quantities`

    def numeric_fields(self) -> list[str]:
        return self.of_kind("number")

    def fields_named(self, tokens: list[str], kinds: tuple[str, ...]) -> list[str]:
        content = [t for t in tokens if t.isalpha() and t not in FUNCTION_WORDS]
        if not content:
            return []
        return [p for p in self.of_kind(*kinds) if self.words[p].names(content)]

    def name_words_of(self, path: str) -> set[str]:
        entry = self.words.get(path)
        if entry is None:
            return set()
        return set(entry.name) | {w for alias in entry.aliases for w in alias}


class Extractors:
    """Extractors kept by their caller's key (a template's id and version, and the model),
    so a search does not rebuild the schema's words and thresholds. An extractor only reads
    what it was built from; every change to a template's schema or options bumps its version,
    which makes a new key."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, Extractor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], Extractor]) -> Extractor:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        leave_the_loop("an extractor to build")
        built = build()
        with self._lock:
            self._entries[key] = built
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return built


EXTRACTORS = Extractors()
