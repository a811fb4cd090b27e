"""The provider protocols and the values that cross them.

Providers know nothing of HTTP or the database: they take plain requests and return plain results.
Failures are raised as the kit's upstream errors (502/504) with a message naming the provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "developer", "user", "assistant"]


@dataclass(frozen=True)
class ImagePart:
    """An image given as a URL or a data URL; the server never fetches it itself."""

    url: str
    detail: str | None = None


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    text: str
    images: tuple[ImagePart, ...] = ()


@dataclass(frozen=True)
class ChatRequest:
    messages: Sequence[ChatMessage]
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    # A JSON Schema the answer must satisfy, or {} for "any JSON object"; None for free text.
    json_schema: dict[str, Any] | None = None
    # Hosted tools (image_generation) for a Responses-capable upstream to use if it decides to;
    # providers that cannot pass them on ignore them.
    tools: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


# "repetition": a local model started looping and the answer was ended before the loop; the
# wire shows it as a completed answer (the text up to the loop is the answer).
FinishReason = Literal["stop", "length", "cancelled", "repetition"]


@dataclass(frozen=True)
class ChatResult:
    text: str
    usage: Usage
    finish_reason: FinishReason
    model: str
    # Output items besides the message (image_generation_call), as the upstream made them.
    items: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class TextDelta:
    """One piece of a streamed answer."""

    text: str


@dataclass(frozen=True)
class StreamDone:
    """The last event of a stream: what a non-streamed call would have returned."""

    result: ChatResult


StreamEvent = TextDelta | StreamDone


@runtime_checkable
class ChatModel(Protocol):
    name: str
    context_window: int
    supports_vision: bool

    async def generate(self, request: ChatRequest) -> ChatResult: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Deltas then one StreamDone. Closing the iterator early stops the generation."""
        ...

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int: ...


@dataclass(frozen=True)
class EmbeddingBatch:
    """One unit-length vector per text, in order, and the input tokens they cost."""

    vectors: list[list[float]]
    input_tokens: int


@runtime_checkable
class EmbeddingModel(Protocol):
    name: str
    dimension: int
    max_input_tokens: int

    async def embed(self, texts: Sequence[str]) -> EmbeddingBatch: ...

    async def count_tokens(self, texts: Sequence[str]) -> int:
        """What `embed` will bill for these texts (exact where the tokenizer is local, else a
        bound that the upstream's reported usage will not exceed in practice)."""
        ...


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None
    background: str | None = None
    compression: int | None = None
    n: int = 1


@dataclass(frozen=True)
class ImageResult:
    b64_images: list[str]
    revised_prompt: str | None = None
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ImageModel(Protocol):
    name: str

    async def generate(self, request: ImageRequest) -> ImageResult: ...

    async def edit(self, request: ImageRequest, image_b64: str) -> ImageResult: ...
