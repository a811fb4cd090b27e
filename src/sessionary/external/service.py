"""Rules for external users: who they are, who may act for them, their credits and library.

An external user belongs to one account. The account's key acts for any of its users by naming
one (`external_user` in the body, or query parameters); the user's own key or an auth token acts
only for that user. Everything an external user spends comes from its own balance, which the
account funds by transfer (`grant`), so a platform cannot mint credits for its users.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.accounts.keys import AUTH_TOKEN_TYPE
from sessionary.accounts.models import Account, ApiKey
from sessionary.accounts.principal import identify
from sessionary.accounts.service import AccountService
from sessionary.accounts.tokens import TokenService
from sessionary.billing.ledger import KindTotal, Ledger, Owner, Settlement
from sessionary.billing.money import credits_to_micro, usd_to_micro
from sessionary.billing.pricing import Pricing
from sessionary.external.models import ExternalUser
from sessionary.external.schemas import ExternalUserIdentity, UtilityChargeRequest
from sessionary.external.store import ExternalUserStore, LibraryRow
from sessionary.kit.db import Database
from sessionary.kit.errors import Conflict, Forbidden, InvalidRequest, NotFound
from sessionary.kit.ids import new_id
from sessionary.kit.metadata import dump
from sessionary.kit.models import utcnow
from sessionary.kit.pagination import PageParams

PROFILE_FIELDS = (
    "external_app_id",
    "external_company_id",
    "external_account_id",
    "email",
    "username",
    "display_name",
    "avatar_url",
    "user_type",
)
UTILITY_ALIASES = {
    "text_to_speech": "tts",
    "elevenlabs_tts": "tts",
    "speech": "tts",
    "speech_to_text": "stt",
    "elevenlabs_stt": "stt",
    "transcription": "stt",
    "firecrawl": "crawl",
    "firecrawl_crawl": "crawl",
    "scrape": "crawl",
}
MAX_LIBRARY_LIMIT = 100


@dataclass(frozen=True)
class UserFacts:
    user: ExternalUser
    balance_micro: int
    totals: dict[str, KindTotal]
    keys: list[ApiKey]


@dataclass(frozen=True)
class AccountFacts:
    account: Account
    spendable_micro: int


@dataclass(frozen=True)
class UsageCharge:
    utility_type: str | None
    cost_usd: Decimal  # before the pricing multiplier
    units: dict[str, Any]
    settlement: Settlement


class ExternalUserService:
    def __init__(self, db: Session) -> None:
        self.store = ExternalUserStore(db)
        self.ledger = Ledger(db)
        self.accounts = AccountService(db)

    # Identity

    def upsert(self, account_id: str, identity: ExternalUserIdentity) -> tuple[ExternalUser, bool]:
        """Create the user, or refresh the profile fields this call names; (user, created)."""
        now = utcnow()
        user = self._lookup(account_id, identity)
        created = False
        if user is None:
            values: dict[str, Any] = {
                "id": new_id("eu"),
                "account_id": account_id,
                "provider": identity.provider,
                "unique_key": identity.key,
                "external_user_id": identity.platform_id,
                "created_at": now,
                "updated_at": now,
            }
            created = self.store.insert(values)
            user = self.store.find(account_id, identity.provider, identity.key)
            assert user is not None  # inserted now, or by the concurrent request that won
        for name in PROFILE_FIELDS:
            value = getattr(identity, name)
            if value is not None:
                setattr(user, name, value)
        if identity.metadata is not None:
            user.metadata_json = dump(identity.metadata)
        if identity.browser_installation is not None:
            user.browser_installation_json = dump(identity.browser_installation)
        user.updated_at = now
        self.ledger.open_account(Owner.external_user(user.id, account_id))
        return user, created

    def _lookup(self, account_id: str, identity: ExternalUserIdentity) -> ExternalUser | None:
        user = self.store.find(account_id, identity.provider, identity.key)
        if user is None and identity.unique_key is None and identity.external_user_id:
            user = self.store.find_by_platform_id(
                account_id, identity.provider, identity.external_user_id
            )
        return user

    def listing(self, caller: Principal, params: PageParams) -> tuple[list[ExternalUser], bool]:
        """One page of the account's external users (an account-level read)."""
        return self.store.page_of_account(caller.account_id, params)

    def find(self, user_id: str) -> ExternalUser | None:
        return self.store.get(user_id)

    def get(self, user_id: str) -> ExternalUser:
        user = self.store.get(user_id)
        if user is None:
            raise NotFound(f"No external user '{user_id}'.", param="external_user")
        return user

    def resolve(
        self, caller: Principal, identity: ExternalUserIdentity | None
    ) -> tuple[Principal, ExternalUser]:
        """The principal acting for one external user, and that user.

        An external caller is its own user (naming another one is 403); the account names the
        user it acts for, which must exist (POST /v1/external_users/session creates users).
        """
        if caller.external_user_id is not None:
            user = self.get(caller.external_user_id)
            if identity is not None and not self._same(user, identity):
                raise Forbidden(
                    "An external user may act only for itself.",
                    param="external_user",
                    code="external_user_forbidden",
                )
            return caller, user
        if identity is None:
            raise InvalidRequest(
                "Name the external user: external_user {provider, unique_key or "
                "external_user_id} in the body (query parameters on GET).",
                param="external_user",
            )
        found = self._lookup(caller.account_id, identity)
        if found is None:
            raise NotFound(
                f"No external user '{identity.provider}:{identity.key}' in this account; create "
                "it with POST /v1/external_users/session.",
                param="external_user",
                code="external_user_not_found",
            )
        return caller.acting_for(found.id), found

    @staticmethod
    def _same(user: ExternalUser, identity: ExternalUserIdentity) -> bool:
        if identity.provider != user.provider:
            return False
        if identity.unique_key is not None:
            return identity.unique_key == user.unique_key
        return identity.platform_id in (user.unique_key, user.external_user_id)

    # Keys and prompts

    def issue_key(self, user: ExternalUser, *, rotate: bool, by_token: bool = False) -> str | None:
        """The user's key in plaintext when it is new (first session, or a rotation), else None.

        A caller holding only an auth token may not mint keys: a key would outlive the token
        (tokens die with their lineage; keys live until revoked)."""
        if not rotate and self.accounts.live_external_keys(user.id):
            return None
        if by_token:
            raise Forbidden(
                "An auth token cannot create or rotate API keys (they would outlive it); use the "
                "account's API key.",
                code="token_cannot_mint_keys",
            )
        return self.accounts.rotate_external_key(user.account_id, user.id).plaintext

    def set_prompt(self, user: ExternalUser, prompt: str | None) -> ExternalUser:
        user.system_prompt = prompt or None
        user.updated_at = utcnow()
        return user

    # Credits

    def balance(self, user: ExternalUser) -> int:
        return self.ledger.spendable(self.owner(user))

    @staticmethod
    def owner(user: ExternalUser) -> Owner:
        return Owner.external_user(user.id, user.account_id)

    def grant(self, user: ExternalUser, credits: int) -> tuple[int, int, int]:
        """Move credits from the account to the user: (granted, user's, account's) micro-credits.

        402 when the account cannot fund it; both movements commit together or not at all.
        """
        micro = credits_to_micro(credits)
        account = Owner.account(user.account_id)
        left = self.ledger.charge(
            account, micro, route="/v1/external_users/credits/grant", subject_id=user.id
        )
        remaining = self.ledger.grant(
            self.owner(user), micro, note=f"granted by account {user.account_id}"
        )
        return micro, remaining, left.remaining_micro

    def charge_usage(
        self, user: ExternalUser, body: UtilityChargeRequest, pricing: Pricing
    ) -> UsageCharge:
        """Charge usage incurred elsewhere (TTS, STT, crawls): units x price, or a given cost."""
        kind = (body.utility_type or "").strip().lower()
        kind = UTILITY_ALIASES.get(kind, kind)
        units: dict[str, Any] = {}
        if body.cost_usd is not None:
            usd = body.cost_usd
        else:
            price = pricing.utility(kind)
            if price is None:
                known = ", ".join(sorted(pricing.settings.utilities))
                raise InvalidRequest(
                    f"Unknown utility_type '{kind}'; priced types are {known} (or send cost_usd).",
                    param="utility_type",
                )
            amount = self._units(body, price.unit)
            units = {price.unit: float(amount)}
            usd = pricing.utility_usd(price, amount)
        usd *= body.pricing_multiplier
        micro = usd_to_micro(usd)
        ceiling = pricing.settings.max_utility_charge_credits
        if micro > credits_to_micro(ceiling):
            raise InvalidRequest(
                f"One usage charge costs at most {ceiling} credits.", param="cost_usd"
            )
        settlement = self.ledger.charge(
            self.owner(user),
            micro,
            route="/v1/external_users/utils/usage_charge",
            model=body.model or body.provider,
            usage={"utility_type": kind or None, **units},
            subject_id=f"utility:{kind or 'cost'}"[:64],
        )
        return UsageCharge(kind or None, usd / body.pricing_multiplier, units, settlement)

    @staticmethod
    def _units(body: UtilityChargeRequest, unit: str) -> Decimal:
        if unit == "characters":
            if body.characters is not None:
                return Decimal(body.characters)
            if body.text is not None:
                return Decimal(len(body.text))
            raise InvalidRequest("A TTS charge needs characters (or the text).", param="characters")
        if unit == "minutes":
            for value, per_minute in (
                (body.duration_minutes, Decimal(1)),
                (body.duration_seconds, Decimal(60)),
                (body.duration_ms, Decimal(60_000)),
                (body.duration_hours, Decimal(1) / 60),
            ):
                if value is not None:
                    return value / per_minute
            raise InvalidRequest(
                "An STT charge needs a duration (duration_ms, _seconds, _minutes or _hours).",
                param="duration_seconds",
            )
        if body.crawl_credits is None:
            raise InvalidRequest(
                f"This charge needs its {unit} (firecrawl_credits_used).",
                param="firecrawl_credits_used",
            )
        return body.crawl_credits

    # Library

    def library(self, user: ExternalUser, limit: int) -> list[LibraryRow]:
        limit = max(1, min(limit, MAX_LIBRARY_LIMIT))
        return self.store.library(user.id, limit)

    def _library_row(self, user: ExternalUser, request_id: str) -> LibraryRow:
        entry = self.store.charge_entry(request_id)
        if entry is None:
            raise NotFound(f"No request '{request_id}'.", param="request_id")
        if entry.account_id != user.account_id or entry.owner_id != user.id:
            raise Forbidden(
                "This request belongs to someone else.",
                param="request_id",
                code="request_forbidden",
            )
        row = self.store.library_row(user.id, entry.id)
        assert row is not None
        return row

    def archive(self, user: ExternalUser, request_id: str) -> LibraryRow:
        entry, _, session_id = self._library_row(user, request_id)
        mark = self.store.mark(entry)
        mark.archived_at = mark.archived_at or utcnow()
        mark.updated_at = utcnow()
        return entry, mark, session_id

    def publish(
        self,
        user: ExternalUser,
        request_id: str,
        *,
        title: str | None,
        description: str | None,
        tags: list[str] | str | None,
    ) -> LibraryRow:
        entry, _, session_id = self._library_row(user, request_id)
        mark = self.store.mark(entry)
        if mark.archived_at is not None:
            raise Conflict("An archived request cannot be published.", param="request_id")
        now = utcnow()
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        mark.published_at = now
        mark.publication_id = mark.publication_id or new_id("pub")
        mark.title = title if title is not None else mark.title
        mark.description = description if description is not None else mark.description
        if tags is not None:
            if len(tags) > 32 or any(len(t) > 64 for t in tags):
                raise InvalidRequest("At most 32 tags of 64 characters.", param="tags")
            mark.tags_json = json.dumps(tags)
        mark.updated_at = now
        return entry, mark, session_id

    # What the answers show of a user

    def facts(self, user: ExternalUser) -> UserFacts:
        """What a user's summary shows: its balance, ledger totals and live keys."""
        return UserFacts(
            user,
            self.balance(user),
            self.ledger.totals(self.owner(user)),
            self.accounts.live_external_keys(user.id),
        )

    def account_model(self, user: ExternalUser) -> str | None:
        """The model the user's account chose for its assistant (None: the served default)."""
        return self.accounts.get_account(user.account_id).assistant_model

    def caller_facts(self, principal: Principal) -> AccountFacts | UserFacts:
        """Who a verified token speaks for: its account and balance, or its external user."""
        if principal.external_user_id is None:
            account = self.accounts.get_account(principal.account_id)
            return AccountFacts(account, self.ledger.spendable(Owner.account(account.id)))
        return self.facts(self.get(principal.external_user_id))


# Async routes hold no request transaction (a turn or an ingest may run for minutes), so what they
# need of a user is read here in short transactions of its own, off the event loop.


async def acting_principal(
    database: Database, caller: Principal, identity: ExternalUserIdentity | None
) -> Principal:
    """The principal acting for the named user (see `ExternalUserService.resolve`)."""

    def resolve() -> Principal:
        with database.session(write=False) as db:
            return ExternalUserService(db).resolve(caller, identity)[0]

    return await database.in_worker(resolve)


async def facts_of(database: Database, user_id: str) -> UserFacts:
    def read() -> UserFacts:
        with database.session(write=False) as db:
            users = ExternalUserService(db)
            return users.facts(users.get(user_id))

    return await database.in_worker(read)


# `GET /users/verify_token` writes when it spends a login token: it cannot use the request's
# read-only transaction, so it opens the write itself.


@dataclass(frozen=True)
class Verified:
    facts: AccountFacts | UserFacts
    auth_token: str | None  # plaintext, only when a login token was just exchanged for it
    expires_at: datetime | None


def exchange_login_token(database: Database, login_token: str, ttl: timedelta) -> Verified:
    """Spend a login token and issue its auth token, in one transaction."""
    with database.session() as db:
        issued = TokenService(db).exchange(login_token, ttl)
        row = issued.row
        principal = Principal(row.account_id, None, external_user_id=row.external_user_id)
        facts = ExternalUserService(db).caller_facts(principal)
        return Verified(facts, issued.plaintext, row.expires_at)


def verify_auth_token(database: Database, token: str) -> Verified:
    """Who an auth token or a key speaks for, and when an auth token expires."""
    with database.session(write=False) as db:
        principal = identify(db, token, None)
        facts = ExternalUserService(db).caller_facts(principal)
        expires_at = None
        if token.startswith(AUTH_TOKEN_TYPE):
            expires_at = TokenService(db).authenticate(token).expires_at
        return Verified(facts, None, expires_at)
