"""A turn as Server-Sent Events, with the Responses API's full event lifecycle.

created → in_progress → output_item.added → content_part.added → output_text.delta… →
output_text.done → content_part.done → output_item.done → completed (or incomplete); a function
call is output_item.added → function_call_arguments.delta… → function_call_arguments.done →
output_item.done (stream_items.py); image turns send the image_generation_call events instead;
a failure sends `response.failed`, and nothing is charged. A client that hangs up stops the
generation and pays for what was produced.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog

from sessionary.assistant.stream_items import EventWriter, StreamedOutput
from sessionary.assistant.turn_billing import settle_partial
from sessionary.assistant.turns import Turn
from sessionary.billing.ledger import Settlement
from sessionary.billing.metering import Meter
from sessionary.billing.money import credits_number
from sessionary.kit.errors import DATABASE_ERRORS, STREAM_END_UNSTORED, ApiError
from sessionary.kit.ids import new_id
from sessionary.providers.base import CallDelta, StreamDone, TextDelta

if TYPE_CHECKING:  # the service builds the stream; the stream calls back into it
    from sessionary.assistant.service import AssistantService

log = structlog.get_logger("sessionary.assistant")


async def stream_turn(service: AssistantService, turn: Turn, meter: Meter) -> AsyncIterator[bytes]:
    event = EventWriter()
    session_id = turn.session_id
    pending = service.payload(
        turn, session_id=session_id, status="in_progress", output=[], usage=None
    )
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    produced: list[str] = []
    started = False  # the model was called: the prompt is paid for from here on
    closed = False  # the hold was settled or released
    try:
        if turn.image is not None:
            async for chunk in _image_events(service, turn, meter, event):
                yield chunk
            closed = True
            return
        output = StreamedOutput(event, turn)
        done: StreamDone | None = None
        request = service.chat_request(turn)
        started = True
        async for piece in service.providers.chat().stream(request):
            if isinstance(piece, TextDelta):
                produced.append(piece.text)
                for chunk in output.text(piece.text):
                    yield chunk
            elif isinstance(piece, CallDelta):
                if piece.arguments:
                    produced.append(piece.arguments)
                for chunk in output.call(piece):
                    yield chunk
            elif isinstance(piece, StreamDone):
                done = piece
        assert done is not None
        for chunk in output.finish(done.result):
            yield chunk
        status = "incomplete" if done.result.finish_reason == "length" else "completed"
        payload, settlement = await service.commit(
            turn, meter, output.items, done.result.usage, status, images=output.image_count
        )
        closed = True
        payload["credits"] = {
            "charged": credits_number(settlement.charged_micro),
            "remaining": credits_number(settlement.remaining_micro),
        }
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        yield event(kind, response=payload)
    except Exception as exc:
        # The model failed mid-way: what was delivered (and the prompt) is still paid for. When
        # the database cannot take that charge either (it is down, or locked past the busy
        # timeout), the stream still ends with its terminal event; the hold, if it could not be
        # released, expires back to its owner.
        try:
            partial = await _settle_partial(service, turn, meter, produced, started)
        except Exception:
            log.exception("stream_settle_failed", response_id=turn.response_id)
            partial = None
        closed = True
        if isinstance(exc, ApiError):
            # OpenAI's response errors have a closed set of codes: a rate limit, or a server error.
            code = "rate_limit_exceeded" if exc.status_code == 429 else "server_error"
            error = {"code": code, "message": exc.message}
        elif isinstance(exc, DATABASE_ERRORS):
            log.warning(
                "stream_database_unavailable",
                response_id=turn.response_id,
                error_type=type(getattr(exc, "orig", exc)).__name__,
            )
            error = {"code": "server_error", "message": STREAM_END_UNSTORED}
        else:
            log.exception("stream_failed", response_id=turn.response_id)
            error = {"code": "server_error", "message": "Internal server error."}
        failed = service.payload(
            turn, session_id=session_id, status="failed", output=[], usage=None, error=error
        )
        if partial is not None:
            failed["credits"] = {
                "charged": credits_number(partial.charged_micro),
                "remaining": credits_number(partial.remaining_micro),
            }
        yield event("response.failed", response=failed)
    finally:
        if not closed and meter.settlement is None:  # the client left: bill what was produced
            try:
                await _settle_partial(service, turn, meter, produced, started)
            except Exception:  # nobody to tell: the hold, if still open, expires to its owner
                log.exception("stream_settle_failed", response_id=turn.response_id)


async def _image_events(
    service: AssistantService, turn: Turn, meter: Meter, event: EventWriter
) -> AsyncIterator[bytes]:
    assert turn.image is not None
    item_id = new_id("ig")
    options = turn.image.options
    placeholder = {
        "id": item_id,
        "type": "image_generation_call",
        "status": "in_progress",
        "result": None,
        "revised_prompt": None,
    }
    yield event("response.output_item.added", output_index=0, item=placeholder)
    yield event("response.image_generation_call.in_progress", output_index=0, item_id=item_id)
    yield event("response.image_generation_call.generating", output_index=0, item_id=item_id)
    item, usage = await service.make_image(turn)
    item["id"] = item_id
    if options.get("partial_images"):
        yield event(
            "response.image_generation_call.partial_image",
            output_index=0,
            item_id=item_id,
            partial_image_index=0,
            partial_image_b64=item["result"],
        )
    yield event("response.image_generation_call.completed", output_index=0, item_id=item_id)
    yield event("response.output_item.done", output_index=0, item=item)
    payload, settlement = await service.commit(turn, meter, [item], usage, "completed", images=1)
    payload["credits"] = {
        "charged": credits_number(settlement.charged_micro),
        "remaining": credits_number(settlement.remaining_micro),
    }
    yield event("response.completed", response=payload)


async def _settle_partial(
    service: AssistantService, turn: Turn, meter: Meter, produced: list[str], started: bool
) -> Settlement | None:
    return await settle_partial(
        meter,
        service.providers.chat(),
        started=started,
        produced=produced,
        input_tokens=turn.input_tokens,
        price=lambda usage: service.cost(turn, usage, 0),
        model=turn.model,
        subject_id=turn.response_id,
    )
