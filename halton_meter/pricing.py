"""Cost of a call from its usage, via the `genai-prices` database bundled with the package (no network).

Conversion to genai-prices' convention: its `input_tokens` is the *whole* prompt (uncached + cache reads +
cache writes) and its `cache_write_tokens` includes the 1-hour part; ours are disjoint buckets, so we add
them back up here. Long-context tiers therefore see the full prompt size, as the providers bill them.

Money is integer nano-dollars. An unknown model is never $0: cost is None and `priced` is false.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache

from halton_meter.types import NANOS_PER_USD, CallRecord


@dataclass(frozen=True, slots=True)
class Price:
    cost_nanos: int | None
    priced: bool
    source: str


@lru_cache(maxsize=1)
def _genai_prices_version() -> str:
    from importlib.metadata import version

    return version("genai-prices")


def usd_to_nanos(amount: Decimal) -> int:
    return int((amount * NANOS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


class Pricer:
    """Prices records. Call from a worker thread: the first lookup loads the price data (~50 ms)."""

    def __init__(self, config: object | None = None) -> None:
        self.config = config

    def price(self, record: CallRecord) -> Price:
        if not record.billable:
            return Price(0, True, "not billable")
        if not record.usage_reported:
            return Price(None, False, "no usage reported")
        model = record.model or record.model_requested
        if not record.price_provider_id or not model:
            return Price(None, False, "no price data for this provider")
        from genai_prices import Usage, calc_price

        usage = Usage(
            input_tokens=record.input_tokens + record.cache_read_tokens + record.cache_write_tokens,
            cache_read_tokens=record.cache_read_tokens,
            cache_write_tokens=record.cache_write_tokens,
            cache_write_1h_tokens=record.cache_write_1h_tokens,
            output_tokens=record.output_tokens,
        )
        when = datetime.datetime.fromisoformat(record.started_at.replace("Z", "+00:00"))
        source = f"genai-prices {_genai_prices_version()}"
        for candidate in dict.fromkeys(m for m in (record.model, record.model_requested) if m):
            try:
                calc = calc_price(
                    usage, candidate, provider_id=record.price_provider_id, genai_request_timestamp=when
                )
            except LookupError:
                continue
            return Price(usd_to_nanos(calc.total_price), True, source)
        return Price(None, False, f"unknown model {model!r} in {source}")
