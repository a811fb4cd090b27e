"""OpenAI's chat completions API over the same providers, keys and ledger as every turn."""

from __future__ import annotations

from fastapi import APIRouter, Response

from sessionary.accounts.principal import SessionCaller
from sessionary.assistant.answers import turn_response
from sessionary.assistant.chat_schemas import ChatCompletionRequest
from sessionary.assistant.dependencies import AppChatCompletions

router = APIRouter(tags=["chat completions"])


@router.post("/chat/completions", summary="Create a chat completion (OpenAI chat completions)")
async def create_chat_completion(
    body: ChatCompletionRequest, caller: SessionCaller, completions: AppChatCompletions
) -> Response:
    return turn_response(await completions.complete(caller, body))
