"""Structured logs, with the request id bound by the HTTP middleware.

One JSON object a line where logs go to a collector (a pipe or a file), readable coloured lines
where a person watches a terminal; `SESSIONARY_LOG_JSON=true|false` forces either.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog


def json_logs(setting: bool | Literal["auto"], stream: object = None) -> bool:
    """Whether to write JSON lines: the setting, or for "auto" whether stderr is not a TTY."""
    if setting != "auto":
        return bool(setting)
    isatty = getattr(stream or sys.stderr, "isatty", None)
    return not (callable(isatty) and isatty())


def configure_logging(level: str = "INFO", *, json: bool | Literal["auto"] = "auto") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    json = json_logs(json)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
