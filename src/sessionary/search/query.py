"""One search as the service reads it, and the rules on what it asks for.

Routes build a `SearchQuery` from whichever body samsar-js sent (search, or similar records);
the service checks it here before any read or charge, so a query that cannot run costs nothing.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Any

from sessionary.kit.errors import InvalidRequest, PayloadTooLarge
from sessionary.search import detection
from sessionary.search.limits import MAX_RECORD_BYTES
from sessionary.search.models import EmbeddingTemplate
from sessionary.search.records import build_document, flatten

MAX_TERM_CHARS = 2000


@dataclass(frozen=True)
class SearchQuery:
    """What to search and how. Fields hold the body's raw values; the service checks them.

    `similar` is `similar_to_embedding`: neighbours of `term`, or of `record` (a JSON record
    embedded as its document would be), by vector similarity only, with no filter extraction.
    """

    template_id: Any
    route: str
    term: Any = None
    record: Any = None
    params: Any = None
    forced: Any = None
    search_date: date | None = None
    limit: int = 10
    num_candidates: int | None = None
    rerank: bool = False
    similar: bool = False


def _has_text(term: object) -> bool:
    """A string with something to search: not only spaces and invisible format characters
    (zero-width spaces and joiners, byte-order marks), which would embed as noise."""
    return isinstance(term, str) and any(
        not (c.isspace() or unicodedata.category(c) == "Cf") for c in term
    )


def checked_term(query: SearchQuery) -> str | None:
    """The query's text: required for a search; for similar records, the term or else a record."""
    term = query.term
    if query.similar:
        if isinstance(term, str) and _has_text(term):
            return term
        if not isinstance(query.record, dict) or not query.record:
            raise InvalidRequest("Send search_term or search_json.", param="search_term")
        return None
    if not isinstance(term, str) or not _has_text(term):
        raise InvalidRequest("Missing required parameter: 'search_term'.", param="search_term")
    if len(term) > MAX_TERM_CHARS:
        raise InvalidRequest(
            f"search_term is at most {MAX_TERM_CHARS} characters.", param="search_term"
        )
    return term


def record_text(template: EmbeddingTemplate, record: dict[str, Any]) -> str:
    """The text a JSON record would be embedded as in this template, so its neighbours are the
    records that read like it; 413 for a record larger than a stored one may be (measured in
    the plan: on a worker when it is large, `kit/light.py`)."""
    if len(json.dumps(record, default=str)) > MAX_RECORD_BYTES:
        raise PayloadTooLarge(
            f"search_json is larger than {MAX_RECORD_BYTES} bytes.", param="search_json"
        )
    schema = template.schema
    return build_document(
        flatten(record, 0),
        template.field_options,
        detection.structured_paths(schema),
        detection.wordy_paths(schema),
        detection.private_paths(schema),
    ).text
