"""Small real PDFs made in the test, with pypdf (the reader the server uses) as the writer.

Each page holds its lines in the standard Helvetica font, so any PDF reader extracts them; an
optional password encrypts the file as a PDF viewer would see it.
"""

from __future__ import annotations

import base64
import io

from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject


def _escaped(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(
    pages: list[str], *, user_password: str | None = None, owner_password: str | None = None
) -> bytes:
    """A PDF of `pages` (lines split on newlines); `user_password` "" encrypts it openably."""
    writer = PdfWriter()
    for text in pages:
        page = writer.add_blank_page(612, 792)
        font = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        lines = [
            f"BT /F1 11 Tf 72 {720 - 14 * row} Td ({_escaped(line)}) Tj ET"
            for row, line in enumerate(text.split("\n"))
            if line
        ]
        stream = DecodedStreamObject()
        stream.set_data("\n".join(lines).encode("latin-1"))
        page.replace_contents(stream)
    if user_password is not None:
        writer.encrypt(
            user_password=user_password,
            owner_password=owner_password or "owner",
            algorithm="AES-128",
        )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def data_url(data: bytes, media_type: str = "application/pdf") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"
