"""The provider protocols and the values that cross them.

Providers know nothing of HTTP or the database: they take plain requests and return plain results.
Failures are raised as the kit's upstream errors (502/504) with a message naming the provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from sessionary.kit.loop_units import from_worker

Role = Literal["system", "developer", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ImagePart:
    """An image given as a URL or a data URL; the server never fetches it itself."""

    url: str
    detail: str | None = None


@dataclass(frozen=True)
class FunctionCall:
    """A call of a client-side function that the model asked for (or that history replays).

    `arguments` is the JSON text the model wrote; `call_id` pairs it with its output.
    """

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    """One message of the prompt.

    An assistant message may carry `calls` (its text may then be empty); a "tool" message is the
    output of the call named by `call_id`, its `text` the output as the model reads it.
    """

    role: Role
    text: str
    images: tuple[ImagePart, ...] = ()
    calls: tuple[FunctionCall, ...] = ()
    call_id: str | None = None


@dataclass(frozen=True)
class FunctionTool:
    """A function the client runs: the model may answer with calls of it instead of text."""

    name: str
    parameters: dict[str, Any]  # a JSON Schema for the arguments object
    description: str | None = None
    strict: bool | None = None


@dataclass(frozen=True)
class ToolChoice:
    """Whether the model must, may or must not call a function, and which ones it may call.

    A named function is `ToolChoice("required", ("name",))`; `allowed_tools` narrows `allowed`.
    `allowed` None means every offered function.
    """

    mode: Literal["auto", "none", "required"] = "auto"
    allowed: tuple[str, ...] | None = None


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
    # Client-side functions; an answer may be `ChatResult.calls` instead of (or besides) text.
    functions: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # Whom the answer is for (`Owner.party`): kept upstream connections are never shared
    # between parties (`providers/plain_http.py`).
    party: str = ""


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


# "repetition": a local model started looping and the answer was ended before the loop; the
# wire shows it as a completed answer (the text up to the loop is the answer).
# "tool_calls": the answer is (or ends with) `ChatResult.calls` for the client to run.
FinishReason = Literal["stop", "length", "cancelled", "repetition", "tool_calls"]


@dataclass(frozen=True)
class ChatResult:
    text: str
    usage: Usage
    finish_reason: FinishReason
    model: str
    # Output items besides the message (image_generation_call), as the upstream made them.
    items: tuple[dict[str, Any], ...] = ()
    # Function calls the model made, in order (empty for a plain answer).
    calls: tuple[FunctionCall, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    """One piece of a streamed answer."""

    text: str


@dataclass(frozen=True)
class StreamDone:
    """The last event of a stream: what a non-streamed call would have returned."""

    result: ChatResult


@dataclass(frozen=True)
class CallDelta:
    """A piece of a streamed function call: the first piece of call `index` names it (call_id
    and name set), every piece may add to its arguments' JSON text."""

    index: int
    arguments: str = ""
    call_id: str | None = None
    name: str | None = None


StreamEvent = TextDelta | CallDelta | StreamDone


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

    async def embed(self, texts: Sequence[str], party: str = "") -> EmbeddingBatch:
        """The texts' vectors; `party`: whom they are for (`ChatRequest.party`)."""
        ...

    async def count_tokens(self, texts: Sequence[str]) -> int:
        """What `embed` will bill for these texts (exact where the tokenizer is local, else a
        bound that the upstream's reported usage will not exceed in practice)."""
        ...


def embeds_in_process(embedder: EmbeddingModel) -> bool:
    """True when the embedder runs in this process (its optional `in_process` says so): an
    embedding then costs only this server's CPU, never a bill from elsewhere, so a search need
    not hold credits while it runs (`SearchService.search`)."""
    return bool(getattr(embedder, "in_process", False))


def count_from_worker(embedder: EmbeddingModel, texts: Sequence[str]) -> int:
    """`embedder.count_tokens` from a worker thread: right there when the model can count at
    once (its optional `count_tokens_now` answers), else through the event loop, a hop that
    costs two thread switches on every uncached search."""
    count_now = getattr(embedder, "count_tokens_now", None)
    counted = count_now(texts) if count_now is not None else None
    if counted is None:
        counted = from_worker(embedder.count_tokens, texts)
    return int(counted)


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None
    background: str | None = None
    compression: int | None = None
    n: int = 1
    party: str = ""  # whom the image is for (`ChatRequest.party`)


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
