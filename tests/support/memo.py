"""The real embedding model, remembering vectors by text so a data set is embedded once per run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from fastapi import FastAPI

from sessionary.providers.base import EmbeddingBatch, EmbeddingModel

_VECTORS: dict[str, tuple[list[float], int]] = {}


class MemoEmbeddings:
    def __init__(self, inner: EmbeddingModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.max_input_tokens = inner.max_input_tokens

    async def count_tokens(self, texts: Sequence[str]) -> int:
        return await self.inner.count_tokens(texts)

    async def embed(self, texts: Sequence[str], party: str = "") -> EmbeddingBatch:
        missing = list(dict.fromkeys(t for t in texts if t not in _VECTORS))
        if missing:
            batch = await self.inner.embed(missing)
            share = max(1, batch.input_tokens // len(missing))
            for text, vector in zip(missing, batch.vectors, strict=True):
                _VECTORS[text] = (vector, share)
        return EmbeddingBatch([_VECTORS[t][0] for t in texts], sum(_VECTORS[t][1] for t in texts))


def memoise_embeddings(app: FastAPI) -> None:
    providers = app.state.providers
    app.state.providers = dataclasses.replace(
        providers, embeddings=MemoEmbeddings(providers.embedder())
    )
