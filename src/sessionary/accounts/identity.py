"""Who is calling, as every service sees it (no HTTP here, so any domain may import it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    account_id: str
    api_key_id: str | None
    # A ChatKit client secret speaks for one session only (turns and reads on it).
    session_scope: str | None = None
