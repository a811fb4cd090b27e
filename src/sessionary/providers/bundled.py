"""Where a model shipped inside a PyPI package lies on disk."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sessionary.providers.errors import ProviderUnavailable


def package_dir(package: str, missing: str) -> Path:
    """The package's folder, found without importing it (some model packages import plugins)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ProviderUnavailable(missing)
    return Path(next(iter(spec.submodule_search_locations)))
