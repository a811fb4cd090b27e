"""The built-in providers, as data. They register through the same entry-point group
(`sessionary.providers`) that a third-party package would use; importing this module is cheap,
and a provider's own module (and its heavy dependencies) is imported only when it is chosen."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderSpec:
    kind: str  # "llm" | "embeddings" | "images"
    type: str  # the value of SESSIONARY_<KIND>__PROVIDER
    factory: str  # "module:function", called with the slot's ProviderSettings
    description: str = ""


LOCAL_LLM = ProviderSpec(
    "llm", "local", "sessionary.providers.llm.local:create", "llama.cpp on a GGUF file"
)
OPENAI_LLM = ProviderSpec(
    "llm", "openai", "sessionary.providers.llm.openai:create", "any OpenAI-compatible server"
)
LOCAL_EMBEDDINGS = ProviderSpec(
    "embeddings",
    "local",
    "sessionary.providers.embeddings.local:create",
    "all-MiniLM-L6-v2 in NumPy (the bundled weights)",
)
OPENAI_EMBEDDINGS = ProviderSpec(
    "embeddings",
    "openai",
    "sessionary.providers.embeddings.openai:create",
    "any OpenAI-compatible /embeddings",
)
OPENAI_IMAGES = ProviderSpec(
    "images", "openai", "sessionary.providers.images.openai:create", "OpenAI-compatible images"
)
