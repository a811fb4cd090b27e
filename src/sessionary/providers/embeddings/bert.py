"""A BERT sentence encoder in NumPy: the forward pass of all-MiniLM-L6-v2 without torch.

sentence-transformers ran this model through torch, which made torch (754 MB, and the CUDA
libraries on a stock install) a runtime dependency for 22M parameters. The model is six
BERT layers followed by mean pooling and L2 normalisation; written out with float32 matrix
products (BLAS through NumPy) it gives the same vectors (cosine ≥ 0.999 with
sentence-transformers', checked by `tests/test_embeddings_equivalence.py`) and is no slower.

Tokens come from the model's own `tokenizer.json` through the `tokenizers` package: the very
tokenizer sentence-transformers used, so both the vectors and the billed token counts match.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.float32]

# Abramowitz & Stegun 7.1.26: erf to 1.5e-7, below float32's resolution near 1. NumPy has no
# erf, and BERT's GELU is the exact (erf) one, not the tanh approximation.
_ERF_P = np.float32(0.3275911)
_ERF_A = tuple(
    np.float32(a) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)
)
_SQRT_HALF = np.float32(1 / math.sqrt(2))
GELU_ROWS = 128


def gelu(x: Matrix) -> Matrix:
    """x · Φ(x) with Φ through erf, computed in place on `x`'s copies to spare allocations."""
    z = np.abs(x) * _SQRT_HALF
    t = z * _ERF_P
    t += 1
    np.reciprocal(t, out=t)
    poly = t * _ERF_A[0]
    for a in _ERF_A[1:]:
        poly += a
        poly *= t
    # Past |x|/√2 = 9, 1 - erf is below 1e-36: clipping there keeps exp(-z²) a normal float.
    # Left alone it reaches denormals, which the CPU computes some hundred times slower.
    np.minimum(z, np.float32(9), out=z)
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # 1 - erf(|x| / √2)
    # Φ(x) = (1 + erf(x/√2)) / 2: for x ≥ 0 it is 1 - poly/2, for x < 0 it is poly/2.
    poly *= np.float32(0.5)
    phi: Matrix = np.where(x >= 0, np.float32(1) - poly, poly)
    phi *= x
    return phi


def layer_norm(x: Matrix, weight: Matrix, bias: Matrix, eps: float) -> Matrix:
    mean = x.mean(axis=-1, keepdims=True)
    centred: Matrix = x - mean
    var = np.mean(np.square(centred), axis=-1, keepdims=True)
    var += np.float32(eps)
    np.sqrt(var, out=var)
    centred /= var
    centred *= weight
    centred += bias
    return centred


@dataclass(frozen=True)
class Layer:
    qkv: Matrix  # (hidden, 3 · hidden): query, key and value in one product
    qkv_bias: Matrix
    out: Matrix
    out_bias: Matrix
    norm1: tuple[Matrix, Matrix]
    up: Matrix
    up_bias: Matrix
    down: Matrix
    down_bias: Matrix
    norm2: tuple[Matrix, Matrix]


class BertEncoder:
    """Mean-pooled, unit-length sentence vectors from a BERT checkpoint in safetensors."""

    def __init__(self, model_dir: Path, max_tokens: int) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text())
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"Unsupported activation {config['hidden_act']!r}.")
        self.max_tokens = max_tokens
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # The file pads and truncates at 128; sentence-transformers truncates at the model's
        # max_seq_length and pads per batch, which `_batch` does.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)
        raw = load_file(str(model_dir / "model.safetensors"))
        weights = {
            name.removeprefix("bert."): value.astype(np.float32) for name, value in raw.items()
        }
        self._load(weights, int(config["num_hidden_layers"]))

    def _load(self, w: dict[str, Matrix], layers: int) -> None:
        def t(name: str) -> Matrix:
            return np.ascontiguousarray(w[name].T)

        self.words = w["embeddings.word_embeddings.weight"]
        self.positions = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.norm0 = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers: list[Layer] = []
        for i in range(layers):
            p = f"encoder.layer.{i}."
            a = p + "attention."
            self.layers.append(
                Layer(
                    qkv=np.concatenate(
                        [t(f"{a}self.{n}.weight") for n in ("query", "key", "value")], axis=1
                    ),
                    qkv_bias=np.concatenate(
                        [w[f"{a}self.{n}.bias"] for n in ("query", "key", "value")]
                    ),
                    out=t(a + "output.dense.weight"),
                    out_bias=w[a + "output.dense.bias"],
                    norm1=(w[a + "output.LayerNorm.weight"], w[a + "output.LayerNorm.bias"]),
                    up=t(p + "intermediate.dense.weight"),
                    up_bias=w[p + "intermediate.dense.bias"],
                    down=t(p + "output.dense.weight"),
                    down_bias=w[p + "output.dense.bias"],
                    norm2=(w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """[CLS] … [SEP] ids, truncated to `max_tokens`: what is embedded and what is billed."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def encode(self, texts: Sequence[str], batch_size: int) -> Matrix:
        """One unit vector per text, in order."""
        return self.encode_ids(self.token_ids(texts), batch_size)

    def encode_ids(self, ids: list[list[int]], batch_size: int) -> Matrix:
        """One unit vector per token sequence, in order. Sequences run longest first in batches
        padded to their longest member (as sentence-transformers does), so little work goes to
        padding."""
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        result = np.empty((len(ids), self.hidden), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            result[chunk] = self._batch([ids[i] for i in chunk])
        return result

    def _batch(self, ids: list[list[int]]) -> Matrix:
        count, length = len(ids), max(len(row) for row in ids)
        tokens = np.zeros((count, length), dtype=np.int64)
        mask = np.zeros((count, length), dtype=np.float32)
        for row, seq in enumerate(ids):
            tokens[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        x = self.words[tokens] + self.positions[:length] + self.token_type
        x = layer_norm(x.reshape(count * length, self.hidden), *self.norm0, self.eps)
        # Padding keys get the same large negative bias as transformers' extended mask.
        bias = ((1 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for layer in self.layers:
            x = self._layer(layer, x, bias, count, length)
        hidden = x.reshape(count, length, self.hidden)
        pooled = np.einsum("bl,bld->bd", mask, hidden) / mask.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Matrix = pooled / np.maximum(norms, np.float32(1e-12))
        return unit

    def _layer(self, layer: Layer, x: Matrix, bias: Matrix, count: int, length: int) -> Matrix:
        heads, size = self.heads, self.hidden // self.heads
        qkv = x @ layer.qkv
        qkv += layer.qkv_bias
        q, k, v = qkv.reshape(count, length, 3, heads, size).transpose(2, 0, 3, 1, 4)
        scores = q @ k.transpose(0, 1, 3, 2)
        scores *= np.float32(1 / math.sqrt(size))
        scores += bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(count * length, self.hidden)
        attended = context @ layer.out
        attended += layer.out_bias
        attended += x
        x = layer_norm(attended, *layer.norm1, self.eps)
        up: Matrix = x @ layer.up
        up += layer.up_bias
        # GELU on row blocks that stay in the CPU's cache through its dozen element-wise
        # passes (on the whole batch each pass goes to memory). The products stay whole:
        # BLAS is fastest on large operands.
        for start in range(0, up.shape[0], GELU_ROWS):
            up[start : start + GELU_ROWS] = gelu(up[start : start + GELU_ROWS])
        out: Matrix = up @ layer.down
        out += layer.down_bias
        out += x
        return layer_norm(out, *layer.norm2, self.eps)
