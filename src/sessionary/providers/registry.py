"""Find providers by (kind, type) through entry points, build them, and share them per process."""

from __future__ import annotations

import importlib
import threading
from importlib.metadata import entry_points
from typing import Any

import structlog

from sessionary.providers.errors import ProviderUnavailable
from sessionary.providers.settings import ProviderSettings
from sessionary.providers.specs import ProviderSpec

ENTRY_POINT_GROUP = "sessionary.providers"
log = structlog.get_logger("sessionary.providers")

_instances: dict[str, Any] = {}
_instances_lock = threading.Lock()


def discover() -> dict[tuple[str, str], ProviderSpec]:
    found: dict[tuple[str, str], ProviderSpec] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = entry.load()
        except Exception:
            log.warning("provider_entry_point_failed", entry=entry.name, exc_info=True)
            continue
        if isinstance(spec, ProviderSpec):
            found[(spec.kind, spec.type)] = spec
    return found


def build(kind: str, settings: ProviderSettings) -> Any | None:
    """The provider for one slot, or None when the slot is `none`.

    Instances are shared within a process (keyed by their settings), so several apps in one
    process (tests, benchmarks) load a model's weights once.
    """
    if settings.provider == "none":
        return None
    key = f"{kind}:{settings.model_dump_json()}"
    with _instances_lock:
        if key in _instances:
            return _instances[key]
        specs = discover()
        spec = specs.get((kind, settings.provider))
        if spec is None:
            known = [*sorted(t for k, t in specs if k == kind), "none"]
            raise ProviderUnavailable(
                f"SESSIONARY_{kind.upper()}__PROVIDER: unknown {kind} provider "
                f"'{settings.provider}' (available: {', '.join(known)})."
            )
        module_name, _, attribute = spec.factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ProviderUnavailable(
                f"The {kind} provider '{settings.provider}' could not be imported: {exc}"
            ) from exc
        instance = factory(settings)
        _instances[key] = instance
        return instance
