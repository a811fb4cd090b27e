"""Embeddings from any OpenAI-compatible `/embeddings` endpoint, normalised to unit length.

A server that answers with token-level vectors (llama.cpp's server does for a generative model,
which has no pooling of its own) is mean-pooled, so every text still gets one vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sessionary.providers.base import EmbeddingBatch
from sessionary.providers.errors import upstream_failure
from sessionary.providers.party_transport import party_headers
from sessionary.providers.remote import LoopClients, require_model, upstream_errors
from sessionary.providers.settings import ProviderSettings
from sessionary.providers.telemetry import count_tokens, observed

SLOT = "EMBEDDINGS"


def _one_vector(embedding: object, label: str) -> np.ndarray:
    try:
        array = np.asarray(embedding, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise upstream_failure(label, "an embedding that is not a list of numbers") from exc
    if array.ndim == 2:
        array = array.mean(axis=0)
    if array.ndim != 1 or array.size == 0:
        raise upstream_failure(label, f"an embedding of shape {array.shape}")
    return array


class OpenAIEmbeddings:
    def __init__(self, settings: ProviderSettings) -> None:
        self.clients = LoopClients(settings, SLOT)
        self.name = require_model(settings, SLOT)
        self.label = f"openai ({self.clients.base_url})"
        self.timeout = settings.timeout_seconds
        self.batch_size = settings.batch_size
        self.dimension = 0  # learned from the first answer
        self.max_input_tokens = 8192

    def load(self) -> None:
        """Nothing to load: the weights live on the server."""

    async def count_tokens(self, texts: Sequence[str]) -> int:
        return self.count_tokens_now(texts)

    def count_tokens_now(self, texts: Sequence[str]) -> int:
        """No tokenizer here: a bound (BPE tokens average about four characters; two is a
        generous ceiling), never above the model's input limit per text."""
        return sum(min(math.ceil(len(t) / 2) + 2, self.max_input_tokens) for t in texts)

    async def embed(self, texts: Sequence[str], party: str = "") -> EmbeddingBatch:
        with observed("embeddings", self.name):
            batch = await self._embed(texts, party)
        count_tokens("embeddings", self.name, batch.input_tokens)
        return batch

    async def _embed(self, texts: Sequence[str], party: str) -> EmbeddingBatch:
        vectors: list[list[float]] = []
        tokens = 0
        with upstream_errors(self.label, self.timeout):
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                answer = await self.clients.get().embeddings.create(
                    model=self.name, input=batch, extra_headers=party_headers(party)
                )
                rows = sorted(answer.data, key=lambda d: d.index)
                if len(rows) != len(batch):
                    raise upstream_failure(
                        self.label, f"{len(rows)} vectors for {len(batch)} texts"
                    )
                matrix = np.stack([_one_vector(row.embedding, self.label) for row in rows])
                norms = np.linalg.norm(matrix, axis=1, keepdims=True)
                matrix = matrix / np.where(norms == 0, 1, norms)
                vectors.extend(matrix.tolist())
                tokens += (
                    answer.usage.prompt_tokens
                    if answer.usage and answer.usage.prompt_tokens
                    else sum(math.ceil(len(t) / 4) for t in batch)
                )
        if vectors:
            self.dimension = len(vectors[0])
        return EmbeddingBatch(vectors, tokens)


def create(settings: ProviderSettings) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(settings)
