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


class CookieKind(Protocol):
    """A browser session held in a cookie (the console's), registered like a bearer kind.

    Only consulted when a request carries no Authorization header and no external-user key, so
    an API client is never authenticated by a cookie it did not mean to send.
    """

    cookie: str

    def authenticate(self, db: Session, value: str, csrf: str | None, method: str) -> Principal:
        """The principal of a live session, or 401; 403 when a change lacks its CSRF token."""
        ...

    def scope_of(self, db: Session, value: str) -> str | None: ...


_COOKIES: list[CookieKind] = []


def register_cookie_kind(kind: CookieKind) -> None:
    if all(k.cookie != kind.cookie for k in _COOKIES):
        _COOKIES.append(kind)


def cookie_credential(cookies: dict[str, str]) -> tuple[CookieKind, str] | None:
    for kind in _COOKIES:
        value = cookies.get(kind.cookie)
        if value:
            return kind, value
    return None
