"""The assistant's collaborators, from the app's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sessionary.assistant.turns import TurnService
from sessionary.billing.pricing import Pricing


def get_turn_service(request: Request) -> TurnService:
    state = request.app.state
    return TurnService(state.db, state.providers, Pricing(state.settings.pricing))


Turns = Annotated[TurnService, Depends(get_turn_service)]
