from __future__ import annotations

from decimal import Decimal

import pytest

from sessionary.billing.money import credits_number, credits_to_micro, format_credits, usd_to_micro
from sessionary.billing.pricing import ModelPrice, Pricing, PricingSettings


def test_credit_conversions_are_exact() -> None:
    assert credits_to_micro("20") == 20_000_000
    assert credits_to_micro(Decimal("0.000001")) == 1
    with pytest.raises(ValueError):
        credits_to_micro("0.0000001")
    assert format_credits(12_500_000) == "12.5"
    assert format_credits(25) == "0.000025"
    assert format_credits(20_000_000) == "20"
    assert format_credits(0) == "0"
    assert credits_number(1_234_567) == 1.234567


def test_usd_rounds_up_to_the_micro_credit() -> None:
    assert usd_to_micro(Decimal(1)) == 100_000_000  # 1 USD = 100 credits
    assert usd_to_micro(Decimal("0.0000000001")) == 1


def test_assistant_turn_price_follows_the_formula() -> None:
    pricing = Pricing()
    # gpt-4o: $2.50 / $10 per million; 1000 in + 500 out = $0.0075, x100 credits x2.5 = 1.875
    assert pricing.assistant_turn("gpt-4o", 1000, 500) == credits_to_micro("1.875")
    # The bundled model is not free: $0.10 / $0.40 per million.
    assert pricing.assistant_turn("smollm2-135m-instruct", 1_000_000, 0) == credits_to_micro("25")
    # Unknown models take the fallback price rather than being free.
    assert pricing.assistant_turn("some-new-model", 1_000_000, 0) == credits_to_micro("25")


def test_enhance_and_embedding_prices() -> None:
    pricing = Pricing()
    assert pricing.enhance() == credits_to_micro(20)
    assert pricing.embedding(1_000_000) == credits_to_micro(100)  # $1 per million
    assert pricing.embedding(1_000_000, plain_text=True) == credits_to_micro(250)


def test_pricing_is_configurable() -> None:
    settings = PricingSettings(
        models={
            "house": ModelPrice(input_usd_per_million=Decimal(1), output_usd_per_million=Decimal(2))
        },
        assistant_multiplier=Decimal(1),
        enhance_credits=Decimal(5),
    )
    pricing = Pricing(settings)
    assert pricing.assistant_turn("house", 1_000_000, 1_000_000) == credits_to_micro(300)
    assert pricing.enhance() == credits_to_micro(5)


def test_pricing_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from sessionary.config import Settings

    monkeypatch.setenv("SESSIONARY_PRICING__ENHANCE_CREDITS", "7")
    monkeypatch.setenv(
        "SESSIONARY_PRICING__MODELS",
        '{"m": {"input_usd_per_million": "3", "output_usd_per_million": "4"}}',
    )
    pricing = Pricing(Settings().pricing)
    assert pricing.enhance() == credits_to_micro(7)
    assert pricing.model_price("m").output_usd_per_million == Decimal(4)
