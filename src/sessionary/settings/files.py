"""`SESSIONARY_FILES__*`: how much of a file sent inline (an `input_file` part) the server reads.

Files are decoded and read before any credit is held, in the request's own worker thread, so
these bounds are what keep one request from spending seconds of CPU on a huge or hostile file.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class FileInputSettings(BaseModel):
    max_bytes: int = Field(
        default=8 * 1024 * 1024,
        gt=0,
        description="Largest decoded file (bytes); the request body limit also bounds it.",
    )
    max_pages: int = Field(
        default=100, ge=1, description="Most pages of one PDF (a longer one is a 400)."
    )
    max_files: int = Field(
        default=10, ge=0, description="Most files in one request (0: file inputs are refused)."
    )
