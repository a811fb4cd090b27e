"""OpenAI's `POST /v1/embeddings`: raw vectors, billed at the embedding price.

The external-user routes answer samsar-js's `createExternalEmbeddings` (`/v2/external/embeddings`)
through the same service verb and answer shape.
"""

from __future__ import annotations

from fastapi import APIRouter

from sessionary.accounts.principal import UserCaller
from sessionary.billing.headers import credit_headers
from sessionary.kit.json_answer import JSONAnswer
from sessionary.search.dependencies import AppSearch
from sessionary.search.raw_embeddings import embeddings_payload
from sessionary.search.schemas import EmbeddingsRequest

router = APIRouter(tags=["embeddings"])


@router.post("/embeddings", summary="Embeddings (OpenAI's shape), billed per input token")
async def create_embeddings(
    body: EmbeddingsRequest, caller: UserCaller, search: AppSearch
) -> JSONAnswer:
    embedded = await search.embeddings(caller, body, "/v1/embeddings")
    return JSONAnswer(
        embeddings_payload(embedded, body.encoding_format),
        headers=credit_headers(embedded.settlement),
    )
