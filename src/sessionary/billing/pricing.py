"""The one module that decides prices. Routes never compute money; they ask this module.

Assistant turns: (input_tokens x input price + output_tokens x output price) per model, in USD,
x 100 credits/USD x 2.5; a generated image adds its per-image price (by quality) x 2.5.
`/chat/enhance`: 20 credits. Embedding routes: $1 per million input tokens (x 2.5 on the
plain-text route). Usage incurred elsewhere and charged to an external user (TTS, STT, crawls):
units x the utility table's USD price (or an explicit USD cost) x the caller's multiplier.
Reads and deletes are free.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field

from sessionary.billing.money import credits_to_micro, usd_to_micro

MILLION = Decimal(1_000_000)


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


class Pricing:
    def __init__(self, settings: PricingSettings | None = None) -> None:
        self.settings = settings or PricingSettings()

    def model_price(self, model: str) -> ModelPrice:
        models = self.settings.models
        return models.get(model) or models.get(model.lower()) or self.settings.fallback

    def assistant_turn(self, model: str, input_tokens: int, output_tokens: int) -> int:
        """Micro-credits for one assistant turn."""
        price = self.model_price(model)
        usd = (
            Decimal(input_tokens) * price.input_usd_per_million
            + Decimal(output_tokens) * price.output_usd_per_million
        ) / MILLION
        return usd_to_micro(usd * self.settings.assistant_multiplier)

    def image(self, quality: str) -> int:
        """Micro-credits for one generated image; unknown qualities cost as `auto`."""
        table = self.settings.image_usd
        usd = table.get(quality, table.get("auto", Decimal(0)))
        return usd_to_micro(usd * self.settings.assistant_multiplier)

    def enhance(self) -> int:
        return credits_to_micro(self.settings.enhance_credits)

    def embedding(self, input_tokens: int, *, plain_text: bool = False) -> int:
        usd = Decimal(input_tokens) * self.settings.embedding_usd_per_million / MILLION
        if plain_text:
            usd *= self.settings.plain_text_embedding_multiplier
        return usd_to_micro(usd)

    def utility(self, utility_type: str) -> UtilityPrice | None:
        return self.settings.utilities.get(utility_type)

    def utility_usd(self, price: UtilityPrice, units: Decimal) -> Decimal:
        return units * price.usd / price.units_per_price
