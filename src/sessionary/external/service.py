"""Rules for external users: who they are, who may act for them, their credits and library.

An external user belongs to one account. The account's key acts for any of its users by naming
one (`external_user` in the body, or query parameters); the user's own key or an auth token acts
only for that user. Everything an external user spends comes from its own balance, which the
account funds by transfer (`grant`), so a platform cannot mint credits for its users.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from sessionary.accounts.identity import Principal
from sessionary.accounts.service import AccountService
from sessionary.billing.ledger import Ledger, Owner, Settlement
from sessionary.billing.money import (
    CREDITS_PER_USD,
    credits_number,
    credits_to_micro,
    usd_to_micro,
)
from sessionary.billing.pricing import Pricing
from sessionary.external.models import ExternalUser, LibraryMark
from sessionary.external.schemas import ExternalUserIdentity, UtilityChargeRequest
from sessionary.external.store import ExternalUserStore, LibraryRow
from sessionary.kit.errors import Conflict, Forbidden, InvalidRequest, NotFound
from sessionary.kit.ids import new_id
from sessionary.kit.metadata import dump, load
from sessionary.kit.models import utcnow

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


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class ExternalUserService:
    def __init__(self, session: Session) -> None:
        self.store = ExternalUserStore(session)
        self.ledger = Ledger(session)
        self.accounts = AccountService(session)

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
    ) -> tuple[Settlement, dict[str, Any]]:
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
        details = {
            "costUsd": float(usd / body.pricing_multiplier),
            "pricingMultiplier": float(body.pricing_multiplier),
            "creditsPerDollar": CREDITS_PER_USD,
            "units": units,
        }
        return settlement, {"utilityType": kind or None, "pricing": details}

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

    def library(self, user: ExternalUser, limit: int) -> list[dict[str, Any]]:
        limit = max(1, min(limit, MAX_LIBRARY_LIMIT))
        return [library_item(row) for row in self.store.library(user.id, limit)]

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

    def archive(self, user: ExternalUser, request_id: str) -> dict[str, Any]:
        entry, _, session_id = self._library_row(user, request_id)
        mark = self.store.mark(entry)
        mark.archived_at = mark.archived_at or utcnow()
        mark.updated_at = utcnow()
        return library_item((entry, mark, session_id))

    def publish(
        self,
        user: ExternalUser,
        request_id: str,
        *,
        title: str | None,
        description: str | None,
        tags: list[str] | str | None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
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
        item = library_item((entry, mark, session_id))
        publication = {
            "id": mark.publication_id,
            "request_id": entry.id,
            "title": mark.title,
            "description": mark.description,
            "tags": load(mark.tags_json) or [],
            "published_at": iso(mark.published_at),
        }
        return item, publication

    # Summaries

    def summary(self, user: ExternalUser) -> dict[str, Any]:
        """samsar-js's ExternalUserSummary, with counters from the user's ledger."""
        totals = self.ledger.totals(self.owner(user))
        charges, grants, refunds = (totals.get(k) for k in ("charge", "grant", "refund"))
        keys = self.accounts.live_external_keys(user.id)
        last_request = charges.latest if charges else None
        return {
            "id": user.id,
            "provider": user.provider,
            "external_user_id": user.external_user_id,
            "unique_key": user.unique_key,
            **{name: getattr(user, name) for name in PROFILE_FIELDS},
            "browser_installation": load(user.browser_installation_json),
            "metadata": load(user.metadata_json),
            "has_system_prompt": user.system_prompt is not None,
            "generation_credits": credits_number(self.balance(user)),
            "has_external_api_key": bool(keys),
            "external_api_key_created_at": iso(keys[-1].created_at) if keys else None,
            "external_api_key_last_used_at": iso(keys[-1].last_used_at) if keys else None,
            "total_requests": charges.count if charges else 0,
            "total_credits_used": credits_number(-charges.amount_micro) if charges else 0,
            "total_credits_refunded": credits_number(refunds.amount_micro) if refunds else 0,
            "total_credits_purchased": credits_number(grants.amount_micro) if grants else 0,
            "last_request_at": iso(last_request),
            "last_purchase_at": iso(grants.latest) if grants else None,
            "last_activity_at": iso(max(d for d in (last_request, user.updated_at) if d)),
            "created_at": iso(user.created_at),
            "updated_at": iso(user.updated_at),
        }

    def with_summary(self, user: ExternalUser, payload: dict[str, Any]) -> dict[str, Any]:
        summary = self.summary(user)
        return {**payload, "external_user": summary, "externalUser": summary}


def library_item(row: LibraryRow) -> dict[str, Any]:
    entry, mark, session_id = row
    mark = mark or LibraryMark()
    return {
        "request_id": entry.id,
        "external_request_id": entry.id,
        "upstream_request_id": entry.subject_id,
        "upstream_session_id": session_id,
        "route_key": entry.route,
        "status": "COMPLETED",
        "model": entry.model,
        "usage": load(entry.usage),
        "credits_charged": credits_number(-entry.amount_micro),
        "credits_refunded": 0,
        "remaining_credits": credits_number(entry.balance_after_micro),
        "created_at": iso(entry.created_at),
        "updated_at": iso(mark.updated_at or entry.created_at),
        "is_archived": mark.archived_at is not None,
        "is_published": mark.published_at is not None,
        "published_title": mark.title,
        "published_description": mark.description,
        "published_tags": load(mark.tags_json) or [],
        "published_at": iso(mark.published_at),
        "published_publication_id": mark.publication_id,
    }
