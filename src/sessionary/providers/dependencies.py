"""The app's providers, for routes that only read what is configured."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sessionary.providers.container import Providers


async def get_providers(request: Request) -> Providers:
    providers: Providers = request.app.state.providers
    return providers


AppProviders = Annotated[Providers, Depends(get_providers)]
