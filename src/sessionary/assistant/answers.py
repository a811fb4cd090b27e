"""How a turn's outcome goes on the wire, the same for every route that answers turns.

A finished turn is JSON with the `x-credits-*` headers of its charge; a streamed one is SSE whose
headers announce the hold and the balance (its final event carries the charge).
"""

from __future__ import annotations

from fastapi import Response
from fastapi.responses import JSONResponse

from sessionary.assistant.turn_billing import TurnAnswer, TurnStream
from sessionary.billing.headers import REMAINING, RESERVED, credit_headers
from sessionary.billing.money import format_credits
from sessionary.kit.http import TimedStreamingResponse

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def turn_response(outcome: TurnAnswer | TurnStream) -> Response:
    if isinstance(outcome, TurnAnswer):
        return JSONResponse(outcome.payload, headers=credit_headers(outcome.settlement))
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
