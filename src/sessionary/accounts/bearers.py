"""Bearer credentials that a domain above accounts issues (a ChatKit client secret).

Accounts authenticates every request but must not import the domains built on it, so such a
domain registers its kind of credential here when the app is created, by its visible prefix.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal


class BearerKind(Protocol):
    prefix: str

    def authenticate(self, db: Session, token: str) -> Principal:
        """The principal of a token, or 401; may write (a rate limit counts the request)."""
        ...

    def scope_of(self, db: Session, token: str) -> str | None:
        """Who a valid token speaks for, as a stable string; reads only, counts nothing."""
        ...


_KINDS: dict[str, BearerKind] = {}


def register_bearer_kind(kind: BearerKind) -> None:
    _KINDS[kind.prefix] = kind


def bearer_kind_of(token: str | None) -> BearerKind | None:
    if token is None:
        return None
    return next((k for prefix, k in _KINDS.items() if token.startswith(prefix)), None)
