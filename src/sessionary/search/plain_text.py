"""Plain text → records: what `generate_embeddings_from_plain_text` turns its entries into.

An entry is a string or an object holding its text under any of the names samsar-js and its
callers use; a long text becomes several records (`id#1`, `id#2`, ...), one per passage, so each
vector stands for a passage the embedding model reads whole.
"""

from __future__ import annotations

from typing import Any

from sessionary.kit.errors import InvalidRequest
from sessionary.search.passages import passages
from sessionary.search.schemas import PlainText

TEXT_KEYS = (
    "plain_text",
    "plainText",
    "content",
    "text",
    "cleaned_text",
    "cleanedText",
    "markdown",
    "body",
)
# Unless the caller says otherwise, the text and its address are searched, never filtered on.
DEFAULT_OPTIONS = {"content": {"filterable": False}, "url": {"filterable": False}}


def plain_text_records(body: PlainText) -> list[dict[str, Any]]:
    raw = body.entries if body.entries is not None else body.content
    if raw is None:
        raise InvalidRequest(
            "Send the text as plain_text (or texts, entries, content, ...).", param="plain_text"
        )
    entries = raw if isinstance(raw, list) else [raw]
    records: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"content": entry, "url": body.url, "title": body.title}
        if not isinstance(entry, dict):
            raise InvalidRequest(
                "Each entry is a string or an object.", param=f"plain_text[{index}]"
            )
        text = next(
            (entry[k] for k in TEXT_KEYS if isinstance(entry.get(k), str) and entry[k].strip()),
            None,
        )
        if text is None:
            raise InvalidRequest(
                "An entry needs its text (content, text, ...).", param=f"plain_text[{index}]"
            )
        base = str(entry.get("id") or f"doc{index + 1}")
        pieces = passages(text)
        for number, piece in enumerate(pieces, start=1):
            record = {"id": base if len(pieces) == 1 else f"{base}#{number}", "content": piece}
            for key in ("title", "url", "description", "language"):
                if entry.get(key) is not None:
                    record[key] = entry[key]
            records.append(record)
    return records
