"""What this server serves: each configured model once, by name, with who runs it."""

from __future__ import annotations

from sessionary.providers.container import Providers, is_local


def served_models(providers: Providers) -> list[tuple[str, str]]:
    """(name, owner) of every slot's model, then the chat model's aliases, without repeats."""
    seen: dict[str, str] = {}
    for slot in (providers.llm, providers.embeddings, providers.images):
        if slot is not None:
            seen.setdefault(slot.name, "sessionary" if is_local(slot) else "openai")
    for alias in providers.chat_model_names()[1:]:
        seen.setdefault(alias, "sessionary (alias)")
    return list(seen.items())
