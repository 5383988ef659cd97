"""genai-prices' prices compiled once into linear coefficients, so pricing a call is a handful of exact
decimal multiplications instead of genai-prices' general calculation (~0.15–0.3 ms a call).

Within one long-context tier a model's price is linear in the usage the meter prices: with `input` the
whole prompt (genai-prices' convention), `cost = const + a·input + b·cache_read + c·cache_write +
d·cache_write_1h + e·output + f·web_searches` (`b` is the cache-read rate minus the input rate, and so on:
genai-prices splits the prompt into its leaves itself). Tiers switch on the whole prompt (`input >
tier.start`), so a compiled price is one coefficient row per tier region.

The coefficients are not derived from genai-prices' formulas but measured from genai-prices itself: for
each region, its own calculation at a few points (the difference between two points is the rate, exactly,
in `Decimal`). A compiled price is then checked against genai-prices at points it was not measured at; one
that disagrees (a price that is not linear in these fields) is never used, and that model is priced by
genai-prices' own calculation every time. `tests/test_pricetable.py` proves the two equal on every model
genai-prices knows and on random usages.

Compiled prices are kept per resolved price set (a model's prices for a date and service tier), so a
price that changes on a date, or a service-tier variant, is its own entry. Lookups that find no model are
remembered too.
"""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

FIELDS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "output_tokens",
          "web_searches")
_PROBE = 1_000  # extra units per coefficient probe: large enough that every rate shows, small enough for any tier
MAX_ENTRIES = 4_096


@dataclass(frozen=True, slots=True)
class Linear:
    """A model's compiled prices: `starts[i]` opens region i + 1 (the prompt is larger than it)."""

    starts: tuple[int, ...]
    rows: tuple[tuple[Decimal, ...], ...]
    """Per region: (const, then one rate per FIELDS entry), USD per unit."""
    cache_read_priced: bool
    """Whether the model has a cache-read price (else cache reads save nothing)."""

    def region(self, prompt: int) -> tuple[Decimal, ...]:
        row = self.rows[0]
        for i, start in enumerate(self.starts):
            if prompt > start:
                row = self.rows[i + 1]
        return row

    def total(self, usage: tuple[int, ...]) -> Decimal:
        """USD for `usage` (FIELDS order)."""
        row = self.region(usage[0])
        total = row[0]
        for rate, count in zip(row[1:], usage, strict=True):
            if count:
                total += rate * count
        return total

    def cache_read_delta(self, usage: tuple[int, ...]) -> Decimal:
        """USD the cache reads saved against the input price (the rate difference over them)."""
        if not self.cache_read_priced or not usage[1]:
            return Decimal(0)
        return -self.region(usage[0])[2] * usage[1]


def _usage(values: tuple[int, ...]) -> Any:
    from genai_prices import Usage

    return Usage(**{name: value for name, value in zip(FIELDS, values, strict=True) if value})


def _exact(model_price: Any, values: tuple[int, ...]) -> Decimal:
    return Decimal(model_price.calc_price(_usage(values))["total_price"])


def _starts(model_price: Any) -> tuple[int, ...]:
    from genai_prices.types import TieredPrices

    starts: set[int] = set()
    for value in vars(model_price).values():
        if isinstance(value, TieredPrices):
            starts.update(tier.start for tier in value.tiers)
    return tuple(sorted(starts))


def compile_price(model_price: Any) -> Linear | None:
    """The linear form of a resolved genai-prices ModelPrice, or None when the prices are not linear in the
    fields the meter prices (then genai-prices' own calculation is used)."""
    try:
        starts = _starts(model_price)
        rows = []
        for lo in (0, *(start + 1 for start in starts)):
            base = (lo + _PROBE,) + (0,) * (len(FIELDS) - 1)  # a prompt inside the region, rates measured on top
            if starts and lo + 2 * _PROBE > (next((s for s in starts if s >= lo), None) or 1 << 62):
                return None  # a region narrower than the probes: not compiled
            at_base = _exact(model_price, base)
            more_input = _exact(model_price, (lo + 2 * _PROBE,) + (0,) * (len(FIELDS) - 1))
            input_rate = (more_input - at_base) / _PROBE
            rates = [input_rate]
            for i in range(1, len(FIELDS)):
                probe = list(base)
                probe[i] = _PROBE
                if FIELDS[i] == "cache_write_1h_tokens":
                    probe[2] = _PROBE  # the 1-hour writes are part of all writes
                    rates.append((_exact(model_price, tuple(probe)) - _exact(model_price, (
                        base[0], 0, _PROBE, 0, 0, 0))) / _PROBE)
                else:
                    rates.append((_exact(model_price, tuple(probe)) - at_base) / _PROBE)
            const = at_base - input_rate * base[0]
            rows.append((const, *rates))
        compiled = Linear(starts, tuple(rows), getattr(model_price, "cache_read_mtok", None) is not None)
    except Exception:  # noqa: BLE001  # any surprise in genai-prices' calculation: price it the slow way
        return None
    for point in _checks(starts):
        if compiled.total(point) != _exact(model_price, point):
            return None
    return compiled


def _checks(starts: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Usages the compiled form must price exactly as genai-prices does: mixed shapes in every region."""
    points: list[tuple[int, ...]] = [(0, 0, 0, 0, 0, 0), (1, 0, 0, 0, 1, 0), (7_919, 2_311, 977, 101, 3_001, 2)]
    for start in starts:
        points += [(start, start // 3, start // 5, start // 9, 17, 1), (start + 1, 1, 1, 1, 1, 0),
                   (start + 12_345, start // 2, 4_000, 1_000, 9_999, 3)]
    return points


class PriceTable:
    """Compiled prices by (price list, model name, date, context), thread-safe; misses are remembered."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], Any] = {}
        self._compiled: dict[Any, Linear | None] = {}
        self._by_identity: dict[int, tuple[Any, Linear | None]] = {}
        self._lock = threading.Lock()

    def find(self, provider_id: str, model: str) -> Any:
        """(provider, model info) from genai-prices, or LookupError (remembered either way)."""
        key = (provider_id, model)
        found = self._models.get(key)
        if found is None:
            from genai_prices import data_snapshot

            try:
                found = data_snapshot.get_snapshot().find_provider_model(model, None, provider_id, None)
            except LookupError:
                found = False
            with self._lock:
                if len(self._models) >= MAX_ENTRIES:
                    self._models.clear()
                self._models[key] = found
        if found is False:
            raise LookupError(model)
        return found

    def resolve(self, provider_id: str, model: str, when: datetime.datetime,
                context: dict[str, str] | None) -> tuple[Any, Any]:
        """(the model's genai-prices info, its prices for `when` and `context`) exactly as genai-prices'
        `calc_price` chooses them. LookupError for an unknown model."""
        provider, info = self.find(provider_id, model)
        if context and not any(info is candidate for candidate in provider.models):
            return info, info.get_prices(when)  # a fallback provider's model: no variants (as genai-prices)
        return info, info.get_prices(when, context)

    def compiled(self, model_price: Any) -> Linear | None:
        """The compiled form of a resolved price set. genai-prices hands back the same object for a model's
        standard prices (found by identity, the object kept alive with the entry) and a fresh copy for a
        service-tier variant (found by its values)."""
        by_identity = self._by_identity.get(id(model_price))
        if by_identity is not None and by_identity[0] is model_price:
            return by_identity[1]
        key = _price_key(model_price)
        try:
            compiled = self._compiled[key]
        except KeyError:
            compiled = compile_price(model_price)
            with self._lock:
                if len(self._compiled) >= MAX_ENTRIES:
                    self._compiled.clear()
                self._compiled[key] = compiled
        with self._lock:
            if len(self._by_identity) >= MAX_ENTRIES:
                self._by_identity.clear()
            self._by_identity[id(model_price)] = (model_price, compiled)
        return compiled


def _price_key(model_price: Any) -> tuple[Any, ...]:
    from genai_prices.types import TieredPrices

    items = []
    for name, value in sorted(vars(model_price).items()):
        if value is None or name.startswith("_"):
            continue
        if isinstance(value, TieredPrices):
            value = (value.base, tuple((tier.start, tier.price) for tier in value.tiers))
        items.append((name, value))
    return tuple(items)
