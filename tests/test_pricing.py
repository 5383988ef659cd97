"""Pricing: our disjoint buckets converted correctly for genai-prices; unknown models never cost $0.

Expected amounts are computed here by hand from the providers' published list prices (USD per million
tokens), so a wrong conversion (for example passing uncached input as genai-prices' total input) fails.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halton_meter.pricing import Pricer, usd_to_nanos
from halton_meter.types import CallRecord


def rec(**fields) -> CallRecord:
    base = dict(id=str(uuid.uuid4()), started_at="2026-11-22T10:00:00.000000Z", provider="anthropic",
                endpoint_kind="messages", host="h", method="POST", path="/", billable=True, usage_reported=True,
                price_provider_id="anthropic", model="claude-sonnet-4-5-20250929")
    base.update(fields)
    return CallRecord(**base)


def per_million(**amounts: tuple[int, str]) -> int:
    total = sum(Decimal(tokens) * Decimal(price) for tokens, price in amounts.values())
    return usd_to_nanos(total / Decimal(1_000_000))


def test_anthropic_all_four_buckets_and_the_1h_write() -> None:
    # Sonnet 4.5: input $3, output $15, cache read $0.30, 5-minute write $3.75, 1-hour write $6.
    price = Pricer().price(rec(input_tokens=1000, cache_read_tokens=2000, cache_write_tokens=3000,
                               cache_write_1h_tokens=1000, output_tokens=500))
    expected = per_million(i=(1000, "3"), r=(2000, "0.30"), w5=(2000, "3.75"), w1=(1000, "6"), o=(500, "15"))
    assert price.priced and price.cost_nanos == expected == 24_600_000
    assert price.source.startswith("genai-prices ")
    # Cache savings: 2,000 cache-read tokens at $0.30 instead of the $3 base input price.
    assert price.cache_savings_nanos == per_million(r=(2000, "2.70")) == 5_400_000


def test_openai_cached_input() -> None:
    # gpt-4o: input $2.50, cached input $1.25, output $10.
    price = Pricer().price(rec(provider="openai", price_provider_id="openai", model="gpt-4o-2024-08-06",
                               input_tokens=800, cache_read_tokens=200, output_tokens=100))
    assert price.cost_nanos == per_million(i=(800, "2.5"), r=(200, "1.25"), o=(100, "10"))


def test_falls_back_to_the_requested_model() -> None:
    price = Pricer().price(rec(model="zz-gateway-alias", model_requested="claude-sonnet-4-5", input_tokens=100_000))
    assert price.priced and price.cost_nanos == 300_000_000


def test_long_context_tier_sees_the_whole_prompt_including_cache() -> None:
    # Sonnet 4.5 bills every input token at $6 (not $3) once the prompt exceeds 200k tokens; cached tokens
    # count toward the threshold, so 150k uncached + 100k cache read is a long-context call.
    short = Pricer().price(rec(input_tokens=200_000))
    assert short.cost_nanos == per_million(i=(200_000, "3"))
    long = Pricer().price(rec(input_tokens=150_000, cache_read_tokens=100_000))
    assert long.cost_nanos == per_million(i=(150_000, "6"), r=(100_000, "0.60"))
    # Savings are against the tier the call was actually billed at ($6, not $3).
    assert long.cache_savings_nanos == per_million(r=(100_000, "5.40"))
    assert short.cache_savings_nanos == 0


def test_unknown_model_is_unpriced_not_zero() -> None:
    price = Pricer().price(rec(model="totally-new-model", model_requested=None, input_tokens=10))
    assert (price.cost_nanos, price.priced) == (None, False)
    assert "totally-new-model" in price.source


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"billable": False, "usage_reported": False}, (0, True, "not billable")),
        ({"usage_reported": False}, (None, False, "no usage reported")),
        ({"price_provider_id": None}, (None, False, "no price data for this provider")),
    ],
)
def test_non_billable_and_missing_usage(fields, expected) -> None:
    price = Pricer().price(rec(**fields))
    assert (price.cost_nanos, price.priced, price.source) == expected


def test_rounding_is_to_the_nearest_nano() -> None:
    assert usd_to_nanos(Decimal("0.0000000015")) == 2
    assert usd_to_nanos(Decimal("0.0000000025")) == 2  # half to even
    assert usd_to_nanos(Decimal("1")) == 1_000_000_000


# ---- service tiers, extras, normalisation, overrides -------------------------------------------------


def test_service_tier_selects_the_price_variant() -> None:
    # gpt-4o priority tier (from 2026-10-12): $4.25 in, $2.125 cached, $17 out; batch: $1.25 / $5.
    base = dict(provider="openai", price_provider_id="openai", model="gpt-4o-2024-08-06",
                input_tokens=1000, cache_read_tokens=1000, output_tokens=1000)
    assert Pricer().price(rec(**base, extra={"service_tier": "priority"})).cost_nanos == per_million(
        i=(1000, "4.25"), r=(1000, "2.125"), o=(1000, "17"))
    assert Pricer().price(rec(**base, extra={"service_tier": "default"})).cost_nanos == per_million(
        i=(1000, "2.5"), r=(1000, "1.25"), o=(1000, "10"))
    batch = Pricer().price(rec(**{**base, "cache_read_tokens": 0}, extra={"service_tier": "batch"}))
    assert batch.cost_nanos == per_million(i=(1000, "1.25"), o=(1000, "5"))


def test_web_searches_are_charged_per_request() -> None:
    # Anthropic web search: $10 per 1,000 searches, on top of tokens.
    price = Pricer().price(rec(input_tokens=1000, output_tokens=100, extra={"web_search_requests": 3}))
    assert price.cost_nanos == per_million(i=(1000, "3"), o=(100, "15")) + 3 * 10_000_000


@pytest.mark.parametrize(
    ("provider_id", "model", "per_m_in"),
    [("google", "models/gemini-2.5-flash", "0.30"), ("anthropic", "anthropic/claude-sonnet-4-5", "3")],
)
def test_model_ids_are_normalised(provider_id, model, per_m_in) -> None:
    price = Pricer().price(rec(price_provider_id=provider_id, model=model, model_requested=None, input_tokens=1000))
    assert price.priced and price.cost_nanos == per_million(i=(1000, per_m_in))


def test_estimated_usage_is_priced_and_stays_marked() -> None:
    record = rec(usage_reported=False, estimated=True, input_tokens=1000, output_tokens=10)
    assert Pricer().price(record).cost_nanos == per_million(i=(1000, "3"), o=(10, "15"))


class _Config:
    def __init__(self, text: str, tmp_path) -> None:
        from halton_meter.config import load_config
        from halton_meter.paths import Paths

        home = tmp_path / "cfg"
        home.mkdir()
        (home / "config.toml").write_text(text)
        self.loaded = load_config(Paths(home))


def test_config_overrides_use_the_same_bucket_maths(tmp_path) -> None:
    config = _Config('''
[prices.anthropic."claude-sonnet-4-5"]
input = 2
output = 10
cache_read = 0.2
cache_write = 2.5
cache_write_1h = 4
[prices.corp-gateway."*"]
input = 0.5
output = "1.5"
''', tmp_path).loaded
    pricer = Pricer(config)
    price = pricer.price(rec(model="claude-sonnet-4-5-20250929", model_requested="claude-sonnet-4-5",
                             input_tokens=1000, cache_read_tokens=2000, cache_write_tokens=3000,
                             cache_write_1h_tokens=1000, output_tokens=500))
    assert price.source == 'config prices.anthropic."claude-sonnet-4-5"'
    assert price.cost_nanos == per_million(i=(1000, "2"), r=(2000, "0.2"), w5=(2000, "2.5"), w1=(1000, "4"),
                                           o=(500, "10"))
    assert price.cache_savings_nanos == per_million(r=(2000, "1.8"))
    # Wildcard model, and missing cache prices fall back to the input price.
    gateway = pricer.price(rec(provider="corp-gateway", price_provider_id=None, model="llama-3.3-70b",
                               input_tokens=1000, cache_read_tokens=1000, output_tokens=1000))
    assert gateway.cost_nanos == per_million(i=(2000, "0.5"), o=(1000, "1.5"))
    assert gateway.source == 'config prices.corp-gateway."*"'
    assert gateway.cache_savings_nanos == 0  # no cache price: reads cost the input price, nothing saved


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[prices.anthropic."m"]\ninput = 1\n', 'config.toml: prices.anthropic."m" needs output (USD per million tokens)'),
        ('[prices.anthropic."m"]\ninput = 1\noutput = -2\n',
         'config.toml: prices.anthropic."m".output must be a non-negative price in USD per million tokens'),
        ('[prices.anthropic."m"]\ninput = 1\noutput = 2\ncache = 1\n',
         'config.toml: unknown key prices.anthropic."m".cache (known: input, output, cache_read, cache_write, '
         'cache_write_1h; USD per million tokens)'),
        ('[prices.anthropic]\ninput = 1\n',
         'config.toml: [prices.anthropic] must hold one table per model, like [prices.anthropic."claude-sonnet-4-5"] '
         'with input = 3.0 and output = 15.0'),
    ],
)
def test_bad_price_overrides_are_config_errors(tmp_path, text, message) -> None:
    from halton_meter.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        _Config(text, tmp_path)
    assert str(info.value) == message


def test_price_sheet_for_the_prices_command() -> None:
    sheet = Pricer().sheet("anthropic", "anthropic", "claude-sonnet-4-5-20250929")
    assert sheet is not None and sheet.model == "claude-sonnet-4-5"
    assert sheet.input.base == Decimal("3") and sheet.cache_write_1h.base == Decimal("6")
    assert Pricer().sheet("anthropic", "anthropic", "no-such-model") is None


def test_gateway_model_missing_from_its_list_falls_back_to_the_vendor_list_price() -> None:
    # OpenRouter's list in genai-prices lacks x-ai/grok-4; xAI's own list has it at $3 in, $15 out.
    price = Pricer().price(rec(provider="openrouter", price_provider_id="openrouter", model="x-ai/grok-4",
                               model_requested="x-ai/grok-4", input_tokens=1000, output_tokens=100))
    assert price.priced and price.cost_nanos == per_million(i=(1000, "3"), o=(100, "15"))
    assert price.source.endswith("(x-ai list price)")


def test_cloud_models_vendor_list_fallback_and_regional_premiums() -> None:
    # A model id the call's price list lacks (DeepSeek's has no Claude), with the parser's hint: Anthropic's
    # list price for Sonnet 4.5 ($3 in, $15 out, $0.30 cache read).
    cloud = dict(provider="some-cloud", price_provider_id="deepseek", model="zz-unknown-deployment",
                 input_tokens=1000, output_tokens=100, cache_read_tokens=2000)
    price = Pricer().price(rec(**cloud, extra={"price_as": "anthropic/claude-sonnet-4-5-20250929"}))
    base = per_million(i=(1000, "3"), r=(2000, "0.30"), o=(100, "15"))
    assert price.priced and price.cost_nanos == base and price.source.endswith("(anthropic list price)")
    assert price.cache_savings_nanos == per_million(r=(2000, "2.70"))
    premium = Pricer().price(rec(**cloud, extra={"price_as": "anthropic/claude-sonnet-4-5-20250929",
                                                 "regional_premium_pct": 10}))
    assert premium.cost_nanos == per_million(i=(1100, "3"), r=(2200, "0.30"), o=(110, "15"))
    assert premium.source.endswith("(anthropic list price) +10% regional endpoint")
    assert premium.cache_savings_nanos == per_million(r=(2200, "2.70"))
    assert not Pricer().price(rec(**cloud)).priced  # without the hint: unknown, never a guess
    for bad in ("claude-sonnet-4-5", 10, None):  # a hint must name the vendor
        assert not Pricer().price(rec(**cloud, extra={"price_as": bad})).priced
    # Bedrock's own list prices its regional endpoints (so its plugin never states a premium): in-region
    # Sonnet 4.5 is $3.30 in, $16.50 out in genai-prices' `aws` list, 10% over the global profile's $3 / $15.
    bedrock = dict(provider="bedrock", price_provider_id="aws", input_tokens=1000, output_tokens=100)
    regional = Pricer().price(rec(**bedrock, model="us.anthropic.claude-sonnet-4-5-20250929-v1:0"))
    assert regional.cost_nanos == per_million(i=(1000, "3.3"), o=(100, "16.5"))
    assert "regional" not in regional.source
    world = Pricer().price(rec(**bedrock, model="global.anthropic.claude-sonnet-4-5-20250929-v1:0"))
    assert world.cost_nanos == per_million(i=(1000, "3"), o=(100, "15"))


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from([
        ("anthropic", "claude-sonnet-4-5-20250929"), ("anthropic", "claude-opus-4-1"), ("anthropic", "claude-3-5-haiku"),
        ("openai", "gpt-4o"), ("openai", "gpt-5"), ("openai", "o3"), ("google", "gemini-2.5-pro"),
        ("google", "gemini-2.5-flash"), ("deepseek", "deepseek-chat"), ("x-ai", "grok-4"),
    ]),
    uncached=st.integers(0, 400_000), cache_read=st.integers(1, 400_000), cache_write=st.integers(0, 50_000),
    output=st.integers(0, 50_000), tier=st.sampled_from([None, "flex", "priority"]),
)
def test_cache_savings_equal_pricing_the_call_again_without_cache_hits(model, uncached, cache_read, cache_write,
                                                                        output, tier) -> None:
    """The one-calculation savings must equal the definition: the same call with its cache reads priced as
    plain input (same prompt size, so the same tier), minus its cost."""
    import datetime

    from genai_prices import Usage, calc_price

    provider_id, name = model
    when = datetime.datetime(2026, 11, 1, 12, tzinfo=datetime.UTC)
    fields = {"input_tokens": uncached + cache_read + cache_write, "cache_read_tokens": cache_read,
              "cache_write_tokens": cache_write, "output_tokens": output}
    context = {"service_tier": tier} if tier else None
    try:
        calc = calc_price(Usage(**fields), name, provider_id=provider_id, genai_request_timestamp=when,
                          price_context=context)
    except LookupError:
        return
    cost = usd_to_nanos(calc.total_price)
    again = calc_price(Usage(**{**fields, "cache_read_tokens": 0}), name, provider_id=provider_id,
                       genai_request_timestamp=when, price_context=context)
    price = Pricer().price(rec(provider=provider_id, price_provider_id=provider_id, model=name,
                               started_at="2026-11-01T12:00:00.000000Z", input_tokens=uncached,
                               cache_read_tokens=cache_read, cache_write_tokens=cache_write, output_tokens=output,
                               extra={"service_tier": tier} if tier else {}))
    assert price.cost_nanos == cost
    assert price.cache_savings_nanos == usd_to_nanos(again.total_price) - cost
