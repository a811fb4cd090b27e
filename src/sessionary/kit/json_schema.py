"""The bounds every client JSON Schema meets before anything compiles or follows it.

Schemas reach a grammar compiler (the local model's sampler) and a validator. A reference that
points back at itself turns into a grammar rule that never ends (llama.cpp crashes the process on
it), a deep nesting exhausts Python's stack, and a remote `$ref` would make the server fetch. So
a schema is checked here first, with a 400 naming the parameter: local `#/...` references only,
no reference cycles (recursive schemas are not served), at most MAX_DEPTH levels of nesting and
MAX_NODES objects, and then `jsonschema`'s own check of the keywords.

That last check is slow: about 2.2 ms for a function of eight string parameters (validating it
against the 2020-12 meta-schema), so ten tools cost a turn 22 ms of CPU, and agents send the same
tools on every turn. A schema that passed is remembered, by a digest of its canonical JSON and
the account that sent it (`scope`: as the query-vector cache, so that no tenant can time whether
another sent a schema), for the `_CHECKED` most recent; a schema that failed is checked again
each time (`tests/test_schema_bounds.py -k remembered`).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import jsonschema
import orjson

from sessionary.kit.errors import InvalidRequest

MAX_DEPTH = 32
MAX_NODES = 5_000
_CHECKED = 4_096  # schemas that passed, remembered by digest (32 bytes each)
_passed: OrderedDict[bytes, None] = OrderedDict()
_passed_lock = threading.Lock()


def _walk(schema: Any, param: str) -> dict[str, set[str]]:
    """Every `$ref` target, keyed by the JSON pointer of the subschema that holds it (each
    enclosing subschema counts); 400 past the depth or size bounds."""
    refs: dict[str, set[str]] = {}
    stack: list[tuple[Any, str, int, tuple[str, ...]]] = [(schema, "#", 0, ("#",))]
    nodes = 0
    while stack:
        node, pointer, depth, enclosing = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH or nodes > MAX_NODES:
            raise InvalidRequest(
                f"The schema nests deeper than {MAX_DEPTH} levels or holds more than "
                f"{MAX_NODES} parts.",
                param=param,
                code="schema_too_complex",
            )
        if isinstance(node, dict):
            target = node.get("$ref")
            if target is not None:
                if not isinstance(target, str) or not target.startswith("#"):
                    raise InvalidRequest(
                        "Only local references ('#/...') are followed in a schema; "
                        f"'{str(target)[:80]}' is not one.",
                        param=param,
                        code="schema_remote_ref",
                    )
                for holder in enclosing:
                    refs.setdefault(holder, set()).add(target)
            for key, value in node.items():
                child = f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}"
                stack.append((value, child, depth + 1, (*enclosing, child)))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                child = f"{pointer}/{index}"
                stack.append((value, child, depth + 1, (*enclosing, child)))
    return refs


def _resolves(schema: Any, pointer: str) -> bool:
    node = schema
    for raw in pointer.lstrip("#").split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return False
    return True


def _no_cycle(
    refs: dict[str, set[str]], pointer: str, seen: set[str], done: set[str], param: str
) -> None:
    """400 when following references from `pointer` leads back into it (depth-first)."""
    if pointer in seen:
        raise InvalidRequest(
            f"The schema refers back to itself through '{pointer[:80]}'; recursive schemas "
            "are not supported.",
            param=param,
            code="schema_recursive",
        )
    if pointer in done:
        return
    seen.add(pointer)
    for holder, found in refs.items():
        if holder == pointer or holder.startswith(pointer + "/"):
            for target in found:
                _no_cycle(refs, target, seen, done, param)
    seen.discard(pointer)
    done.add(pointer)


def check_bounds(schema: Any, param: str) -> None:
    """400 (naming `param`) past the depth and size bounds or for a remote reference: the walk
    `check_schema` starts with, without its keyword check (about a millisecond a schema), for a
    schema kept from before it was checked and read back often."""
    _walk(schema, param)


def _digest(schema: dict[str, Any], scope: str) -> bytes | None:
    """The schema's canonical JSON hashed with `scope`; None for what orjson cannot write (an
    integer past 64 bits): such a schema is checked every time."""
    try:
        canonical = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return hashlib.blake2b(canonical, key=scope.encode()[:64], digest_size=32).digest()


def check_schema(schema: dict[str, Any], param: str, *, scope: str = "") -> None:
    """400 (naming `param`) unless the schema is bounded, acyclic, local and valid; at once for
    a schema that passed before for the same `scope` (the account)."""
    digest = _digest(schema, scope)
    if digest is not None:
        with _passed_lock:
            if digest in _passed:
                _passed.move_to_end(digest)
                return
    _check(schema, param)
    if digest is not None:
        with _passed_lock:
            _passed[digest] = None
            while len(_passed) > _CHECKED:
                _passed.popitem(last=False)


def _check(schema: dict[str, Any], param: str) -> None:
    refs = _walk(schema, param)
    targets = {t for found in refs.values() for t in found}
    for target in targets:
        if not _resolves(schema, target):
            raise InvalidRequest(
                f"The schema reference '{target[:80]}' points at nothing.",
                param=param,
                code="schema_bad_ref",
            )
    done: set[str] = set()
    for target in targets:
        _no_cycle(refs, target, set(), done, param)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(
            f"Not a valid JSON Schema: {exc.message}", param=param, code="invalid_schema"
        ) from None
