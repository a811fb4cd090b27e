"""The `openai` providers against a real OpenAI-compatible server, plus faults and images."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from typer.testing import CliRunner

from sessionary.app import create_app
from sessionary.cli import app as cli
from sessionary.config import Settings
from sessionary.kit.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from sessionary.providers import registry
from sessionary.providers.base import ChatMessage, ChatRequest, ImageRequest, StreamDone, TextDelta
from sessionary.providers.errors import ProviderUnavailable
from sessionary.providers.settings import ProviderSettings
from tests.conftest import Tenant
from tests.support.fake_upstream import PNG_1X1, FakeUpstream
from tests.support.live import free_port
from tests.support.llama_server import LlamaServer

pytestmark = pytest.mark.slow

QUESTION = [ChatMessage("user", "Name one colour of the rainbow.")]


@pytest.fixture(scope="module")
def llama_chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(tmp_path_factory.mktemp("llama"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llama_embedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(tmp_path_factory.mktemp("llama-emb"), embedding=True, alias="smollm2-emb")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    yield upstream
    upstream.stop()


def remote(base_url: str, model: str = "smollm2", **extra: object) -> ProviderSettings:
    return ProviderSettings(provider="openai", base_url=base_url, model=model, **extra)  # type: ignore[arg-type]


def test_chat_through_a_real_openai_compatible_server(llama_chat_server: LlamaServer) -> None:
    chat = registry.build("llm", remote(llama_chat_server.base_url))
    result = asyncio.run(chat.generate(ChatRequest(QUESTION, max_output_tokens=16)))
    assert result.text.strip()
    assert result.usage.input_tokens > 5  # the server's own count
    assert 0 < result.usage.output_tokens <= 16
    assert chat._use_responses is False  # llama.cpp's server has no Responses API: fell back


def test_streaming_chat_through_the_server(llama_chat_server: LlamaServer) -> None:
    chat = registry.build("llm", remote(llama_chat_server.base_url, api="chat"))

    async def collect() -> tuple[str, StreamDone]:
        text = ""
        async for event in chat.stream(ChatRequest(QUESTION, max_output_tokens=16)):
            if isinstance(event, TextDelta):
                text += event.text
            else:
                return text, event
        raise AssertionError("no StreamDone")

    text, done = asyncio.run(collect())
    assert text
    assert text == done.result.text
    assert done.result.usage.output_tokens > 0


def test_embeddings_through_a_real_server(llama_embedding_server: LlamaServer) -> None:
    embedder = registry.build(
        "embeddings", remote(llama_embedding_server.base_url, model="smollm2-emb", batch_size=2)
    )
    batch = asyncio.run(embedder.embed(["a red house", "a crimson home", "tax law"]))
    vectors = np.asarray(batch.vectors)
    assert vectors.shape[0] == 3
    assert embedder.dimension == vectors.shape[1] > 100
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert batch.input_tokens > 0


def test_upstream_500_is_a_502_naming_the_provider(fake: FakeUpstream) -> None:
    chat = registry.build("llm", remote(fake.base_url, max_retries=1, api="chat"))
    with pytest.raises(UpstreamError) as failed:
        asyncio.run(chat.generate(ChatRequest(QUESTION)))
    assert failed.value.status_code == 502
    assert "openai" in failed.value.message
    assert "HTTP 500" in failed.value.message
    assert sum(1 for c in fake.calls if c["route"] == "chat") >= 2  # retried once first


def test_upstream_timeout_is_a_504(fake: FakeUpstream) -> None:
    fake.delay_seconds = 3
    try:
        chat = registry.build(
            "llm", remote(fake.base_url, timeout_seconds=0.5, max_retries=0, api="chat")
        )
        with pytest.raises(UpstreamTimeout) as failed:
            asyncio.run(chat.generate(ChatRequest(QUESTION)))
    finally:
        fake.delay_seconds = 0
    assert failed.value.status_code == 504
    assert "timed out" in failed.value.message


def test_connection_refused_is_a_502() -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    chat = registry.build("llm", remote(closed, max_retries=0, timeout_seconds=2, api="chat"))
    with pytest.raises(UpstreamError, match="could not connect"):
        asyncio.run(chat.generate(ChatRequest(QUESTION)))
    embedder = registry.build("embeddings", remote(closed, max_retries=0, timeout_seconds=2))
    with pytest.raises(UpstreamError, match="could not connect"):
        asyncio.run(embedder.embed(["x"]))


def test_images_generate_and_edit_at_the_http_boundary(fake: FakeUpstream) -> None:
    images = registry.build("images", remote(fake.base_url, model="gpt-image-1"))
    made = asyncio.run(images.generate(ImageRequest("a red fox", size="1024x1024", quality="low")))
    assert made.b64_images == [PNG_1X1]
    assert made.revised_prompt == "revised: a red fox"
    generate_call = next(c for c in fake.calls if c["route"] == "generate")
    assert generate_call["body"]["size"] == "1024x1024"
    edited = asyncio.run(images.edit(ImageRequest("make it blue"), PNG_1X1))
    assert edited.b64_images == [PNG_1X1]
    edit_call = next(c for c in fake.calls if c["route"] == "edit")
    assert edit_call["prompt"] == "make it blue"
    assert edit_call["image_bytes"] > 50


def test_misconfigured_providers_fail_fast_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ProviderUnavailable, match="GGUF_PATH"):
        create_app(
            Settings(
                data_dir=tmp_path,
                llm=ProviderSettings(provider="local", gguf_path=tmp_path / "nope.gguf"),
            )
        )
    with pytest.raises(ProviderUnavailable, match=r"available: local, openai, none"):
        create_app(Settings(data_dir=tmp_path, llm=ProviderSettings(provider="vllm-magic")))
    with pytest.raises(ProviderUnavailable, match="SESSIONARY_IMAGES__MODEL"):
        create_app(
            Settings(
                data_dir=tmp_path,
                images=ProviderSettings(provider="openai", base_url="http://x/v1"),
            )
        )
    with pytest.raises(ProviderUnavailable, match="API_KEY"):
        create_app(
            Settings(data_dir=tmp_path, llm=ProviderSettings(provider="openai", model="gpt-4o"))
        )


def test_serve_refuses_to_start_with_a_bad_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONARY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SESSIONARY_LLM__PROVIDER", "nonsense")
    result = CliRunner().invoke(cli, ["serve", "--port", str(free_port())])
    assert result.exit_code == 1
    assert "unknown llm provider 'nonsense'" in result.output
    assert "Traceback" not in result.output


def test_models_are_listed_in_openais_shape(client: TestClient, tenant: Tenant) -> None:
    sdk = OpenAI(base_url="http://testserver/v1", api_key=tenant.api_key, http_client=client)
    ids = [m.id for m in sdk.models.list()]
    assert ids == ["smollm2-135m-instruct", "all-minilm-l6-v2"]
    assert sdk.models.retrieve("all-minilm-l6-v2").owned_by == "sessionary"
    assert client.get("/v1/models/nope", headers=tenant.headers).status_code == 404
    assert client.get("/v1/models").status_code == 401


def test_image_requests_without_a_provider_name_the_setting() -> None:
    from sessionary.providers.container import Providers

    with pytest.raises(InvalidRequest, match="SESSIONARY_IMAGES__PROVIDER=openai"):
        Providers(llm=None, embeddings=None, images=None).image_model()
