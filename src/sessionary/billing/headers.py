"""`x-credits-charged` / `x-credits-remaining`, as samsar-js reads them."""

from __future__ import annotations

from sessionary.billing.ledger import Settlement
from sessionary.billing.money import format_credits

CHARGED = "x-credits-charged"
REMAINING = "x-credits-remaining"
RESERVED = "x-credits-reserved"  # on streams, whose charge is known only at the end


def credit_headers(settlement: Settlement) -> dict[str, str]:
    return {
        CHARGED: format_credits(settlement.charged_micro),
        REMAINING: format_credits(settlement.remaining_micro),
    }
