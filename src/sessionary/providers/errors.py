"""How provider failures reach the caller: a status and a message naming the provider."""

from __future__ import annotations

from sessionary.kit.errors import (
    ApiError,
    InvalidRequest,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)


class ProviderUnavailable(ServiceUnavailable):
    """A configured provider cannot load: startup stops with this message; at run time, 503."""

    code = "provider_unavailable"


def upstream_failure(provider: str, detail: str, *, status: int = 502) -> ApiError:
    """502 (bad or no answer), 504 (timed out), or 400 (the request cannot fit the model)."""
    if status == 504:
        return UpstreamTimeout(f"The {provider} model provider timed out: {detail}.")
    if status == 400:
        return InvalidRequest(f"The {provider} model provider refused the request: {detail}.")
    return UpstreamError(f"The {provider} model provider failed: {detail}.")
