"""Integer micro-credits inside, decimals on the wire. 100 credits = 1 USD."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

MICRO_PER_CREDIT = 1_000_000
CREDITS_PER_USD = 100


# The most credits one amount may name: its micro-credits stay far inside a 64-bit integer, so
# a balance can hold many such amounts before any column could overflow.
MAX_CREDITS = Decimal(10) ** 12


def credits_to_micro(credits: Decimal | int | str) -> int:
    """Exact conversion of a credit amount (at most 6 decimals) to micro-credits."""
    amount = Decimal(str(credits))
    if not amount.is_finite() or abs(amount) > MAX_CREDITS:
        raise ValueError(f"credit amounts are finite numbers of at most {MAX_CREDITS:,} credits")
    value = amount * MICRO_PER_CREDIT
    if value != value.to_integral_value():
        raise ValueError("credit amounts have at most 6 decimal places")
    return int(value)


def usd_to_micro(usd: Decimal) -> int:
    """Dollars to micro-credits, rounded up: a fraction of a micro-credit is still charged."""
    return int((usd * CREDITS_PER_USD * MICRO_PER_CREDIT).to_integral_value(ROUND_CEILING))


def micro_to_decimal(micro: int) -> Decimal:
    return (Decimal(micro) / MICRO_PER_CREDIT).normalize()


def format_credits(micro: int) -> str:
    """`12.5`, `0.000025`, `20`: exact, no exponent, no trailing zeros."""
    return f"{micro_to_decimal(micro):f}"


def credits_number(micro: int) -> float:
    """For JSON bodies (numbers); exact for any realistic balance at 6 decimals."""
    return float(micro_to_decimal(micro))
