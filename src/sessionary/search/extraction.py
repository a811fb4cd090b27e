"""Structured filters from a plain-language query, grounded in the template's schema. No LLM.

- Categorical values known to the template, matched on folded words (`grunerlokka` finds
  `Grünerløkka`), or on a value's distinctive leading word (`entire` → `Entire home/apt`);
  `A or B` becomes a set, `not A` an inequality.
- Booleans named by their field (`superhost`, `instant bookable`).
- Numbers with comparatives (`under`, `at least`, `between … and …`, `max`, `1.5k`, `$2,500`),
  tied to a field by the word after them (`2 bedroom`, `100 reviews`, `4 guests` → the capacity
  field); a bare amount goes to the price-like field.
- Ranges (`min_age` / `max_age`) and dates relative to `search_date`.

Every phrase used for a filter leaves the query; what remains is searched semantically.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sessionary.search.records import fold, words

GENERIC = {
    "room", "rooms", "home", "homes", "house", "place", "apt", "apartment", "flat", "unit",
    "the", "and", "with", "for", "new", "big", "small",
}  # fmt: skip
NEGATIONS = {"not", "no", "without", "except", "excluding", "non"}
ARTICLES = {"a", "an", "the", "any"}
STOP = {"is", "has", "have", "the", "a", "an", "of", "number", "num", "count", "total"}
CAPACITY_WORDS = {"guest", "people", "person", "adult", "traveler", "traveller", "sleep", "pax"}
CAPACITY_FIELD = re.compile(r"accommodat|capacity|guest|occupan|sleep|people|person")
MONEY_WORDS = {"nok", "kr", "usd", "eur", "dollar", "euro", "krone", "kroner", "$"}
MONEY_FIELD = re.compile(r"price|cost|rate|fee|amount|budget|rent")
MAX_PHRASES = [
    (("no", "more", "than"), False), (("at", "most"), False), (("up", "to"), False),
    (("less", "than"), True), (("fewer", "than"), True), (("cheaper", "than"), True),
    (("under",), False), (("below",), False), (("max",), False), (("maximum",), False),
    (("within",), False),
]  # fmt: skip
MIN_PHRASES = [
    (("at", "least"), False), (("more", "than"), True), (("greater", "than"), True),
    (("over",), False), (("above",), False), (("min",), False), (("minimum",), False),
    (("from",), False), (("starting", "at"), False),
]  # fmt: skip
_TOKEN = re.compile(r"\$?\d+(?:[.,]\d+)*k?|[a-z]+")


def singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def parse_number(token: str) -> float | None:
    text = token.lstrip("$")
    scale = 1000.0 if text.endswith("k") else 1.0
    text = text.rstrip("k")
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    elif "," in text:
        text = text.replace(",", ".")
    try:
        return float(text) * scale
    except ValueError:
        return None


def _clean(value: float) -> int | float:
    return int(value) if value.is_integer() else value


@dataclass
class Query:
    tokens: list[str]
    used: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.used = [False] * len(self.tokens)

    def free(self, index: int) -> bool:
        return 0 <= index < len(self.tokens) and not self.used[index]

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
        while kept and kept[-1] in {
            "in",
            "for",
            "with",
            "and",
            "or",
            "a",
            "of",
            "at",
            "near",
            "than",
        }:
            kept.pop()
        return " ".join(kept)


class Extractor:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.fields: dict[str, dict[str, Any]] = schema["fields"]
        self.ranges: dict[str, dict[str, str]] = schema.get("ranges", {})

    def of_kind(self, *kinds: str) -> list[str]:
        return [
            p for p, info in self.fields.items()
            if info["kind"] in kinds and info.get("filterable") is not False
        ]  # fmt: skip

    def extract(self, term: str, search_date: date | None = None) -> tuple[dict[str, Any], str]:
        query = Query(_TOKEN.findall(fold(term)))
        filters: dict[str, Any] = {}
        self._categorical(query, filters)
        self._booleans(query, filters)
        self._dates(query, filters, search_date or date.today())
        self._numbers(query, filters)
        return filters, query.remaining()

    # Categorical values

    def _categorical(self, query: Query, filters: dict[str, Any]) -> None:
        matches: list[tuple[int, int, str, str]] = []  # start, end, path, value
        for path in self.of_kind("categorical"):
            values = [str(v) for v in self.fields[path].get("values", [])]
            tokenised = {v: words(v) for v in values}
            leading = [t[0] for t in tokenised.values() if t]
            for value, value_words in tokenised.items():
                if not value_words:
                    continue
                n = len(value_words)
                for start in range(len(query.tokens) - n + 1):
                    if query.tokens[start : start + n] == value_words:
                        matches.append((start, start + n, path, value))
                head = value_words[0]
                if n > 1 and len(head) >= 4 and head not in GENERIC and leading.count(head) == 1:
                    others = {w for v, ws in tokenised.items() if v != value for w in ws}
                    if head not in others:
                        matches += [
                            (i, i + 1, path, value) for i, t in enumerate(query.tokens) if t == head
                        ]
        matches.sort(key=lambda m: (-(m[1] - m[0]), m[0]))
        chosen: list[tuple[int, int, str, str]] = []
        for match in matches:
            if all(query.free(i) for i in range(match[0], match[1])):
                query.take(*range(match[0], match[1]))
                chosen.append(match)
        chosen.sort()
        by_field: dict[str, list[tuple[int, int, str]]] = {}
        for start, end, path, value in chosen:
            by_field.setdefault(path, []).append((start, end, value))
        for path, found in by_field.items():
            values = list(dict.fromkeys(v for _, _, v in found))
            negated = self._negated(query, found[0][0])
            for (_, end, _), (start, _, _) in itertools.pairwise(found):
                query.take(*[i for i in range(end, start) if query.tokens[i] in ("or", ",")])
            if negated and len(values) == 1:
                filters[path] = {"ne": values[0]}
            elif len(values) == 1:
                filters[path] = values[0]
            else:
                filters[path] = {"in": values}

    def _negated(self, query: Query, start: int) -> bool:
        index = start - 1
        while index >= 0 and query.tokens[index] in ARTICLES:
            index -= 1
        if index >= 0 and query.tokens[index] in NEGATIONS and query.free(index):
            query.take(*range(index, start))
            return True
        return False

    # Booleans

    def _booleans(self, query: Query, filters: dict[str, Any]) -> None:
        for path in self.of_kind("boolean"):
            name = [w for w in words(path.split(".")[-1]) if w not in STOP]
            if not name:
                continue
            key = max(name, key=len)
            for index, token in enumerate(query.tokens):
                if token == key and query.free(index):
                    query.take(index)
                    for offset in (-1, 1):
                        if query.free(index + offset) and query.tokens[index + offset] in name:
                            query.take(index + offset)
                    filters[path] = not self._negated(
                        query, index - (1 if index and query.tokens[index - 1] in name else 0)
                    )
                    break

    # Dates

    def _dates(self, query: Query, filters: dict[str, Any], today: date) -> None:
        dates = self.of_kind("date")
        if not dates:
            return
        target = next(
            (p for p in dates if set(words(p)) & set(query.tokens) - STOP),
            dates[0] if len(dates) == 1 else None,
        )
        if target is None:
            return
        tokens = query.tokens
        for i, token in enumerate(tokens):
            if not query.free(i):
                continue
            if (
                re.fullmatch(r"(19|20)\d\d", token)
                and i > 0
                and tokens[i - 1] in ("since", "after", "before", "in", "from")
            ):
                year = int(token)
                bound = {
                    "since": {"min": f"{year}-01-01"},
                    "from": {"min": f"{year}-01-01"},
                    "after": {"min": f"{year + 1}-01-01"},
                    "before": {"max": f"{year - 1}-12-31"},
                    "in": {"min": f"{year}-01-01", "max": f"{year}-12-31"},
                }[tokens[i - 1]]
                filters[target] = bound
                query.take(i - 1, i)
            elif tokens[i] == "last" and i + 2 < len(tokens) and tokens[i + 1].isdigit():
                unit = singular(tokens[i + 2])
                days = {"day": 1, "week": 7, "month": 30, "year": 365}.get(unit)
                if days:
                    start = today - timedelta(days=days * int(tokens[i + 1]))
                    filters[target] = {"min": start.isoformat(), "max": today.isoformat()}
                    query.take(i, i + 1, i + 2)
        for name in words(target):
            for i, token in enumerate(tokens):
                if token == name and target in filters:
                    query.take(i)

    # Numbers

    def _numeric_for_unit(self, unit: str, context: list[str]) -> str | None:
        numbers = self.of_kind("number")
        if unit in CAPACITY_WORDS:
            return next((p for p in numbers if CAPACITY_FIELD.search(p)), None)
        if unit in MONEY_WORDS:
            return self._money_field()
        candidates = [p for p in numbers if unit in {singular(w) for w in words(p)} - STOP]
        if len(candidates) > 1:
            for hint, prefer in (("min", "min"), ("least", "min"), ("max", "max"), ("most", "max")):
                if any(c.startswith(hint) for c in context):
                    picked = [c for c in candidates if prefer in c]
                    if picked:
                        return picked[0]
            picked = [c for c in candidates if "min" in c]
            return picked[0] if picked else candidates[0]
        if candidates:
            return candidates[0]
        for name, _bounds in self.ranges.items():
            if unit in words(name):
                return f"range:{name}"
        return None

    def _money_field(self) -> str | None:
        return next((p for p in self.of_kind("number") if MONEY_FIELD.search(p)), None)

    def _comparative(self, query: Query, index: int) -> tuple[str | None, bool, int]:
        for phrases, side in ((MAX_PHRASES, "max"), (MIN_PHRASES, "min")):
            for phrase, strict in phrases:
                if query.phrase_before(index, phrase):
                    return side, strict, len(phrase)
        return None, False, 0

    def _numbers(self, query: Query, filters: dict[str, Any]) -> None:
        tokens = query.tokens
        for i, token in enumerate(tokens):
            if not query.free(i) or token[0] not in "$0123456789":
                continue
            value = parse_number(token)
            if value is None:
                continue
            if (
                i > 0
                and tokens[i - 1] == "between"
                and i + 2 < len(tokens)
                and tokens[i + 1] == "and"
            ):
                upper = parse_number(tokens[i + 2]) if tokens[i + 2][0] in "$0123456789" else None
                money = self._money_field()
                if upper is not None and money:
                    filters[money] = {"min": _clean(value), "max": _clean(upper)}
                    query.take(i - 1, i, i + 1, i + 2)
                continue
            side, strict, width = self._comparative(query, i)
            unit_at = i + 1
            unit = singular(tokens[unit_at]) if unit_at < len(tokens) else None
            context = tokens[max(0, i - 5) : i]
            path = self._numeric_for_unit(unit, context) if unit else None
            if path is None and "$" in token:
                path = self._money_field()
            taken = [i]
            if path is not None:
                taken.append(unit_at)
                taken += [j for j in range(max(0, i - 4), i) if tokens[j] in words(path)]
                if i > 0 and tokens[i - 1] in ("of", "for") and query.free(i - 1):
                    taken.append(i - 1)
            elif side is not None:
                path = self._money_field()
            if path is None:
                continue
            taken += list(range(i - width, i))
            query.take(*taken)
            self._apply(filters, path, value, side, strict)

    def _apply(
        self, filters: dict[str, Any], path: str, value: float, side: str | None, strict: bool
    ) -> None:
        if path.startswith("range:"):
            filters[path.removeprefix("range:")] = _clean(value)
            return
        integer = bool(self.fields.get(path, {}).get("integer"))
        if side is None:
            if CAPACITY_FIELD.search(path):
                filters[path] = {"min": _clean(value)}
            else:
                filters[path] = _clean(value)
            return
        step = 1 if integer else 0
        bound = value + step if side == "min" and strict else value - step if strict else value
        existing = filters.get(path)
        current: dict[str, Any] = existing if isinstance(existing, dict) else {}
        filters[path] = {**current, side: _clean(bound)}
