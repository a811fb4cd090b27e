"""Configuration of one provider slot (`SESSIONARY_LLM__*`, `SESSIONARY_EMBEDDINGS__*`, ...).

Pure pydantic, so config.py composes it without importing the providers domain.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

# The output cap of a turn on the local model that names none (and so the size of its credit
# hold): a 135M model has said what it can say well before it, and 1024 tokens take ~10 s on a
# laptop core. Remote models keep SESSIONARY_DEFAULT_MAX_OUTPUT_TOKENS's own default.
LOCAL_MAX_OUTPUT_TOKENS = 256


class ProviderSettings(BaseModel):
    provider: str = Field(description="Provider type: `local`, `openai`, `none`, or a plugin's.")
    model: str | None = Field(default=None, description="Model name; each provider has a default.")
    base_url: str | None = Field(default=None, description="For `openai`: the server's /v1 URL.")
    api_key: SecretStr | None = Field(default=None, description="For `openai`.")
    timeout_seconds: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=2, ge=0, description="Retries on 429/5xx, with backoff.")
    api: str = Field(
        default="auto",
        description="For an `openai` chat model: `responses`, `chat` (completions) or `auto` "
        "(Responses where the server has it).",
    )
    gguf_path: Path | None = Field(
        default=None, description="For a `local` chat model: any GGUF file (default: bundled)."
    )
    n_ctx: int = Field(default=8192, ge=256, description="For a `local` chat model.")
    n_threads: int | None = Field(default=None, ge=1, description="For `local` models.")
    batch_size: int = Field(
        default=64,
        ge=1,
        description="For embeddings: texts per batch (local: at most 2,048 tokens).",
    )
    vision: bool = Field(
        default=False, description="Whether the chat model accepts images (remote models)."
    )
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Other names clients may use for this slot's model, as JSON: "
        '{"gpt-4o-mini": "smollm2-135m-instruct"}. The model that runs, is named in answers '
        "and is priced is always the target.",
    )
