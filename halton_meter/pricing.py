"""Cost of a call from its usage: local overrides first, else the `genai-prices` database bundled with the
package (no network, ever: we never call its updater).

Conversion to genai-prices' convention: its `input_tokens` is the *whole* prompt (uncached + cache reads +
cache writes) and its `cache_write_tokens` includes the 1-hour part; ours are disjoint buckets, so they are
added back up here. Long-context tiers therefore see the full prompt size, as providers bill them. The
response's service tier (`flex`, `priority`, batch processing) selects genai-prices' price variants, and
per-request extras (web searches) are priced too.

Money is integer nano-dollars. An unknown model is never $0: cost is None and `priced` is false.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import Any

from halton_meter.pricetable import FIELDS, PriceTable
from halton_meter.types import NANOS_PER_USD, CallRecord

_TIER_CONTEXT = {"flex", "priority", "default", "fast"}
TABLE = PriceTable()
"""Compiled prices, shared by every Pricer in the process (they depend on genai-prices' data only)."""
MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    cost_nanos: int | None
    priced: bool
    source: str
    cache_savings_nanos: int | None = None
    """What the cache reads saved: the same call with them priced as plain input, minus its cost."""


@dataclass(frozen=True, slots=True)
class PriceSheet:
    """What the meter charges for one model, per million tokens (for `halton-meter prices`)."""

    provider: str
    model: str
    source: str
    input: Any
    output: Any
    cache_read: Any = None
    cache_write: Any = None
    cache_write_1h: Any = None
    web_searches_per_thousand: Any = None
    variants: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    """Other providers priced from the same list (Codex bills at OpenAI's prices)."""


@lru_cache(maxsize=1)
def genai_prices_version() -> str:
    from importlib.metadata import version

    return f"genai-prices {version('genai-prices')}"


def usd_to_nanos(amount: Decimal) -> int:
    return int((amount * NANOS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


_DATE_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")


def model_candidates(*models: str | None) -> Iterator[str]:
    """Names to try for a price, most specific first: as sent, without a `models/` prefix, without a
    `vendor/` prefix (OpenRouter-style ids, gateways), and without a snapshot date (`-20250929`,
    `-2024-08-06`), so an override written for an alias also covers its dated snapshots."""
    seen: set[str] = set()
    for model in models:
        if not model:
            continue
        bare = model.removeprefix("models/").rsplit("/", 1)[-1]
        for candidate in (model, model.removeprefix("models/"), bare, _DATE_SUFFIX.sub("", bare)):
            if candidate and candidate not in seen:
                seen.add(candidate)
                yield candidate


_VENDOR_PRICE_IDS = {"mistralai": "mistral", "x-ai": "x-ai", "xai": "x-ai", "google": "google", "openai": "openai",
                     "anthropic": "anthropic", "deepseek": "deepseek", "groq": "groq"}


@lru_cache(maxsize=4096)
def _lookups(price_provider_id: str, *models: str | None) -> tuple[tuple[str, str, str], ...]:
    return tuple(_each_lookup(price_provider_id, *models))


def _each_lookup(price_provider_id: str, *models: str | None) -> Iterator[tuple[str, str, str]]:
    """(price list, model, note) to try in order: the call's own price list first; then, for a gateway's
    `vendor/model` id the gateway's list lacks, the vendor's own list price (noted in the price source)."""
    for candidate in model_candidates(*models):
        yield price_provider_id, candidate, ""
    for model in models:
        if model and "/" in model:
            vendor, _, bare = model.removeprefix("models/").partition("/")
            vendor_id = _VENDOR_PRICE_IDS.get(vendor.lower())
            if vendor_id and vendor_id != price_provider_id:
                for candidate in model_candidates(bare):
                    yield vendor_id, candidate, f" ({vendor_id} list price)"


def price_context(extra: Mapping[str, Any]) -> dict[str, str] | None:
    tier = extra.get("service_tier")
    if tier == "batch":
        return {"processing": "batch"}
    if isinstance(tier, str) and tier in _TIER_CONTEXT:
        return {"service_tier": tier}
    return None


class Pricer:
    """Prices records. Call from a worker thread: the first lookup loads the price data (~50 ms)."""

    def __init__(self, config: Any | None = None) -> None:
        self.overrides: Mapping[tuple[str, str], Any] = getattr(config, "prices", None) or {}

    def override_for(self, provider: str, *models: str | None) -> Any | None:
        if not self.overrides:
            return None
        for model in [*model_candidates(*models), "*"]:
            found = self.overrides.get((provider.lower(), model.lower()))
            if found is not None:
                return found
        return None

    def price(self, record: CallRecord) -> Price:
        if not record.billable:
            return Price(0, True, "not billable", 0)
        if not record.usage_reported and not record.estimated:
            return Price(None, False, "no usage reported")
        price_as = record.extra.get("price_as")
        price_as = price_as if isinstance(price_as, str) and "/" in price_as else None
        override = self.override_for(record.provider, record.model, record.model_requested, price_as)
        if override is not None:
            cost = usd_to_nanos(_override_cost(record, override))
            uncached = usd_to_nanos(_override_cost(record, override, cache_as_input=True))
            return Price(cost, True, f"config {override.where}", uncached - cost)
        if not record.price_provider_id or not (record.model or record.model_requested):
            return Price(None, False, "no price data for this provider")
        searches = record.extra.get("web_search_requests")
        prompt = record.input_tokens + record.cache_read_tokens + record.cache_write_tokens
        usage = (prompt, record.cache_read_tokens, record.cache_write_tokens, record.cache_write_1h_tokens,
                 record.output_tokens, searches if isinstance(searches, int) and searches > 0 else 0)
        when = datetime.datetime.fromisoformat(record.started_at.replace("Z", "+00:00"))
        context = price_context(record.extra)
        premium = record.extra.get("regional_premium_pct")
        premium = premium if isinstance(premium, int) and not isinstance(premium, bool) and 0 < premium <= 100 else 0
        for provider_id, candidate, note in _lookups(record.price_provider_id, record.model, record.model_requested,
                                                     price_as):
            try:
                _, model_price = TABLE.resolve(provider_id, candidate, when, context)
            except LookupError:
                continue
            compiled = TABLE.compiled(model_price)
            if compiled is not None:  # the common case: a few multiplications (halton_meter.pricetable)
                exact, delta = compiled.total(usage), compiled.cache_read_delta(usage)
            else:  # a price that is not linear in our fields: genai-prices' own calculation
                exact, delta = _calculate(model_price, usage)
            total = exact
            if premium:  # a regional endpoint the cloud documents at a fixed premium over the global price
                # its list (or the vendor's) gives; a plugin sets it only where the list has no regional price
                total = total * (100 + premium) / 100
                note += f" +{premium}% regional endpoint"
            cost = usd_to_nanos(total)
            savings = 0
            if record.cache_read_tokens:  # the call priced with its cache reads as plain input, minus its cost
                savings = (usd_to_nanos(exact + delta) - usd_to_nanos(exact)) * (100 + premium) // 100
            return Price(cost, True, genai_prices_version() + note, savings)
        model = record.model or record.model_requested
        return Price(None, False, f"unknown model {model!r} in {genai_prices_version()}")

    def sheet(self, provider: str, price_provider_id: str | None, model: str,
              when: datetime.datetime | None = None, context: dict[str, str] | None = None) -> PriceSheet | None:
        """Per-million prices the meter would use for `model`, or None when it has none."""
        override = self.override_for(provider, model)
        if override is not None:
            cache_write = override.cache_write if override.cache_write is not None else override.input
            return PriceSheet(
                provider, model, f"config {override.where}", override.input, override.output,
                override.cache_read if override.cache_read is not None else override.input, cache_write,
                override.cache_write_1h if override.cache_write_1h is not None else cache_write,
            )
        if not price_provider_id:
            return None
        from genai_prices import data_snapshot

        when = when or datetime.datetime.now(datetime.UTC)
        for candidate in model_candidates(model):
            try:
                _, info = data_snapshot.get_snapshot().find_provider_model(candidate, None, price_provider_id, None)
            except LookupError:
                continue
            prices = info.get_prices(when, context)
            values = prices.__dict__
            variants = tuple(
                ", ".join(f"{k}={v}" for k, v in variant.when.items()) for variant in info.price_variants or ()
            )
            return PriceSheet(
                provider, info.id, genai_prices_version(), values.get("input_mtok"), values.get("output_mtok"),
                values.get("cache_read_mtok"), values.get("cache_write_mtok"), values.get("cache_write_1h_mtok"),
                values.get("web_searches_kcount"), variants,
            )
        return None


def similar_models(model: str, limit: int = 3) -> list[str]:
    """Model ids in the bundled price data that look like `model` (a typo, a missing date suffix)."""
    import difflib

    from genai_prices import data_snapshot

    known = sorted({m.id for p in data_snapshot.get_snapshot().providers for m in p.models})
    return difflib.get_close_matches(model.lower(), known, n=limit, cutoff=0.75)


def _calculate(model_price: Any, usage: tuple[int, ...]) -> tuple[Decimal, Decimal]:
    """genai-prices' own calculation (for a price the table could not compile): the total in USD, and what
    the cache reads saved against the input price at the tier the call was billed at (the difference of
    the two rates over the cache-read tokens; no cache-read price means reads cost the input price)."""
    from genai_prices import Usage
    from genai_prices.types import calc_unit_price

    fields = dict(zip(FIELDS, usage, strict=True))
    total = Decimal(model_price.calc_price(Usage(**{k: v for k, v in fields.items() if v}))["total_price"])
    cache_read, prompt = fields["cache_read_tokens"], fields["input_tokens"]
    if not cache_read or getattr(model_price, "cache_read_mtok", None) is None:
        return total, Decimal(0)
    delta = (calc_unit_price(model_price.input_mtok, cache_read, prompt, 1_000_000)
             - calc_unit_price(model_price.cache_read_mtok, cache_read, prompt, 1_000_000))
    return total, delta


def _override_cost(record: CallRecord, override: Any, cache_as_input: bool = False) -> Decimal:
    cache_read = override.cache_read if override.cache_read is not None else override.input
    if cache_as_input:
        cache_read = override.input
    cache_write = override.cache_write if override.cache_write is not None else override.input
    cache_write_1h = override.cache_write_1h if override.cache_write_1h is not None else cache_write
    five_minute = record.cache_write_tokens - record.cache_write_1h_tokens
    total = (
        record.input_tokens * override.input
        + record.cache_read_tokens * cache_read
        + five_minute * cache_write
        + record.cache_write_1h_tokens * cache_write_1h
        + record.output_tokens * override.output
    )
    return total / MILLION
