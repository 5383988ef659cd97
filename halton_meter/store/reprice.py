"""Recompute stored costs with today's prices (after a price override or a genai-prices upgrade)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from halton_meter.pricing import Pricer
from halton_meter.store.queries import _RECORD_COLUMNS, _record
from halton_meter.store.schema import calls
from halton_meter.types import SELF_TEST_KIND, nanos_to_usd


@dataclass
class ModelChange:
    calls: int = 0
    before_nanos: int = 0
    after_nanos: int = 0
    before_unpriced: int = 0
    after_unpriced: int = 0


@dataclass
class RepriceResult:
    examined: int = 0
    changed: int = 0
    newly_priced: int = 0
    newly_unpriced: int = 0
    before_nanos: int = 0
    after_nanos: int = 0
    written: bool = False
    by_model: dict[str, ModelChange] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "changed": self.changed,
            "newly_priced": self.newly_priced,
            "newly_unpriced": self.newly_unpriced,
            "before_usd": nanos_to_usd(self.before_nanos),
            "after_usd": nanos_to_usd(self.after_nanos),
            "written": self.written,
            "by_model": [
                {"model": model, "calls": c.calls,
                 # null when none of the calls had (has) a price: unpriced is not $0
                 "before_usd": None if c.before_unpriced == c.calls else nanos_to_usd(c.before_nanos),
                 "after_usd": None if c.after_unpriced == c.calls else nanos_to_usd(c.after_nanos),
                 "before_unpriced": c.before_unpriced, "after_unpriced": c.after_unpriced}
                for model, c in sorted(self.by_model.items(), key=lambda kv: -abs(kv[1].after_nanos - kv[1].before_nanos))
            ],
        }


def reprice(
    read: Engine, write: Engine | None, pricer: Pricer, since: str, until: str, price_ids: Mapping[str, str | None]
) -> RepriceResult:
    """Price every call in [since, until) again; with `write`, store what changed in one transaction.

    `price_ids` maps a provider name to its price-list id, for rows written before that was stored.
    """
    result = RepriceResult()
    updates: list[dict[str, Any]] = []
    # The meter's own self-test rows are not calls anyone pays for: never examined, never counted.
    window = sa.and_(calls.c.started_at >= since, calls.c.started_at < until, calls.c.endpoint_kind != SELF_TEST_KIND)
    with read.connect() as conn:
        rows = conn.execute(sa.select(*_RECORD_COLUMNS).where(window)).all()
    for row in rows:
        record = _record(row)
        result.examined += 1
        if record.price_provider_id is None:
            record.price_provider_id = price_ids.get(record.provider)
        before = (record.cost_nanos, record.priced, record.price_source, record.cache_savings_nanos)
        price = pricer.price(record)
        after = (price.cost_nanos, price.priced, price.source, price.cache_savings_nanos)
        result.before_nanos += record.cost_nanos or 0
        result.after_nanos += price.cost_nanos or 0
        if after == before:
            continue
        result.changed += 1
        result.newly_priced += int(price.priced and not record.priced)
        result.newly_unpriced += int(record.priced and not price.priced)
        change = result.by_model.setdefault(record.model or record.model_requested or "(unknown)", ModelChange())
        change.calls += 1
        change.before_nanos += record.cost_nanos or 0
        change.after_nanos += price.cost_nanos or 0
        change.before_unpriced += int(not record.priced)
        change.after_unpriced += int(not price.priced)
        updates.append({"row_id": record.id, "cost_nanos": price.cost_nanos, "priced": price.priced,
                        "price_source": price.source, "price_provider_id": record.price_provider_id,
                        "cache_savings_nanos": price.cache_savings_nanos})
    if write is not None and updates:
        statement = (
            calls.update()
            .where(calls.c.id == sa.bindparam("row_id"))
            .values(cost_nanos=sa.bindparam("cost_nanos"), priced=sa.bindparam("priced"),
                    price_source=sa.bindparam("price_source"), price_provider_id=sa.bindparam("price_provider_id"),
                    cache_savings_nanos=sa.bindparam("cache_savings_nanos"))
        )
        with write.begin() as conn:
            conn.execute(statement, updates)
        result.written = True
    return result
