"""The configured providers of one server, and the clear 400s when a slot is empty."""

from __future__ import annotations

from dataclasses import dataclass, field

from sessionary.kit.errors import InvalidRequest
from sessionary.providers import registry
from sessionary.providers.base import ChatModel, EmbeddingModel, ImageModel
from sessionary.providers.errors import ProviderUnavailable
from sessionary.providers.settings import ProviderSettings


def is_local(provider: object) -> bool:
    """Whether a provider runs here (its model is fixed by its files) rather than on a server."""
    return type(provider).__module__.endswith(".local")


def model_not_found(asked: str, served: list[str], param: str = "model") -> InvalidRequest:
    return InvalidRequest(
        f"The model '{asked}' is not served here. Configured models: "
        f"{', '.join(repr(m) for m in served) or 'none'}.",
        param=param,
        code="model_not_found",
    )


@dataclass
class Providers:
    llm: ChatModel | None
    embeddings: EmbeddingModel | None
    images: ImageModel | None
    # Names clients may use for the chat model (operator-chosen), lower-cased.
    chat_aliases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, llm: ProviderSettings, embeddings: ProviderSettings, images: ProviderSettings
    ) -> Providers:
        """Validates the configuration (fast); weights load in `load()` or on first use."""
        chat = registry.build("llm", llm)
        for alias, target in llm.aliases.items():
            if chat is None or target != chat.name:
                raise ProviderUnavailable(
                    f"SESSIONARY_LLM__ALIASES maps '{alias}' to '{target}', which is not the "
                    f"configured chat model ('{chat.name if chat else 'none'}')."
                )
        return cls(
            llm=chat,
            embeddings=registry.build("embeddings", embeddings),
            images=registry.build("images", images),
            chat_aliases={alias.lower(): target for alias, target in llm.aliases.items()},
        )

    def chat_model_names(self) -> list[str]:
        """The chat model's own name, then its aliases."""
        if self.llm is None:
            return []
        return [self.llm.name, *(a for a in self.chat_aliases if a != self.llm.name.lower())]

    def resolve_chat_model(self, asked: str | None, param: str = "model") -> str:
        """The name of the chat model that will run for `asked` (None: the configured one).

        There is one chat model per server: a name that is neither it nor one of its aliases is a
        400, never a silent substitution (and never a price that follows the client's string).
        """
        served = self.chat().name
        if asked is None or asked.lower() == served.lower():
            return served
        if asked.lower() in self.chat_aliases:
            return self.chat_aliases[asked.lower()]
        raise model_not_found(asked, self.chat_model_names(), param)

    def load(self) -> None:
        for provider in (self.llm, self.embeddings, self.images):
            load = getattr(provider, "load", None)
            if load is not None:
                load()

    async def aclose(self) -> None:
        """Close this event loop's upstream connections (the app's shutdown)."""
        for provider in (self.llm, self.embeddings, self.images):
            poster = getattr(provider, "poster", None)
            if poster is not None:
                await poster.aclose()

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
