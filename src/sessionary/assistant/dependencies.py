"""The assistant services, built from the app's state (it opens its own short transactions)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sessionary.assistant.background import BackgroundRuns
from sessionary.assistant.chat_completions import ChatCompletions
from sessionary.assistant.service import AssistantService
from sessionary.billing.pricing import Pricing


async def get_assistant_service(request: Request) -> AssistantService:
    state = request.app.state
    return AssistantService(
        state.db, state.providers, Pricing(state.settings.pricing), state.background_runs
    )


async def get_background_runs(request: Request) -> BackgroundRuns:
    runs: BackgroundRuns = request.app.state.background_runs
    return runs


AppBackgroundRuns = Annotated[BackgroundRuns, Depends(get_background_runs)]
AppAssistant = Annotated[AssistantService, Depends(get_assistant_service)]


async def get_chat_completions(request: Request) -> ChatCompletions:
    state = request.app.state
    return ChatCompletions(state.db, state.providers, Pricing(state.settings.pricing))


AppChatCompletions = Annotated[ChatCompletions, Depends(get_chat_completions)]
