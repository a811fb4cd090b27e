"""Local providers against the raw libraries they wrap, on the same inputs, in one run.

Chat: tokens/s of `LlamaCppChat.generate` vs `Llama.create_chat_completion` on the same prompt.
Embeddings: sentences/s of `LocalEmbeddings.embed` (which also counts tokens for
billing) vs `SentenceTransformer.encode`, and the time of one search query (what a search pays
when its vector is not cached), both with the process's CPU time per query. Runs alternate
between the two so drift hits both.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

from bench.common import SHARED_DATA, median, sentences, timed
from sessionary.providers.base import ChatMessage, ChatRequest
from sessionary.providers.embeddings.local import LocalEmbeddings
from sessionary.providers.llm.local import LlamaCppChat, bundled_gguf
from sessionary.providers.settings import ProviderSettings

PROMPT = [
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "Describe a quiet morning in a small coastal town."),
]
MAX_TOKENS = 96


def chat(runs: int) -> dict[str, Any]:
    from llama_cpp import Llama

    settings = ProviderSettings(provider="local", n_ctx=2048)
    provider = LlamaCppChat(settings)
    provider.load()
    raw = Llama(model_path=str(bundled_gguf()), n_ctx=2048, verbose=False)
    messages = [{"role": m.role, "content": m.text} for m in PROMPT]
    request = ChatRequest(PROMPT, max_output_tokens=MAX_TOKENS, temperature=0)

    def raw_once() -> float:
        seconds, answer = timed(
            lambda: raw.create_chat_completion(
                messages=messages, max_tokens=MAX_TOKENS, temperature=0
            )
        )
        return answer["usage"]["completion_tokens"] / seconds

    def provider_once() -> float:
        seconds, result = timed(lambda: asyncio.run(provider.generate(request)))
        return result.usage.output_tokens / seconds

    raw_once(), provider_once()  # warm both
    raw_rates, provider_rates = [], []
    for _ in range(runs):
        raw_rates.append(raw_once())
        provider_rates.append(provider_once())
    return {
        "raw_tokens_per_s": median(raw_rates),
        "provider_tokens_per_s": median(provider_rates),
        "ratio": median(provider_rates) / median(raw_rates),
        "runs": runs,
    }


def through_http(runs: int) -> dict[str, Any]:
    """tokens/s of a whole `/v1/assistant/completion` (auth, ledger, storage) on `sessionary
    serve`, against raw llama-cpp-python on the same prompt, alternating."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import httpx
    from llama_cpp import Llama

    from bench.gateway import free_port, start, stop

    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    port = free_port()
    env = {
        "SESSIONARY_DATA_DIR": str(work / "data"),
        "SESSIONARY_PORT": str(port),
        "SESSIONARY_LOG_LEVEL": "WARNING",
        "SESSIONARY_LLM__PROVIDER": "local",
        "SESSIONARY_LLM__N_CTX": "2048",
    }
    cli = [sys.executable, "-m", "sessionary"]
    init = subprocess.run([*cli, "init"], env={**os.environ, **env}, capture_output=True, text=True)
    key = next(line for line in init.stdout.splitlines() if line.startswith("sk_sy_"))
    server = start([*cli, "serve"], env, f"http://127.0.0.1:{port}/readyz", work / "server.log")
    raw = Llama(model_path=str(bundled_gguf()), n_ctx=2048, verbose=False)
    messages = [{"role": m.role, "content": m.text} for m in PROMPT]
    try:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}/v1",
            headers={"Authorization": f"Bearer {key}"},
            timeout=300,
        )
        client.post("/assistant/set_system_prompt", json={"system_prompt": PROMPT[0].text})

        def http_once() -> float:
            session = client.post("/assistant/session", json={}).json()["session_id"]
            body = {
                "session_id": session,
                "input": PROMPT[1].text,
                "max_output_tokens": MAX_TOKENS,
                "temperature": 0,
            }
            seconds, answer = timed(lambda: client.post("/assistant/completion", json=body))
            return float(answer.json()["usage"]["output_tokens"]) / seconds

        def raw_once() -> float:
            seconds, answer = timed(
                lambda: raw.create_chat_completion(
                    messages=messages, max_tokens=MAX_TOKENS, temperature=0
                )
            )
            return answer["usage"]["completion_tokens"] / seconds

        http_once(), raw_once()
        raw_rates, http_rates = [], []
        for _ in range(runs):
            raw_rates.append(raw_once())
            http_rates.append(http_once())
        client.close()
    finally:
        stop(server)
    return {
        "raw_tokens_per_s": median(raw_rates),
        "http_tokens_per_s": median(http_rates),
        "ratio": median(http_rates) / median(raw_rates),
    }


def embeddings(runs: int, count: int) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    provider = LocalEmbeddings(ProviderSettings(provider="local"))
    provider.load()
    raw = SentenceTransformer(str(provider.path), device="cpu")
    texts = sentences(count)

    def raw_once() -> float:
        seconds, _ = timed(
            lambda: raw.encode(
                texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
            )
        )
        return len(texts) / seconds

    def provider_once() -> float:
        seconds, _ = timed(lambda: asyncio.run(provider.embed(texts)))
        return len(texts) / seconds

    raw_once(), provider_once()
    raw_rates, provider_rates = [], []
    for _ in range(runs):
        raw_rates.append(raw_once())
        provider_rates.append(provider_once())
    queries = search_queries()
    raw_query: dict[str, list[float]] = {"wall": [], "cpu": []}
    provider_query: dict[str, list[float]] = {"wall": [], "cpu": []}
    loop = asyncio.new_event_loop()
    for _ in range(QUERY_ROUNDS):
        # In blocks with a pause between: torch's OpenMP threads keep spinning for a while
        # after a call, and would take a core from whatever ran next in this process.
        for query in queries:
            once(raw_query, lambda q=query: raw.encode([q], normalize_embeddings=True))
        time.sleep(QUIET_SECONDS)
        for query in queries:
            once(provider_query, lambda q=query: loop.run_until_complete(provider.embed([q])))
        time.sleep(QUIET_SECONDS)
    loop.close()
    return {
        "query_raw_ms": median(raw_query["wall"]) * 1000,
        "query_raw_cpu_ms": median(raw_query["cpu"]) * 1000,
        "query_provider_ms": median(provider_query["wall"]) * 1000,
        "query_provider_cpu_ms": median(provider_query["cpu"]) * 1000,
        "queries": len(queries),
        "raw_sentences_per_s": median(raw_rates),
        "provider_sentences_per_s": median(provider_rates),
        "ratio": median(provider_rates) / median(raw_rates),
        "runs": runs,
        "sentences": len(texts),
    }


QUERY_ROUNDS = 10
QUIET_SECONDS = 1.0


def search_queries() -> list[str]:
    """The listings bench's dev queries: real search terms, 4 to 12 words."""
    dev = json.loads((SHARED_DATA / "listing_queries_dev.json").read_text())["queries"]
    return [q["q"] for q in dev]


def once(into: dict[str, list[float]], work: Callable[[], Any]) -> None:
    """One call's wall time and the process's CPU time (every thread's) over it."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    into["cpu"].append(time.process_time() - cpu)
    into["wall"].append(time.perf_counter() - wall)


def run(quick: bool) -> str:
    chat_figures = chat(runs=3 if quick else 5)
    embed_figures = embeddings(runs=3 if quick else 5, count=500 if quick else 1000)
    http_figures = through_http(runs=3 if quick else 5)
    return "\n".join(
        [
            "## Local providers against the raw libraries",
            "",
            "`python -m bench --only providers` · medians of alternating runs in one process.",
            "",
            "| what | raw library | through Sessionary's provider | ratio (target ≥ 0.95; for "
            "times, raw / provider) |",
            "| --- | --- | --- | --- |",
            f"| chat, SmolLM2-135M Q4_1, {MAX_TOKENS} tokens, tokens/s | "
            f"{chat_figures['raw_tokens_per_s']:.1f} | {chat_figures['provider_tokens_per_s']:.1f} "
            f"| **{chat_figures['ratio']:.3f}** |",
            f"| chat through `POST /v1/assistant/completion` on `sessionary serve` (key check, "
            f"ledger, storage), tokens/s | {http_figures['raw_tokens_per_s']:.1f} "
            f"| {http_figures['http_tokens_per_s']:.1f} | **{http_figures['ratio']:.3f}** |",
            f"| embeddings, all-MiniLM-L6-v2, {embed_figures['sentences']} sentences, sentences/s "
            f"| {embed_figures['raw_sentences_per_s']:.0f} "
            f"| {embed_figures['provider_sentences_per_s']:.0f} "
            f"| **{embed_figures['ratio']:.3f}** |",
            f"| embeddings, one search query ({embed_figures['queries']} listing queries, "
            f"{QUERY_ROUNDS} rounds), ms p50 (CPU ms p50, all threads) "
            f"| {embed_figures['query_raw_ms']:.2f} ({embed_figures['query_raw_cpu_ms']:.2f}) "
            f"| {embed_figures['query_provider_ms']:.2f} "
            f"({embed_figures['query_provider_cpu_ms']:.2f}) "
            f"| **{embed_figures['query_raw_ms'] / embed_figures['query_provider_ms']:.3f}** |",
            "",
            f"Runs: {chat_figures['runs']} (chat), {embed_figures['runs']} (embeddings). "
            "The provider's embedding figure includes counting the input tokens for billing.",
            "",
            f"**Headline**: local generation at {chat_figures['ratio']:.2f} of raw "
            f"llama-cpp-python's tokens/s through the provider and {http_figures['ratio']:.2f} "
            f"through the HTTP route; embeddings at {embed_figures['ratio']:.2f} of raw "
            "sentence-transformers' speed, and one search query embedded in "
            f"{embed_figures['query_provider_ms']:.1f} ms against "
            f"{embed_figures['query_raw_ms']:.1f} ms.",
        ]
    )
