"""Numbers and dates in a query: which field they bound, and how.

A number is tied to a field by the words around it: after it (`2 bedrooms`, `35 miles per
gallon`, `100 hp`), or before it or its bound (`sleeps 8`, `mpg over 40`, `horsepower around
100`); by the field's vocabulary (`vocabulary.FieldWords.names`) or, failing that, by the
embedding model's sense of which field name a word is close to. Two kinds of field are named
by plain English whatever the domain: a capacity (`4 guests`, `for 4`, `sleeps 8`: at least
that many) and a price (`700 NOK`, `$2,500`, or any bound with no other field: `under 600`).

Bounds: under / below / at most / no more than / up to / max / budget → max = N; less than /
fewer than → max = N - 1 on integer fields; over / above / at least / min / from / N or more /
N+ → min = N; more than → min = N + 1 on integer fields; between A and B → both; around /
about / approximately N → N ± `AROUND` (10 %). A comparative word that is itself a word of the
field's name (`minimum` in `minimum_nights`) names the field instead of bounding it.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from sessionary.search.vocabulary import FUNCTION_WORDS, singular

if TYPE_CHECKING:
    from sessionary.search.extraction import Extractor, Query

AROUND = 0.10
CAPACITY_WORDS = {"guest", "people", "person", "adult", "traveler", "traveller", "sleep", "pax"}
CAPACITY_FIELD = re.compile(r"accommodat|capacity|guest|occupan|sleep|people|person|seat")
MONEY_WORDS = {"nok", "kr", "usd", "eur", "gbp", "dollar", "euro", "krone", "kroner", "$", "buck"}
MONEY_FIELD = re.compile(r"price|cost|rate|fee|amount|budget|rent|fare")
MAX_PHRASES = [
    (("no", "more", "than"), False), (("not", "more", "than"), False), (("at", "most"), False),
    (("up", "to"), False), (("less", "than"), True), (("fewer", "than"), True),
    (("cheaper", "than"), True), (("lower", "than"), True), (("budget", "of"), False),
    (("max", "of"), False), (("under",), False), (("below",), False), (("max",), False),
    (("maximum",), False), (("within",), False), (("budget",), False), (("upto",), False),
]  # fmt: skip
MIN_PHRASES = [
    (("at", "least"), False), (("more", "than"), True), (("greater", "than"), True),
    (("higher", "than"), True), (("no", "less", "than"), False), (("min", "of"), False),
    (("over",), False), (("above",), False), (("min",), False), (("minimum",), False),
    (("from",), False), (("starting", "at"), False),
]  # fmt: skip
AROUND_PHRASES = [
    ("around",),
    ("about",),
    ("approximately",),
    ("roughly",),
    ("circa",),
    ("approx",),
]
AFTER_MIN = [("or", "more"), ("or", "above"), ("or", "higher"), ("plus",), ("and", "up")]
AFTER_MAX = [("or", "less"), ("or", "fewer"), ("or", "below"), ("or", "lower"), ("and", "under")]
BOUND_WORDS = {w for phrases in (MAX_PHRASES, MIN_PHRASES) for p, _ in phrases for w in p} | {
    w for p in AROUND_PHRASES for w in p
}
NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "single": 1, "couple": 2,
}  # fmt: skip
_YEAR = re.compile(r"(19|20)\d\d")


def parse_number(token: str) -> float | None:
    if token in NUMBER_WORDS:
        return float(NUMBER_WORDS[token])
    text = token.lstrip("$").rstrip("+")
    if not text or not text[0].isdigit():
        return None
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
    return int(value) if float(value).is_integer() else round(value, 6)


# Dates


def _years(extractor: Extractor, target: str) -> tuple[int, int] | None:
    info = extractor.fields[target]
    try:
        return int(str(info["min"])[:4]), int(str(info["max"])[:4])
    except (KeyError, ValueError):
        return None


def _date_field(extractor: Extractor, query: Query) -> str | None:
    dates = extractor.of_kind("date")
    named = [p for p in dates if extractor.fields_named(query.tokens, ("date",)) == [p]]
    if named:
        return named[0]
    return dates[0] if len(dates) == 1 else None


def _is_year(extractor: Extractor, target: str, token: str, loose: bool) -> bool:
    if not _YEAR.fullmatch(token):
        return False
    if not loose:
        return True
    span = _years(extractor, target)
    return span is not None and span[0] - 1 <= int(token) <= span[1] + 1


def dates(extractor: Extractor, query: Query, filters: dict[str, Any], today: date) -> None:
    target = _date_field(extractor, query)
    if target is None:
        return
    tokens = query.tokens
    found = False
    for i, token in enumerate(tokens):
        if not query.free(i):
            continue
        before = tokens[i - 1] if i > 0 else ""
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        if after and (
            singular(after) in MONEY_WORDS | CAPACITY_WORDS
            or extractor.fields_named([after], ("number",))
        ):
            continue  # "from 2000 NOK" is a price
        if (
            _is_year(extractor, target, token, loose=True)
            and before == "between"
            and after == "and"
            and i + 2 < len(tokens)
            and _is_year(extractor, target, tokens[i + 2], loose=True)
        ):
            low, high = sorted((int(token), int(tokens[i + 2])))
            filters[target] = {"min": f"{low}-01-01", "max": f"{high}-12-31"}
            query.take(i - 1, i, i + 1, i + 2)
            found = True
        elif _is_year(extractor, target, token, loose=False) and before in (
            "since", "after", "before", "in", "from", "of",
        ):  # fmt: skip
            year = int(token)
            filters[target] = {
                "since": {"min": f"{year}-01-01"},
                "from": {"min": f"{year}-01-01"},
                "after": {"min": f"{year + 1}-01-01"},
                "before": {"max": f"{year - 1}-12-31"},
                "in": {"min": f"{year}-01-01", "max": f"{year}-12-31"},
                "of": {"min": f"{year}-01-01", "max": f"{year}-12-31"},
            }[before]
            query.take(i - 1, i)
            found = True
        elif (
            _is_year(extractor, target, token, loose=True)
            and before not in BOUND_WORDS
            and not any(query.phrase_before(i, p) for p, _ in MAX_PHRASES + MIN_PHRASES)
        ):
            year = int(token)
            filters[target] = {"min": f"{year}-01-01", "max": f"{year}-12-31"}
            query.take(i)
            found = True
        elif tokens[i] == "last" and i + 2 < len(tokens) and tokens[i + 1].isdigit():
            days = {"day": 1, "week": 7, "month": 30, "year": 365}.get(singular(tokens[i + 2]))
            if days:
                start = today - timedelta(days=days * int(tokens[i + 1]))
                filters[target] = {"min": start.isoformat(), "max": today.isoformat()}
                query.take(i, i + 1, i + 2)
                found = True
    if found:
        names = extractor.name_words_of(target)
        query.take(*[i for i, t in enumerate(tokens) if singular(t) in names])


# Numbers


def _capacity_field(extractor: Extractor) -> str | None:
    return next((p for p in extractor.numeric_fields() if CAPACITY_FIELD.search(p.lower())), None)


def money_field(extractor: Extractor) -> str | None:
    return next((p for p in extractor.numeric_fields() if MONEY_FIELD.search(p.lower())), None)


def plausible(extractor: Extractor, path: str | None, value: float) -> bool:
    """Whether a number could be a value of the field: within its observed span widened by
    the span itself (a weak cue such as `for 4` or a merely similar word needs this)."""
    info = extractor.fields.get(path or "", {})
    low, high = info.get("min"), info.get("max")
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return path is not None
    span = max(float(high) - float(low), abs(float(high)), 1.0)
    return float(low) - span <= value <= float(high) + span


def _named(extractor: Extractor, query: Query, at: int, value: float) -> str | None:
    """The numeric field that the word at `at` names (with its neighbours as context)."""
    token = query.token(at)
    if token is None or not token.isalpha() or token in FUNCTION_WORDS or not query.free(at):
        return None
    word = singular(token)
    if word in CAPACITY_WORDS:
        return _capacity_field(extractor)
    if word in MONEY_WORDS:
        return money_field(extractor)
    candidates = extractor.fields_named([token], ("number",))
    if len(candidates) > 1:
        context = {singular(t) for t in query.tokens[max(0, at - 5) : at + 4]}
        scored = sorted(candidates, key=lambda p: -len(extractor.name_words_of(p) & context))
        best = len(extractor.name_words_of(scored[0]) & context)
        if best > len(extractor.name_words_of(scored[1]) & context):
            return scored[0]
        hints = {"least": "min", "max": "max", "most": "max", "min": "min", "minimum": "min"}
        for hint, prefer in hints.items():
            if hint in context:
                picked = [c for c in candidates if prefer in c.lower()]
                if picked:
                    return picked[0]
        picked = [c for c in candidates if "min" in c.lower()]
        return picked[0] if picked else candidates[0]
    if candidates:
        return candidates[0]
    for name in extractor.ranges:
        if word in name.lower().split("_"):
            return f"range:{name}"
    similar = _similar_field(extractor, word)
    return similar if plausible(extractor, similar, value) else None


def _similar_field(extractor: Extractor, word: str) -> str | None:
    semantic = extractor.semantic
    if semantic is None or len(word) < 3 or word in BOUND_WORDS:
        return None
    fields = extractor.numeric_fields()
    groups = [[w for w in extractor.words[p].name if w not in FUNCTION_WORDS] for p in fields]
    targets = [(p, w) for p, group in zip(fields, groups, strict=True) for w in group]
    if not targets:
        return None
    threshold = semantic.threshold([g for g in groups if g])
    hit = semantic.best([word], [w for _, w in targets], threshold).get(word)
    if hit is None:
        return None
    owners = {p for p, w in targets if w == hit[0]}
    return owners.pop() if len(owners) == 1 else None


def _bound_before(query: Query, index: int) -> tuple[str | None, bool, int]:
    for phrases, side in ((MAX_PHRASES, "max"), (MIN_PHRASES, "min")):
        for phrase, strict in phrases:
            if query.phrase_before(index, phrase):
                return side, strict, len(phrase)
    for phrase in AROUND_PHRASES:
        if query.phrase_before(index, phrase):
            return "around", False, len(phrase)
    return None, False, 0


def _bound_after(query: Query, index: int) -> tuple[str | None, int]:
    for phrases, side in ((AFTER_MIN, "min"), (AFTER_MAX, "max")):
        for phrase in phrases:
            end = index + len(phrase)
            if tuple(query.tokens[index:end]) == phrase and all(
                query.free(i) for i in range(index, end)
            ):
                return side, len(phrase)
    return None, 0


def numbers(extractor: Extractor, query: Query, filters: dict[str, Any]) -> None:
    tokens = query.tokens
    for i, token in enumerate(tokens):
        if not query.free(i):
            continue
        value = parse_number(token)
        if value is None:
            continue
        worded = token in NUMBER_WORDS
        if _between(extractor, query, filters, i, value):
            continue
        side, strict, width = _bound_before(query, i)
        if token.endswith("+"):
            side = side or "min"
        path, taken = _field_for(extractor, query, i, width, value)
        if path is None and worded:
            continue  # "one" binds only to a named field
        capacity = _capacity_field(extractor)
        if (
            path is None
            and side is None
            and i > 0
            and tokens[i - 1] == "for"
            and _bound_after(query, i + 1)[0] is None
            and plausible(extractor, capacity, value)
        ):
            path, taken = capacity, [i - 1]
        if path is None and side is None and _bound_after(query, i + 1)[0] is not None:
            taken = [i - 1] if i > 0 and tokens[i - 1] == "for" and query.free(i - 1) else []
            path = money_field(extractor)  # "for 1500 or less": a price
        elif path is None and (side is not None or "$" in token):
            path = money_field(extractor)
        if path is None:
            continue
        names = extractor.name_words_of(path)
        comparative = tokens[i - width : i]
        if side is not None and any(singular(w) in names for w in comparative):
            side = None  # "minimum 2 nights": the word names minimum_nights
        last = max([i, *taken])
        after_side, after_width = _bound_after(query, last + 1)
        if side is None and after_side is not None:
            side, strict = after_side, False
            taken += list(range(last + 1, last + 1 + after_width))
        query.take(i, *taken, *range(i - width, i))
        _apply(extractor, filters, path, value, side, strict)


def _field_for(
    extractor: Extractor, query: Query, i: int, width: int, value: float
) -> tuple[str | None, list[int]]:
    """The field a number bounds, and the indices of the words that named it."""
    tokens = query.tokens
    for at in (i + 1, i - width - 1, i - 1 if width == 0 else -1):
        path = _named(extractor, query, at, value)
        if path is None:
            continue
        names = extractor.name_words_of(path) if not path.startswith("range:") else set()
        taken = [at]
        for j in range(max(0, i - width - 4), min(len(tokens), i + 5)):
            if j != i and query.free(j) and singular(tokens[j]) in names:
                taken.append(j)
        if at == i + 1:  # "35 miles per gallon": the glue inside the name goes too
            j = at + 1
            while j + 1 < len(tokens) and tokens[j] in FUNCTION_WORDS and j + 1 in taken:
                taken.append(j)
                j += 2
        if i > 0 and tokens[i - 1] in ("of", "for") and query.free(i - 1) and width == 0:
            taken.append(i - 1)
        return path, taken
    return None, []


def _between(
    extractor: Extractor, query: Query, filters: dict[str, Any], i: int, value: float
) -> bool:
    tokens = query.tokens
    if not (
        i > 0 and tokens[i - 1] == "between" and i + 2 < len(tokens) and tokens[i + 1] == "and"
    ):
        return False
    upper = parse_number(tokens[i + 2])
    if upper is None:
        return False
    path, taken = _field_for(extractor, query, i + 2, 0, upper)
    if path is None or i + 1 in taken:
        path, taken = _field_for(extractor, query, i, 1, value)
    if path is None:
        path, taken = money_field(extractor), []
    if path is None or path.startswith("range:"):
        return False
    low, high = sorted((value, upper))
    filters[path] = {"min": _clean(low), "max": _clean(high)}
    query.take(i - 1, i, i + 1, i + 2, *taken)
    return True


def _apply(
    extractor: Extractor,
    filters: dict[str, Any],
    path: str,
    value: float,
    side: str | None,
    strict: bool,
) -> None:
    if path.startswith("range:"):
        filters[path.removeprefix("range:")] = _clean(value)
        return
    integer = bool(extractor.fields.get(path, {}).get("integer"))
    if side == "around":
        low, high = value * (1 - AROUND), value * (1 + AROUND)
        if integer:
            low, high = float(round(low)), float(round(high))
        filters[path] = {"min": _clean(low), "max": _clean(high)}
        return
    if side is None:
        if CAPACITY_FIELD.search(path.lower()):
            filters[path] = {"min": _clean(value)}
        else:
            filters[path] = _clean(value)
        return
    step = 1 if integer and strict else 0
    bound = value + step if side == "min" else value - step
    existing = filters.get(path)
    current: dict[str, Any] = existing if isinstance(existing, dict) else {}
    filters[path] = {**current, side: _clean(bound)}
