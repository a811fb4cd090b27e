"""OpenAI's `POST /v1/embeddings` as the search service serves it: inputs checked, the model
named, and the vectors shaped in either encoding the SDKs ask for.

The openai SDK asks for base64 by default (little-endian float32), so both encodings are served.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from sessionary.billing.ledger import Settlement
from sessionary.kit.errors import InvalidRequest

MAX_INPUTS = 2048
MAX_INPUT_CHARS = 32_000


@dataclass
class Embedded:
    """Raw vectors for the caller's texts, and what they cost."""

    vectors: np.ndarray
    tokens: int
    model: str
    dimension: int
    settlement: Settlement


def texts_of(value: str | list[Any]) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not texts:
        raise InvalidRequest("input must not be empty.", param="input")
    if len(texts) > MAX_INPUTS:
        raise InvalidRequest(f"input holds at most {MAX_INPUTS} texts.", param="input")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidRequest(
                "input must be a string or an array of strings (token arrays are not accepted).",
                param=f"input[{index}]",
            )
        if not text.strip() or len(text) > MAX_INPUT_CHARS:
            raise InvalidRequest(
                f"Each input is a non-blank string of at most {MAX_INPUT_CHARS} characters.",
                param=f"input[{index}]",
            )
    return texts


def same_model(asked: str, served: str) -> bool:
    """Case-insensitive, with or without the hub owner ('sentence-transformers/...')."""
    return asked.lower().rsplit("/", 1)[-1] == served.lower().rsplit("/", 1)[-1]


def embeddings_payload(embedded: Embedded, encoding_format: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = []
    for index, vector in enumerate(embedded.vectors):
        embedding: Any = (
            base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
            if encoding_format == "base64"
            else [float(x) for x in vector]
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": embedded.model,
        "dimensions": embedded.dimension,
        "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens},
    }
