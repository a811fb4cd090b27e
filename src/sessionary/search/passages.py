"""Long plain texts cut into passages that an embedding model reads whole."""

from __future__ import annotations


def passages(text: str, size: int = 1200, overlap: int = 150) -> list[str]:
    """Long texts split on paragraph, then sentence, boundaries into passages of about `size`."""
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = max(text.rfind("\n\n", start, end), text.rfind(". ", start, end))
            if cut > start + size // 2:
                end = cut + 1
        out.append(text[start:end].strip())
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return [p for p in out if p]
