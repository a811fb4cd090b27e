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

from sessionary.billing.money import credits_to_micro, usd_to_micro
from sessionary.settings.pricing import ModelPrice, PricingSettings, UtilityPrice

MILLION = Decimal(1_000_000)


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
