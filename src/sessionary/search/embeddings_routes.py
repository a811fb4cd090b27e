"""OpenAI's `POST /v1/embeddings`: raw vectors, billed at the embedding price.

The same handler answers samsar-js's `createExternalEmbeddings` (`/v2/external/embeddings`).
The openai SDK asks for base64 by default (little-endian float32), so both encodings are served.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from sessionary.accounts.identity import Principal
from sessionary.accounts.principal import UserCaller
from sessionary.billing.headers import credit_headers
from sessionary.kit.errors import InvalidRequest
from sessionary.search.routes import service

router = APIRouter(tags=["embeddings"])

MAX_INPUTS = 2048
MAX_INPUT_CHARS = 32_000


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str | list[Any]
    model: str | None = Field(default=None, max_length=200)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65_536, strict=True)
    user: str | None = Field(default=None, max_length=256)


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


async def answer_embeddings(
    body: EmbeddingsRequest, caller: Principal, request: Request, route: str
) -> JSONResponse:
    search = service(request)
    embedder = search.providers.embedder()
    if body.model is not None and not same_model(body.model, embedder.name):
        raise InvalidRequest(
            f"The model '{body.model}' is not served here; the embedding model is "
            f"'{embedder.name}'.",
            param="model",
            code="model_not_found",
        )
    if body.dimensions is not None and body.dimensions != embedder.dimension:
        raise InvalidRequest(
            f"'{embedder.name}' gives {embedder.dimension} dimensions, not {body.dimensions}.",
            param="dimensions",
        )
    vectors, tokens, settlement = await search.embed_raw(caller, texts_of(body.input), route)
    data: list[dict[str, Any]] = []
    for index, vector in enumerate(vectors):
        embedding: Any = (
            base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
            if body.encoding_format == "base64"
            else [float(x) for x in vector]
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    payload = {
        "object": "list",
        "data": data,
        "model": embedder.name,
        "dimensions": embedder.dimension,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return JSONResponse(payload, headers=credit_headers(settlement))


@router.post("/embeddings", summary="Embeddings (OpenAI's shape), billed per input token")
async def create_embeddings(
    body: EmbeddingsRequest, caller: UserCaller, request: Request
) -> JSONResponse:
    return await answer_embeddings(body, caller, request, "/v1/embeddings")
