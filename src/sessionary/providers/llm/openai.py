"""Any OpenAI-compatible chat server (OpenAI, vLLM, Ollama, llama.cpp's) via the `openai` SDK.

With `api = "auto"` the Responses API is tried first; a server that answers 404/405 to it is
remembered as chat-completions-only. Usage is the server's own count; a server that reports none
(some stream without it) is billed on an estimate: streamed chunks for a stream's output
(servers send about one token a chunk), and four characters a token for a whole answer's output
(its text and calls, on either API) and for the input.

Function tools map to each API's own fields (openai_tools.py). The Responses API has no `stop`,
`seed` or penalties: a request that sets one goes to chat completions instead, unless it also
carries hosted tools (which only the Responses API takes): that is a 400 naming the option.

A non-streamed request is a plain JSON POST (json_post.py, with the SDK's retry policy; on
kept connections of its own to a plain-http server, plain_http.py, else aiohttp): the SDK's
request path and response models cost about 0.7 ms of CPU a call more in the gateway benchmark,
for the few fields read. Streams go through the SDK's plain `post` (its
retries, error classes and event models) rather than `responses.create` /
`chat.completions.create`: those first walk every input item against the parameter types to
transform it, and our bodies are plain JSON already.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from openai import AsyncStream, RequestOptions
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

from sessionary.kit.errors import InvalidRequest
from sessionary.providers.base import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    FinishReason,
    FunctionCall,
    StreamDone,
    StreamEvent,
    TextDelta,
    Usage,
)
from sessionary.providers.errors import upstream_failure
from sessionary.providers.json_post import JsonPoster, storable
from sessionary.providers.llm import openai_tools as tools
from sessionary.providers.party_transport import party_headers
from sessionary.providers.remote import LoopClients, require_model, upstream_errors
from sessionary.providers.settings import ProviderSettings
from sessionary.providers.telemetry import count_tokens, observed

SLOT = "LLM"
# As the SDK's own create methods send them: the API key as a bearer token, never an admin key.
BEARER: RequestOptions = {"security": {"bearer_auth": True}}


def _estimate_tokens(messages: Sequence[ChatMessage]) -> int:
    """A quarter of a token a character, rounded up, and 4 a message (a loop: a history's
    messages are many, and a generator for each message's calls cost as much as the count)."""
    total = 0
    for m in messages:
        size = len(m.text)
        for c in m.calls:
            size += len(c.name) + len(c.arguments)
        total += -(-size // 4) + 4
    return total


def _written_tokens(text: str, calls: Sequence[FunctionCall]) -> int:
    """An answer's output tokens when its server reported no usage: a quarter of a token a
    character written (the text and the calls' names and arguments), rounded up."""
    return -(-(len(text) + sum(len(c.name) + len(c.arguments) for c in calls)) // 4)


def _output_text(output: list[dict[str, Any]]) -> str:
    """The text of a response's message items, as the SDK's `output_text` joins it."""
    return "".join(
        part.get("text") or ""
        for item in output
        if item.get("type") == "message"
        for part in item.get("content") or ()
        if isinstance(part, dict) and part.get("type") == "output_text"
    )


# More tokens than any model's context in one answer: an upstream's usage above it is garbage.
MAX_REPORTED_TOKENS = 2**31 - 1


def _tokens(value: object) -> int:
    """A usage count as the upstream reported it; anything but a whole count in range is a
    ValueError (read as an unusable answer)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError("usage is not a whole number")
    if not 0 <= value <= MAX_REPORTED_TOKENS:
        raise ValueError("usage out of range")
    return int(value)


def _text(content: object) -> str:
    """A chat message's content: a string, or (as some servers send it) a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    raise TypeError("content is neither text nor parts")


def _finish(length: bool, calls: tuple[FunctionCall, ...]) -> FinishReason:
    return "length" if length else "tool_calls" if calls else "stop"


class OpenAIChat:
    def __init__(self, settings: ProviderSettings) -> None:
        self.clients = LoopClients(settings, SLOT)
        self.name = require_model(settings, SLOT)
        self.label = f"openai ({self.clients.base_url})"
        self.poster = JsonPoster(
            self.clients.base_url,
            self.clients.api_key,
            settings.timeout_seconds,
            settings.max_retries,
            self.label,
        )
        self.timeout = settings.timeout_seconds
        self.context_window = settings.n_ctx
        self.supports_vision = settings.vision
        self._use_responses: bool | None = {"responses": True, "chat": False}.get(settings.api)

    def load(self) -> None:
        """Nothing to load: the weights live on the server."""

    # Request shapes

    def _chat_messages(self, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
        shaped: list[dict[str, Any]] = []
        for m in messages:
            if m.images:
                parts: list[dict[str, Any]] = [{"type": "text", "text": m.text}]
                parts += [{"type": "image_url", "image_url": {"url": i.url}} for i in m.images]
                shaped.append(tools.chat_message(m, parts))
            else:
                shaped.append(tools.chat_message(m, m.text))
        return shaped

    def _responses_input(self, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
        shaped: list[dict[str, Any]] = []
        for m in messages:
            kind = "output_text" if m.role == "assistant" else "input_text"
            if not (m.images or m.calls or m.role == "tool"):  # most of a history: as below
                shaped.append({"role": m.role, "content": [{"type": kind, "text": m.text}]})
                continue
            parts: list[dict[str, Any]] = [{"type": kind, "text": m.text}]
            parts += [{"type": "input_image", "image_url": i.url} for i in m.images]
            shaped += tools.responses_items(m, parts)
        return shaped

    def _sampling(self, request: ChatRequest) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        return options

    def _chat_kwargs(self, request: ChatRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.name,
            "messages": self._chat_messages(request.messages),
            **self._sampling(request),
        }
        if request.max_output_tokens is not None:
            kwargs["max_tokens"] = request.max_output_tokens
        if request.stop:
            kwargs["stop"] = list(request.stop)
        for option in ("seed", "presence_penalty", "frequency_penalty"):
            if getattr(request, option) is not None:
                kwargs[option] = getattr(request, option)
        kwargs.update(tools.chat_tools(request))
        if request.json_schema is not None:
            kwargs["response_format"] = (
                {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": request.json_schema},
                }
                if request.json_schema
                else {"type": "json_object"}
            )
        return kwargs

    def _responses_kwargs(self, request: ChatRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.name,
            "input": self._responses_input(request.messages),
            "store": False,
            **self._sampling(request),
        }
        if request.max_output_tokens is not None:
            kwargs["max_output_tokens"] = request.max_output_tokens
        kwargs.update(tools.responses_tools(request))
        if request.json_schema is not None:
            kwargs["text"] = {
                "format": {"type": "json_schema", "name": "answer", "schema": request.json_schema}
                if request.json_schema
                else {"type": "json_object"}
            }
        return kwargs

    async def _post_json(self, path: str, body: dict[str, Any], party: str) -> dict[str, Any]:
        """A non-streamed request as plain JSON, through `json_post.JsonPoster` (not the SDK)."""
        return await self.poster.post(path, body, party=party)

    async def _post(
        self,
        path: str,
        body: dict[str, Any],
        cast_to: type[Any],
        stream_cls: Any = None,
        party: str = "",
    ) -> Any:
        """The SDK's own request path (retries, error classes, response models), bearer auth
        as its create methods send it, on `party`'s connections; streamed when `stream_cls` is
        given."""
        return await self.clients.get().post(
            path,
            cast_to=cast_to,
            body={**body, "stream": True} if stream_cls else body,
            options={**BEARER, "headers": party_headers(party)},
            stream=stream_cls is not None,
            stream_cls=stream_cls,
        )

    async def _responses_available(self) -> bool:
        if self._use_responses is None:
            import openai

            try:
                await self.clients.get().responses.create(
                    model=self.name, input="ping", max_output_tokens=16, store=False
                )
                self._use_responses = True
            except (openai.NotFoundError, openai.APIStatusError) as exc:
                if isinstance(exc, openai.NotFoundError) or exc.status_code in (404, 405, 501):
                    self._use_responses = False
                else:
                    raise
        return bool(self._use_responses)

    async def _use_responses_for(self, request: ChatRequest) -> bool:
        """The Responses API when the upstream has it and the request fits it (see the top)."""
        if not await self._responses_available():
            return False
        chat_only = tools.chat_only_options(request)
        if not chat_only:
            return True
        if request.tools:
            raise InvalidRequest(
                f"'{chat_only[0]}' cannot be combined with hosted tools on this model: its "
                "upstream takes hosted tools only through the Responses API, which has no "
                f"'{chat_only[0]}'.",
                param=chat_only[0],
            )
        return False

    # The protocol

    async def generate(self, request: ChatRequest) -> ChatResult:
        with observed("chat", self.name):
            result = await self._generate(request)
        count_tokens("chat", self.name, result.usage.input_tokens, result.usage.output_tokens)
        return result

    async def _generate(self, request: ChatRequest) -> ChatResult:
        with upstream_errors(self.label, self.timeout):
            if await self._use_responses_for(request):
                body = self._responses_kwargs(request)
                response = await self._post_json("/responses", body, request.party)
                return self._read(self._responses_result, response, request)
            body = self._chat_kwargs(request)
            completion = await self._post_json("/chat/completions", body, request.party)
            return self._read(self._chat_result, completion, request)

    def _read(
        self,
        read: Callable[[dict[str, Any], ChatRequest], ChatResult],
        answer: dict[str, Any],
        request: ChatRequest,
    ) -> ChatResult:
        """An upstream answer of a shape we cannot read (a list where text belongs, usage that
        is not a count, ...) is the upstream's failure, a 502: never a 500, never a charge."""
        try:
            result = read(answer, request)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            detail = f"unusable answer ({exc.__class__.__name__})"
            raise upstream_failure(self.label, detail) from exc
        if any(not isinstance(c.arguments, str) for c in result.calls):
            raise upstream_failure(self.label, "unusable answer (call arguments not a string)")
        return result

    def _responses_result(self, response: dict[str, Any], request: ChatRequest) -> ChatResult:
        status = response.get("status")
        if response.get("error") or status not in (None, "completed", "incomplete"):
            raise upstream_failure(self.label, "it answered with a failed response")
        output = [i for i in response.get("output") or () if isinstance(i, dict)]
        calls = tools.responses_calls_of(output)
        text = _output_text(output)
        usage = response.get("usage")
        return ChatResult(
            text=text,
            usage=Usage(_tokens(usage["input_tokens"]), _tokens(usage["output_tokens"]))
            if isinstance(usage, dict)
            else Usage(_estimate_tokens(request.messages), _written_tokens(text, calls)),
            finish_reason=_finish(response.get("status") == "incomplete", calls),
            model=self.name,
            calls=calls,
            items=tuple(
                {k: v for k, v in item.items() if v is not None}
                for item in output
                if item.get("type") == "image_generation_call"
            ),
        )

    def _chat_result(self, completion: dict[str, Any], request: ChatRequest) -> ChatResult:
        if completion.get("error"):
            raise upstream_failure(self.label, "it answered with an error")
        if not completion.get("choices"):
            raise upstream_failure(self.label, "unusable answer (no choices)")
        choice = completion["choices"][0]
        message = choice.get("message")
        if not isinstance(message, dict) or choice.get("finish_reason") == "error":
            raise upstream_failure(self.label, "unusable answer (no message)")
        text = _text(message.get("content"))
        calls = tools.chat_calls_of(message.get("tool_calls"))
        usage = completion.get("usage")
        return ChatResult(
            text=text,
            usage=Usage(_tokens(usage["prompt_tokens"]), _tokens(usage["completion_tokens"]))
            if isinstance(usage, dict)
            else Usage(_estimate_tokens(request.messages), _written_tokens(text, calls)),
            finish_reason=_finish(choice.get("finish_reason") == "length", calls),
            model=self.name,
            calls=calls,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        with observed("chat", self.name):
            async for event in self._stream(request):
                if isinstance(event, StreamDone):
                    usage = event.result.usage
                    count_tokens("chat", self.name, usage.input_tokens, usage.output_tokens)
                yield event

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        with upstream_errors(self.label, self.timeout):
            try:
                if await self._use_responses_for(request):
                    async for event in self._stream_responses(request):
                        yield event
                    return
                async for event in self._stream_chat(request):
                    yield event
            except (TypeError, AttributeError) as exc:  # an event the SDK built from nulls
                detail = f"unusable answer ({type(exc).__name__})"
                raise upstream_failure(self.label, detail) from exc

    async def _stream_responses(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        stream: AsyncStream[ResponseStreamEvent] = await self._post(
            "/responses",
            self._responses_kwargs(request),
            Response,
            AsyncStream[ResponseStreamEvent],
            request.party,
        )
        pieces: list[str] = []
        usage: Usage | None = None
        length = False
        ended = False
        streamed = tools.StreamedCalls()
        async with stream:
            async for event in stream:
                if event.type == "response.output_text.delta":
                    pieces.append(storable(event.delta))
                    yield TextDelta(pieces[-1])
                elif event.type in ("response.completed", "response.incomplete"):
                    final = event.response
                    if final.error or final.status not in ("completed", "incomplete"):
                        raise upstream_failure(self.label, "its final event reported a failure")
                    if final.usage:
                        usage = Usage(final.usage.input_tokens, final.usage.output_tokens)
                    length = final.status == "incomplete"
                    ended = True
                    break  # nothing after the final event is the answer's
                elif event.type in ("response.failed", "error"):
                    raise upstream_failure(self.label, "it reported a failure mid-stream")
                else:
                    for delta in tools.responses_call_deltas(streamed, event):
                        yield delta
        if not ended:
            raise upstream_failure(self.label, "the stream ended before its answer did")
        calls = streamed.calls()
        yield StreamDone(
            self._final("".join(pieces), usage, len(pieces), _finish(length, calls), request, calls)
        )

    async def _stream_chat(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        stream: AsyncStream[ChatCompletionChunk] = await self._post(
            "/chat/completions",
            {**self._chat_kwargs(request), "stream_options": {"include_usage": True}},
            ChatCompletion,
            AsyncStream[ChatCompletionChunk],
            request.party,
        )
        pieces: list[str] = []
        usage: Usage | None = None
        length = False
        streamed = tools.StreamedCalls()
        chunks = 0
        ended = False
        async with stream:
            async for chunk in stream:
                if chunk.usage:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices[:1] if not ended else ():  # after it: usage only
                    if choice.delta and choice.delta.content:
                        chunks += 1
                        pieces.append(storable(choice.delta.content))
                        yield TextDelta(pieces[-1])
                    if choice.delta and choice.delta.tool_calls:
                        chunks += 1
                        for delta in tools.chat_call_deltas(streamed, choice.delta.tool_calls):
                            yield delta
                    if choice.finish_reason == "length":
                        length = True
                    ended = ended or choice.finish_reason is not None
        if not ended:
            raise upstream_failure(self.label, "the stream ended before its answer did")
        calls = streamed.calls()
        yield StreamDone(
            self._final("".join(pieces), usage, chunks, _finish(length, calls), request, calls)
        )

    def _final(
        self,
        text: str,
        usage: Usage | None,
        chunks: int,
        finish: FinishReason,
        request: ChatRequest,
        calls: tuple[FunctionCall, ...] = (),
    ) -> ChatResult:
        if usage is None:  # about a token a chunk, and never under four characters a token
            usage = Usage(
                _estimate_tokens(request.messages), max(chunks, _written_tokens(text, calls))
            )
        return ChatResult(
            text=text, usage=usage, finish_reason=finish, model=self.name, calls=calls
        )

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return _estimate_tokens(messages)

    def count_tokens_now(self, messages: Sequence[ChatMessage]) -> int:
        """`count_tokens` without the event loop: an estimate, nothing to wait for."""
        return _estimate_tokens(messages)


def create(settings: ProviderSettings) -> OpenAIChat:
    return OpenAIChat(settings)
