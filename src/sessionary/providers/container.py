"""The configured providers of one server, and the clear 400s when a slot is empty."""

from __future__ import annotations

from dataclasses import dataclass

from sessionary.kit.errors import InvalidRequest
from sessionary.providers import registry
from sessionary.providers.base import ChatModel, EmbeddingModel, ImageModel
from sessionary.providers.settings import ProviderSettings


def is_local(provider: object) -> bool:
    """Whether a provider runs here (its model is fixed by its files) rather than on a server."""
    return type(provider).__module__.endswith(".local")


@dataclass
class Providers:
    llm: ChatModel | None
    embeddings: EmbeddingModel | None
    images: ImageModel | None

    @classmethod
    def build(
        cls, llm: ProviderSettings, embeddings: ProviderSettings, images: ProviderSettings
    ) -> Providers:
        """Validates the configuration (fast); weights load in `load()` or on first use."""
        return cls(
            llm=registry.build("llm", llm),
            embeddings=registry.build("embeddings", embeddings),
            images=registry.build("images", images),
        )

    def load(self) -> None:
        for provider in (self.llm, self.embeddings, self.images):
            load = getattr(provider, "load", None)
            if load is not None:
                load()

    def chat(self) -> ChatModel:
        if self.llm is None:
            raise InvalidRequest(
                "No chat model is configured: set SESSIONARY_LLM__PROVIDER (local or openai).",
                code="llm_not_configured",
            )
        return self.llm

    def embedder(self) -> EmbeddingModel:
        if self.embeddings is None:
            raise InvalidRequest(
                "No embedding model is configured: set SESSIONARY_EMBEDDINGS__PROVIDER "
                "(local or openai).",
                code="embeddings_not_configured",
            )
        return self.embeddings

    def image_model(self) -> ImageModel:
        if self.images is None:
            raise InvalidRequest(
                "No images provider is configured, so images cannot be generated: set "
                "SESSIONARY_IMAGES__PROVIDER=openai with SESSIONARY_IMAGES__MODEL, "
                "SESSIONARY_IMAGES__BASE_URL and SESSIONARY_IMAGES__API_KEY.",
                param="tools",
                code="images_not_configured",
            )
        return self.images
