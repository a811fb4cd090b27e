"""The providers' configuration shape, as provider modules import it.

It lives in `sessionary.settings.providers` with the other settings groups, so that config.py
composes every group without importing a domain.
"""

from sessionary.settings.providers import ProviderSettings

__all__ = ["ProviderSettings"]
