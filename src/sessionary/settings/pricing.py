"""`SESSIONARY_PRICING__*`: the price tables billing reads (see billing/pricing.py for the rules).

Pure pydantic, so config.py composes it without importing the billing domain.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field


class ModelPrice(BaseModel):
    input_usd_per_million: Decimal = Field(ge=0)
    output_usd_per_million: Decimal = Field(ge=0)


def _price(inp: str, out: str) -> ModelPrice:
    return ModelPrice(input_usd_per_million=Decimal(inp), output_usd_per_million=Decimal(out))


# USD per million tokens (input, output), as the vendors list them.
DEFAULT_MODEL_PRICES: dict[str, ModelPrice] = {
    "gpt-5": _price("1.25", "10.00"),
    "gpt-5-mini": _price("0.25", "2.00"),
    "gpt-5-nano": _price("0.05", "0.40"),
    "gpt-4.1": _price("2.00", "8.00"),
    "gpt-4.1-mini": _price("0.40", "1.60"),
    "gpt-4.1-nano": _price("0.10", "0.40"),
    "gpt-4o": _price("2.50", "10.00"),
    "gpt-4o-mini": _price("0.15", "0.60"),
    "o3": _price("2.00", "8.00"),
    "o4-mini": _price("1.10", "4.40"),
    # The bundled local model is priced too, so billing is visible out of the box.
    "smollm2-135m-instruct": _price("0.10", "0.40"),
}


class UtilityPrice(BaseModel):
    unit: str = Field(description="What one unit is: 'characters', 'minutes' or 'crawl_credits'.")
    units_per_price: Decimal = Field(default=Decimal(1), gt=0)
    usd: Decimal = Field(ge=0, description="USD per `units_per_price` units.")


# What third-party usage costs, per unit, as the vendors list it.
DEFAULT_UTILITY_PRICES: dict[str, UtilityPrice] = {
    "tts": UtilityPrice(unit="characters", units_per_price=Decimal(1000), usd=Decimal("0.30")),
    "stt": UtilityPrice(unit="minutes", usd=Decimal("0.0067")),
    "crawl": UtilityPrice(unit="crawl_credits", usd=Decimal("0.001")),
}


class PricingSettings(BaseModel):
    """`SESSIONARY_PRICING__...`; `models` takes JSON: {"name": {"input_usd_per_million": ..}}."""

    models: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_MODEL_PRICES))
    fallback: ModelPrice = Field(
        default_factory=lambda: _price("0.10", "0.40"),
        description="Price of a model missing from `models`.",
    )
    assistant_multiplier: Decimal = Field(default=Decimal("2.5"), ge=0)
    enhance_credits: Decimal = Field(default=Decimal(20), ge=0)
    embedding_usd_per_million: Decimal = Field(default=Decimal(1), ge=0)
    plain_text_embedding_multiplier: Decimal = Field(default=Decimal("2.5"), ge=0)
    image_usd: dict[str, Decimal] = Field(
        default_factory=lambda: {
            "low": Decimal("0.011"),
            "medium": Decimal("0.042"),
            "high": Decimal("0.167"),
            "auto": Decimal("0.042"),
        },
        description="USD per generated image by quality (an assistant turn: x the multiplier).",
    )
    utilities: dict[str, UtilityPrice] = Field(
        default_factory=lambda: dict(DEFAULT_UTILITY_PRICES),
        description="Prices of usage charged through /external_users/utils/usage_charge.",
    )
    max_utility_charge_credits: Decimal = Field(
        default=Decimal(100_000), gt=0, description="The most one usage charge may cost."
    )
