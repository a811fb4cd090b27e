"""Provider figures in Prometheus: calls by outcome, latency, and tokens in and out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

from sessionary.kit.metrics import DOMAIN_REGISTRY, LATENCY_BUCKETS, labelled

CALLS = Counter(
    "sessionary_provider_calls_total",
    "Model provider calls by kind (chat, embeddings, images), model and outcome.",
    ["kind", "model", "outcome"],
    registry=DOMAIN_REGISTRY,
)
SECONDS = Histogram(
    "sessionary_provider_call_seconds",
    "Model provider call duration by kind and model.",
    ["kind", "model"],
    buckets=LATENCY_BUCKETS,
    registry=DOMAIN_REGISTRY,
)
TOKENS = Counter(
    "sessionary_provider_tokens_total",
    "Tokens through the model providers by kind, model and direction (input, output).",
    ["kind", "model", "direction"],
    registry=DOMAIN_REGISTRY,
)


@contextmanager
def observed(kind: str, model: str) -> Iterator[None]:
    """Time one call and count its outcome (ok, error, or cancelled when the caller left)."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except (GeneratorExit, asyncio.CancelledError):
        outcome = "cancelled"
        raise
    finally:
        labelled(CALLS, kind, model, outcome).inc()
        labelled(SECONDS, kind, model).observe(time.perf_counter() - started)


def count_tokens(kind: str, model: str, input_tokens: int, output_tokens: int = 0) -> None:
    labelled(TOKENS, kind, model, "input").inc(input_tokens)
    if output_tokens:
        labelled(TOKENS, kind, model, "output").inc(output_tokens)
