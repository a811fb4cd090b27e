"""Bounds on what one ingest may bring: records per call, bytes per record, fields per template.

They are checked before any embedding or write, so an oversized upload costs nothing and a
template never grows to a size whose every query and listing would be slow for all tenants.
"""

from __future__ import annotations

import json
from typing import Any

from sessionary.kit.errors import InvalidRequest, PayloadTooLarge

MAX_RECORDS_PER_CALL = 10_000
MAX_FIELDS = 256
MAX_FIELD_NAME_CHARS = 200
MAX_RECORD_BYTES = 100_000
MAX_LIMIT = 100


def check_fields(flat: list[Any], schema: dict[str, Any] | None, max_fields: int) -> None:
    """400 before any work when the records would give the template too many fields, or a
    field name too long: a field bomb (100,000 keys in one upload) made every later query and
    listing of the template cost seconds of CPU for every tenant."""
    paths: set[str] = set((schema or {}).get("fields", {}))
    for record in flat:
        for path in record.values:
            if len(path) > MAX_FIELD_NAME_CHARS:
                raise InvalidRequest(
                    f"A field name is longer than {MAX_FIELD_NAME_CHARS} characters: "
                    f"'{path[:40]}…'.",
                    param="records",
                )
            paths.add(path)
        if len(paths) > max_fields:
            raise InvalidRequest(
                f"These records would give the template more than {max_fields} fields "
                "(SESSIONARY_SEARCH__MAX_FIELDS); nest less or drop fields you do not search.",
                param="records",
                code="too_many_fields",
            )


def check_records(records: Any) -> list[dict[str, Any]]:
    if not isinstance(records, list) or not records:
        raise InvalidRequest("'records' must be a non-empty array of objects.", param="records")
    if len(records) > MAX_RECORDS_PER_CALL:
        raise InvalidRequest(
            f"At most {MAX_RECORDS_PER_CALL} records per call; send more with update_embedding.",
            param="records",
        )
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise InvalidRequest("Each record must be a JSON object.", param=f"records[{index}]")
        try:  # NaN and Infinity are not JSON: SQLite's JSON functions refuse such a record
            size = len(json.dumps(record, default=str, allow_nan=False))
        except ValueError:
            raise InvalidRequest(
                "A record holds NaN or Infinity, which JSON does not allow.",
                param=f"records[{index}]",
            ) from None
        if size > MAX_RECORD_BYTES:
            raise PayloadTooLarge(
                f"records[{index}] is larger than {MAX_RECORD_BYTES} bytes.",
                param=f"records[{index}]",
            )
    return records
