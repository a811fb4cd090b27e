"""A BERT sentence encoder on ONNX Runtime: all-MiniLM-L6-v2's forward pass without torch.

sentence-transformers ran this model through torch, which made torch (754 MB, and the CUDA
libraries on a stock install) a runtime dependency for 22M parameters. The model is six BERT
layers followed by mean pooling and L2 normalisation. The layers are written here as a small
ONNX graph (`bert_graph`) whose weights are the checkpoint's own safetensors, built in memory at
load, and run by ONNX Runtime on the CPU; the pooling is NumPy. The vectors are
sentence-transformers' (cosine ≥ 0.999, checked by `tests/test_embeddings_equivalence.py`).

ONNX Runtime replaced a NumPy forward pass that ran the same products through OpenBLAS. Timed
side by side here: a query of about ten tokens took 8.5 ms with NumPy on one core, 4 ms with
ONNX Runtime on one core and 2 to 3 ms on two; batches of long records went from 22 to 37 a
second. `make bench` (providers) times it against sentence-transformers.

Tokens come from the model's own `tokenizer.json` through the `tokenizers` package: the very
tokenizer sentence-transformers used, so both the vectors and the billed token counts match.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from sessionary.providers.embeddings.bert_graph import BertGraph, BertShape, bert_graph

Matrix = NDArray[np.float32]

# Padded tokens per batch at most: attention's buffers grow with texts times length², so 64 texts of
# 256 tokens took 1.4 GB while they ran. Batches of 8 such texts were also faster (17 records/s
# against 13.5 on 2 cores: less memory traffic); short texts still go 64 at a time.
BATCH_TOKENS = 2048


def _graph_of(raw: dict[str, Matrix], shape: BertShape) -> BertGraph:
    """The graph and its weights; the checkpoint's own arrays are freed when this returns."""
    weights = {
        name.removeprefix("bert."): value.astype(np.float32, copy=False)
        for name, value in raw.items()
    }
    raw.clear()
    return bert_graph(weights, shape)


def batches(ids: list[list[int]], batch_size: int) -> Iterator[list[int]]:
    """Indices of `ids` in model calls: longest first, each call padded to its longest member
    (as sentence-transformers does, so little work goes to padding), of at most `batch_size`
    sequences and `BATCH_TOKENS` padded tokens."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    start = 0
    while start < len(order):
        size = max(1, min(batch_size, BATCH_TOKENS // max(1, len(ids[order[start]]))))
        yield order[start : start + size]
        start += size


class BertEncoder:
    """Mean-pooled, unit-length sentence vectors from a BERT checkpoint in safetensors."""

    def __init__(self, model_dir: Path, max_tokens: int, threads: int | None = None) -> None:
        import onnxruntime
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text())
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"Unsupported activation {config['hidden_act']!r}.")
        shape = BertShape(
            hidden=int(config["hidden_size"]),
            heads=int(config["num_attention_heads"]),
            layers=int(config["num_hidden_layers"]),
            eps=float(config.get("layer_norm_eps", 1e-12)),
        )
        self.hidden = shape.hidden
        self.max_tokens = max_tokens
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # The file pads and truncates at 128; sentence-transformers truncates at the model's
        # max_seq_length and pads per batch, which `encode_batch` does.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)
        model = _graph_of(load_file(str(model_dir / "model.safetensors")), shape)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about the graph's own choices are not news
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        # Idle threads sleep instead of spinning: a spinning thread takes a core from the event
        # loop and the database between two short queries.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No arena: it keeps the largest batch's buffers for good (a server that had ingested
        # records of 256 tokens in batches of 64 held 2.4 GB); without it they go back to the
        # allocator after each batch. Measured side by side: the same time on a query, and
        # about 5% less speed on batches of long records (50 against 53 a second).
        options.enable_cpu_mem_arena = False
        # The session reads the weights in place: they live as long as it does.
        self._arrays = model.weights
        self._weights = [onnxruntime.OrtValue.ortvalue_from_numpy(a) for a in self._arrays.values()]
        options.add_external_initializers(list(self._arrays), self._weights)
        self._session = onnxruntime.InferenceSession(
            model.model, options, providers=["CPUExecutionProvider"]
        )

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """[CLS] … [SEP] ids, truncated to `max_tokens`: what is embedded and what is billed."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def encode(self, texts: Sequence[str], batch_size: int) -> Matrix:
        """One unit vector per text, in order."""
        return self.encode_ids(self.token_ids(texts), batch_size)

    def encode_ids(self, ids: list[list[int]], batch_size: int) -> Matrix:
        """One unit vector per token sequence, in order (`batches`, then `encode_batch`)."""
        result = np.empty((len(ids), self.hidden), dtype=np.float32)
        for chunk in batches(ids, batch_size):
            result[chunk] = self.encode_batch([ids[i] for i in chunk])
        return result

    def encode_batch(self, ids: list[list[int]]) -> Matrix:
        """One model call: the sequences padded to the longest, one unit vector each."""
        count, length = len(ids), max(len(row) for row in ids)
        tokens = np.zeros((count, length), dtype=np.int64)
        mask = np.zeros((count, length), dtype=np.int32)
        for row, seq in enumerate(ids):
            tokens[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feed = {"ids": tokens, "positions": np.arange(length, dtype=np.int64), "mask": mask}
        hidden = self._session.run(None, feed)[0]
        weights = mask.astype(np.float32)
        pooled = np.einsum("bl,bld->bd", weights, hidden) / weights.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Matrix = pooled / np.maximum(norms, np.float32(1e-12))
        return unit
