"""Files sent inline (`input_file` parts): decoded, bounded and read as text before any charge.

A file arrives as `file_data` (a base64 data URL, or bare base64) or as a `file_url` that is a
data URL; the server fetches nothing, and `file_id` needs a Files API that is not served here.
PDFs are read with pypdf, text files are decoded; what the model receives is the text, wrapped
in `<file name="...">` lines so it knows where a file starts and ends, and counted and billed as
input tokens like any other text. Every failure (bad base64, a corrupt, encrypted, scanned or
oversized file) is a 400 raised while the turn is planned, so nothing is held or charged.

The stored part is `{"type": "input_file", "filename", "text"}`: the extracted text, never the
file's bytes, so a session's history replays what the model read without keeping megabytes of
base64 in every message.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import mimetypes
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from pypdf import PasswordType, PdfReader

from sessionary.kit.errors import InvalidRequest
from sessionary.settings.files import FileInputSettings

# pypdf logs a warning for every oddity of a malformed file: a client's problem, answered with a
# 400 when it matters, and noise in the operator's logs.
logging.getLogger("pypdf").setLevel(logging.ERROR)

PDF = "application/pdf"
TEXT_TYPES = {
    "application/json",
    "application/xml",
    "application/yaml",
    "application/x-yaml",
    "application/javascript",
    "application/x-ndjson",
    "application/sql",
}
MAX_FILENAME = 255
# What no database stores (NUL, lone surrogates) and what no reader needs (other C0 controls).
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_DATA_URL = re.compile(r"^data:(?P<meta>[^,]*),(?P<data>.*)$", re.DOTALL)


def _bad(message: str, param: str, code: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


@dataclass(frozen=True)
class _Payload:
    data: bytes
    media_type: str  # "" when the sender named none
    charset: str | None


def wrap(filename: str, text: str) -> str:
    """The file as the model reads it (and as a message's text keeps it)."""
    return f'<file name="{filename}">\n{text}\n</file>'


def _is_text_type(media_type: str) -> bool:
    return (
        media_type.startswith("text/")
        or media_type in TEXT_TYPES
        or media_type.endswith(("+json", "+xml"))
    )


class FileReader:
    """Reads the files of one request, counting them against the per-request limit."""

    def __init__(self, limits: FileInputSettings, max_chars: int) -> None:
        self.limits = limits
        self.max_chars = max_chars  # the request's text limit: reading stops once past it
        self.count = 0
        self.chars = 0

    def read(self, source: dict[str, Any], param: str) -> dict[str, Any]:
        """The stored part for one file: `source` holds file_data / file_url / file_id /
        filename (the Responses part itself, or chat completions' `file` object)."""
        self.count += 1
        if self.count > self.limits.max_files:
            raise _bad(
                f"At most {self.limits.max_files} files may be sent in one request.",
                param,
                "too_many_files",
            )
        if source.get("file_id") is not None:
            raise _bad(
                "The Files API is not served here, so a file_id cannot be read: send the file "
                "inline as file_data (a base64 data URL such as data:application/pdf;base64,...).",
                f"{param}.file_id",
                "file_id_not_supported",
            )
        filename = source.get("filename")
        if filename is not None and (
            not isinstance(filename, str) or not 0 < len(filename) <= MAX_FILENAME
        ):
            raise _bad(
                f"filename must be a string of 1 to {MAX_FILENAME} characters.",
                f"{param}.filename",
                "invalid_filename",
            )
        payload = self._payload(source, param)
        media_type = self._media_type(payload, filename, param)
        if filename is None:
            filename = "file.pdf" if media_type == PDF else "file.txt"
        filename = _UNSTORABLE.sub("", filename).replace('"', "'")
        if media_type == PDF:
            text = self._pdf_text(payload.data, filename, param)
        else:
            text = _decoded(payload, filename, param)
        if not text.strip():
            raise _bad(
                f"No text could be read from '{filename}' (a scanned PDF holds only images, "
                "which are not read here).",
                param,
                "file_has_no_text",
            )
        self._check_budget(len(text), param)
        self.chars += len(text)
        return {"type": "input_file", "filename": filename, "text": text}

    def _check_budget(self, chars: int, param: str) -> None:
        if self.chars + chars > self.max_chars:
            raise _bad(
                f"The text of the files exceeds the request's limit of {self.max_chars} "
                "characters.",
                param,
                "file_text_too_long",
            )

    def _payload(self, source: dict[str, Any], param: str) -> _Payload:
        data, url = source.get("file_data"), source.get("file_url")
        if data is not None and url is not None:
            raise _bad("Give file_data or file_url, not both.", param, "invalid_file")
        if url is not None:
            if not isinstance(url, str) or not url.startswith("data:"):
                raise _bad(
                    "This server fetches no files: file_url must be a data URL "
                    "(data:application/pdf;base64,...), or send the file as file_data.",
                    f"{param}.file_url",
                    "file_url_not_supported",
                )
            data, where = url, f"{param}.file_url"
        else:
            where = f"{param}.file_data"
        if not isinstance(data, str) or not data:
            raise _bad(
                "An input_file needs file_data: the file as a base64 data URL "
                "(data:application/pdf;base64,...).",
                where,
                "invalid_file",
            )
        media_type, charset, encoded, is_base64 = "", None, data, True
        match = _DATA_URL.match(data) if data.startswith("data:") else None
        if data.startswith("data:"):
            if match is None:
                raise _bad("A data URL needs a ',' before its data.", where, "invalid_file_data")
            meta = match["meta"].split(";")
            media_type = meta[0].strip().lower()
            is_base64 = meta[-1].strip().lower() == "base64"
            charsets = [m.split("=", 1)[1] for m in meta[1:] if m.lower().startswith("charset=")]
            charset = charsets[0].strip() if charsets else None
            encoded = match["data"]
        # A cheap bound before decoding: base64 is four characters for three bytes.
        if len(encoded) // 4 * 3 > self.limits.max_bytes + 3:
            raise self._too_large(where)
        try:
            raw = (
                base64.b64decode("".join(encoded.split()), validate=True)
                if is_base64
                else unquote_to_bytes(encoded)
            )
        except (binascii.Error, ValueError) as exc:
            raise _bad("file_data is not valid base64.", where, "invalid_file_data") from exc
        if len(raw) > self.limits.max_bytes:
            raise self._too_large(where)
        if not raw:
            raise _bad("The file is empty.", where, "invalid_file_data")
        return _Payload(
            raw, "" if media_type == "application/octet-stream" else media_type, charset
        )

    def _too_large(self, param: str) -> InvalidRequest:
        return _bad(
            f"The file is larger than the limit of {self.limits.max_bytes} bytes.",
            param,
            "file_too_large",
        )

    def _media_type(self, payload: _Payload, filename: str | None, param: str) -> str:
        """The declared type, else the filename's, else what the bytes look like."""
        media_type = payload.media_type
        if not media_type and filename:
            media_type = (mimetypes.guess_type(filename)[0] or "").lower()
        if not media_type:
            media_type = PDF if payload.data.startswith(b"%PDF-") else "text/plain"
        if media_type != PDF and not _is_text_type(media_type):
            raise _bad(
                f"Files of type '{media_type}' are not read here: send a PDF or a text file.",
                param,
                "unsupported_file_type",
            )
        return media_type

    def _pdf_text(self, data: bytes, filename: str, param: str) -> str:
        """The PDF's text, page by page; any failure of the parser is the file's fault.

        pypdf raises its own errors for most malformed files, but a hostile file can surface
        as almost any exception from deep inside it, so every one of them is a 400 here.
        """
        try:
            reader = PdfReader(io.BytesIO(data))
            self._unlock(reader, filename, param)
            pages = len(reader.pages)
            if pages > self.limits.max_pages:
                raise _bad(
                    f"'{filename}' has {pages} pages; the limit is {self.limits.max_pages}.",
                    param,
                    "too_many_pages",
                )
            texts: list[str] = []
            for page in reader.pages:
                text = _UNSTORABLE.sub("", page.extract_text()).strip()
                if text:
                    texts.append(text)
                    self._check_budget(sum(map(len, texts)), param)  # stop reading early
        except InvalidRequest:
            raise
        except Exception as exc:  # hostile input may break the parser anywhere
            raise _bad(
                f"'{filename}' could not be read as a PDF (it may be damaged).",
                param,
                "invalid_file",
            ) from exc
        return "\n\n".join(texts)

    @staticmethod
    def _unlock(reader: PdfReader, filename: str, param: str) -> None:
        """A PDF encrypted without a user password opens in any viewer, so it is read too; one
        that needs a password is refused."""
        if not reader.is_encrypted:
            return
        try:
            opened = reader.decrypt("") != PasswordType.NOT_DECRYPTED
        except Exception:  # an unknown or broken encryption scheme
            opened = False
        if not opened:
            raise _bad(
                f"'{filename}' is encrypted with a password: send it decrypted.",
                param,
                "file_encrypted",
            )


def _decoded(payload: _Payload, filename: str, param: str) -> str:
    """A text file's content: its declared charset, else UTF-8; binary content is a 400."""
    try:
        text = payload.data.decode(payload.charset or "utf-8-sig")
    except (LookupError, UnicodeDecodeError) as exc:
        raise _bad(
            f"'{filename}' is not {payload.charset or 'UTF-8'} text.", param, "invalid_file"
        ) from exc
    if "\x00" in text:
        raise _bad(f"'{filename}' holds binary data, not text.", param, "invalid_file")
    return _UNSTORABLE.sub("", text)
