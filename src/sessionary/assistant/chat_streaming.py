"""A chat completion as Server-Sent Events: `chat.completion.chunk`s, then `data: [DONE]`.

The first chunk names the assistant role; content and tool-call deltas follow as the model makes
them; the last chunk has the finish_reason and (with `stream_options.include_usage`) a chunk with
no choices carries the usage, as OpenAI streams them. The last chunk also carries `credits`, the
charge, which the headers could only announce as a hold. A failure mid-way sends
`data: {"error": ...}` (the SDK raises it) after charging what was delivered; a client that hangs
up stops the generation and pays for what was produced, never more than the hold.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import structlog

from sessionary.assistant.chat_payloads import (
    ChunkWriter,
    credits_object,
    finish_reason,
    tool_call_object,
)
from sessionary.assistant.turn_billing import settle_partial as settle_turn_partial
from sessionary.billing.ledger import Settlement
from sessionary.billing.metering import Meter
from sessionary.kit.errors import DATABASE_ERRORS, STREAM_END_UNSTORED, ApiError, error_type
from sessionary.providers.base import CallDelta, StreamDone, TextDelta

if TYPE_CHECKING:  # the service builds the stream; the stream calls back into it
    from sessionary.assistant.chat_completions import ChatCompletions, ChatTurn

log = structlog.get_logger("sessionary.assistant")

DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _call_delta(piece: CallDelta) -> dict[str, Any]:
    delta: dict[str, Any] = {"index": piece.index}
    function: dict[str, Any] = {"arguments": piece.arguments}
    if piece.call_id is not None:
        delta |= {"id": piece.call_id, "type": "function"}
    if piece.name is not None:
        function["name"] = piece.name
    return {**delta, "function": function}


async def stream_chat(
    service: ChatCompletions, turn: ChatTurn, meter: Meter
) -> AsyncIterator[bytes]:
    chunk = ChunkWriter(turn.completion_id, turn.created, turn.model, turn.inputs.include_usage)
    produced: list[str] = []  # text and argument pieces, for a stream cut short
    started = False  # the model was called: the prompt is paid for from here on
    closed = False  # the hold was settled or released
    try:
        yield sse(chunk({"role": "assistant", "content": "", "refusal": None}))
        done: StreamDone | None = None
        streamed_calls: set[int] = set()
        request = service.chat_request(turn)
        started = True
        async for piece in service.providers.chat().stream(request):
            if isinstance(piece, TextDelta):
                produced.append(piece.text)
                yield sse(chunk({"content": piece.text}))
            elif isinstance(piece, CallDelta):
                produced.append(piece.arguments)
                streamed_calls.add(piece.index)
                yield sse(chunk({"tool_calls": [_call_delta(piece)]}))
            elif isinstance(piece, StreamDone):
                done = piece
        assert done is not None
        result = done.result
        calls = result.calls if turn.inputs.functions else ()
        for index, call in enumerate(calls):  # a provider that only reported them at the end
            if index not in streamed_calls:
                yield sse(chunk({"tool_calls": [{"index": index, **tool_call_object(call)}]}))
        reason = finish_reason(result.finish_reason, calls)
        payload, settlement = await service.commit(
            turn, meter, result.text, calls, reason, result.usage
        )
        closed = True
        extra: dict[str, Any] = {"credits": credits_object(settlement)}
        if "session_id" in payload:
            extra["session_id"] = payload["session_id"]
        if turn.inputs.include_usage:
            yield sse(chunk({}, reason))
            yield sse(chunk.usage(result.usage, **extra))
        else:
            yield sse(chunk({}, reason, **extra))
        yield DONE
    except Exception as exc:
        # The model failed mid-way: what was delivered (and the prompt) is still paid for. When
        # the database cannot take that charge either, the stream still ends with its error
        # chunk; a hold that could not be released expires back to its owner.
        try:
            partial = await settle_partial(service, turn, meter, produced, started)
        except Exception:
            log.exception("chat_stream_settle_failed", completion_id=turn.completion_id)
            partial = None
        closed = True
        if isinstance(exc, ApiError):
            status, message, code = exc.status_code, exc.message, exc.code or "server_error"
        elif isinstance(exc, DATABASE_ERRORS):
            log.warning(
                "chat_stream_database_unavailable",
                completion_id=turn.completion_id,
                error_type=type(getattr(exc, "orig", exc)).__name__,
            )
            status, message, code = 503, STREAM_END_UNSTORED, "database_unavailable"
        else:
            log.exception("chat_stream_failed", completion_id=turn.completion_id)
            status, message, code = 500, "Internal server error.", "server_error"
        body: dict[str, Any] = {
            "error": {"message": message, "type": error_type(status), "param": None, "code": code}
        }
        if partial is not None:
            body["credits"] = credits_object(partial)
        yield sse(body)
    finally:
        if not closed and meter.settlement is None:  # the client left: bill what was produced
            try:
                await settle_partial(service, turn, meter, produced, started)
            except Exception:  # nobody to tell: the hold, if still open, expires to its owner
                log.exception("chat_stream_settle_failed", completion_id=turn.completion_id)


async def settle_partial(
    service: ChatCompletions, turn: ChatTurn, meter: Meter, produced: list[str], started: bool
) -> Settlement | None:
    return await settle_turn_partial(
        meter,
        service.providers.chat(),
        started=started,
        produced=produced,
        input_tokens=turn.input_tokens,
        price=lambda usage: service.cost(turn, usage),
        model=turn.model,
        subject_id=turn.completion_id,
    )
