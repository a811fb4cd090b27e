"""How a turn's outcome goes on the wire, the same for every route that answers turns.

A finished turn is JSON with the `x-credits-*` headers of its charge; a streamed one is SSE whose
headers announce the hold and the balance (its final event carries the charge); a queued
(background) one is JSON whose headers announce the hold, like a stream's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Response

from sessionary.assistant.background import TurnQueued
from sessionary.assistant.turn_billing import TurnAnswer, TurnStream
from sessionary.billing.headers import REMAINING, RESERVED, credit_headers
from sessionary.billing.money import format_credits
from sessionary.kit.http import TimedStreamingResponse
from sessionary.kit.json_answer import JSONAnswer

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def turn_response(outcome: TurnAnswer | TurnStream | TurnQueued) -> Response:
    if isinstance(outcome, TurnAnswer):
        return JSONAnswer(outcome.payload, headers=credit_headers(outcome.settlement))
    if isinstance(outcome, TurnQueued):
        held = {
            RESERVED: format_credits(outcome.reserved_micro),
            REMAINING: format_credits(outcome.remaining_micro),
        }
        return JSONAnswer(outcome.payload, headers=held)
    headers = {
        **SSE_HEADERS,
        RESERVED: format_credits(outcome.reserved_micro),
        REMAINING: format_credits(outcome.remaining_micro),
    }
    return TimedStreamingResponse(
        outcome.events,
        media_type="text/event-stream",
        headers=headers,
        write_timeout=outcome.write_timeout_seconds,
    )


def event_stream(events: AsyncIterator[bytes], write_timeout: float) -> Response:
    """Stored events replayed as SSE (a background response's stream, resumed)."""
    return TimedStreamingResponse(
        events, media_type="text/event-stream", headers=SSE_HEADERS, write_timeout=write_timeout
    )
