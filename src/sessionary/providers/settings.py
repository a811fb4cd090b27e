"""The providers' configuration shape, as provider modules import it.

It lives in `sessionary.settings.providers` with the other settings groups, so that config.py
composes every group without importing a domain.
"""

from sessionary.settings.providers import LOCAL_MAX_OUTPUT_TOKENS, ProviderSettings

__all__ = ["LOCAL_MAX_OUTPUT_TOKENS", "ProviderSettings"]
