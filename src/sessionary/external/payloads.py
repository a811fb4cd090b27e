"""samsar-js's shapes for external users: the summary every answer carries, library items,
publications, usage charges and verified tokens. Built from what the service found."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sessionary.billing.money import CREDITS_PER_USD, credits_number
from sessionary.external.models import LibraryMark
from sessionary.external.service import PROFILE_FIELDS, AccountFacts, UsageCharge, UserFacts
from sessionary.external.store import LibraryRow
from sessionary.kit.metadata import load


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def summary(facts: UserFacts) -> dict[str, Any]:
    """samsar-js's ExternalUserSummary, with counters from the user's ledger."""
    user, totals, keys = facts.user, facts.totals, facts.keys
    charges, grants, refunds = (totals.get(k) for k in ("charge", "grant", "refund"))
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
        "generation_credits": credits_number(facts.balance_micro),
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


def with_summary(facts: UserFacts, payload: dict[str, Any]) -> dict[str, Any]:
    described = summary(facts)
    return {**payload, "external_user": described, "externalUser": described}


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


def publication(row: LibraryRow) -> dict[str, Any]:
    entry, mark, _ = row
    assert mark is not None
    return {
        "id": mark.publication_id,
        "request_id": entry.id,
        "title": mark.title,
        "description": mark.description,
        "tags": load(mark.tags_json) or [],
        "published_at": iso(mark.published_at),
    }


def charge_details(charge: UsageCharge, multiplier: Any) -> dict[str, Any]:
    details = {
        "costUsd": float(charge.cost_usd),
        "pricingMultiplier": float(multiplier),
        "creditsPerDollar": CREDITS_PER_USD,
        "units": charge.units,
    }
    return {"utilityType": charge.utility_type, "pricing": details}


def verified(facts: AccountFacts | UserFacts) -> dict[str, Any]:
    """samsar-js's VerifiedClientSessionResponse for an account or an external user."""
    if isinstance(facts, AccountFacts):
        account = facts.account
        return {
            "isExternalUser": False,
            "_id": account.id,
            "accountId": account.id,
            "username": account.name,
            "generationCredits": credits_number(facts.spendable_micro),
        }
    user, s = facts.user, summary(facts)
    return {
        "isExternalUser": True,
        "_id": user.id,
        "accountId": user.account_id,
        "email": s["email"],
        "username": s["username"],
        "displayName": s["display_name"],
        "avatarUrl": s["avatar_url"],
        "provider": s["provider"],
        "externalUserId": s["external_user_id"],
        "uniqueKey": s["unique_key"],
        "externalAppId": s["external_app_id"],
        "externalCompanyId": s["external_company_id"],
        "generationCredits": s["generation_credits"],
        "totalRequests": s["total_requests"],
        "totalCreditsUsed": s["total_credits_used"],
        "totalCreditsRefunded": s["total_credits_refunded"],
        "totalCreditsPurchased": s["total_credits_purchased"],
        "lastRequestAt": s["last_request_at"],
        "lastPurchaseAt": s["last_purchase_at"],
        "lastActivityAt": s["last_activity_at"],
        "createdAt": s["created_at"],
        "updatedAt": s["updated_at"],
    }
