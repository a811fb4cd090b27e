"""OpenAI's chat completions API over the same providers, keys and ledger as every turn."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from sessionary.accounts.principal import SessionCaller
from sessionary.assistant.answers import SSE_HEADERS
from sessionary.assistant.chat_completions import ChatAnswer
from sessionary.assistant.chat_schemas import ChatCompletionRequest
from sessionary.assistant.dependencies import AppChatCompletions
from sessionary.billing.headers import REMAINING, RESERVED, credit_headers
from sessionary.billing.money import format_credits
from sessionary.kit.http import TimedStreamingResponse

router = APIRouter(tags=["chat completions"])


@router.post("/chat/completions", summary="Create a chat completion (OpenAI chat completions)")
async def create_chat_completion(
    body: ChatCompletionRequest, caller: SessionCaller, completions: AppChatCompletions
) -> Response:
    outcome = await completions.complete(caller, body)
    if isinstance(outcome, ChatAnswer):
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
