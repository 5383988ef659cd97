"""Read side: what `calls`, `report` and the API show. Read-only connections; never blocks the writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from halton_meter.store.schema import calls, check_readable, gaps, make_engine
from halton_meter.types import CallRecord, nanos_to_usd

_RECORD_COLUMNS = [c for c in calls.columns if c.name != "recorded_at"]


def open_reader(db_path: Path) -> Engine:
    """A read engine; DatabaseError (exit 3) when the file is missing, corrupt or too new."""
    check_readable(db_path)
    return make_engine(db_path)


def _record(row: sa.Row[Any]) -> CallRecord:
    return CallRecord(**{c.name: row._mapping[c.name] for c in _RECORD_COLUMNS})


def list_calls(engine: Engine, limit: int | None = None) -> list[CallRecord]:
    """The most recent `limit` calls (all when None), oldest first."""
    query = sa.select(*_RECORD_COLUMNS).order_by(calls.c.started_at.desc(), calls.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [_record(r) for r in reversed(rows)]


@dataclass
class Totals:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nanos: int = 0
    """Charged per token (billing `api`)."""
    subscription_calls: int = 0
    subscription_cost_nanos: int = 0
    """List-price equivalent of calls covered by a subscription: shown, never counted as charged."""
    unpriced: int = 0
    """Billable calls whose cost is unknown (no price for the model, or no usage reported), never zero."""
    estimated: int = 0
    incomplete: int = 0
    errors: int = 0
    avg_latency_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": nanos_to_usd(self.cost_nanos),
            "subscription_calls": self.subscription_calls,
            "subscription_list_price_usd": nanos_to_usd(self.subscription_cost_nanos),
            "unpriced_calls": self.unpriced,
            "estimated_calls": self.estimated,
            "incomplete_calls": self.incomplete,
            "error_calls": self.errors,
            "avg_latency_ms": None if self.avg_latency_ms is None else round(self.avg_latency_ms, 1),
        }


@dataclass
class Report:
    since: str
    until: str
    totals: Totals
    by_project: list[tuple[str, Totals]] = field(default_factory=list)
    by_model: list[tuple[str, Totals]] = field(default_factory=list)
    gaps: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "totals": self.totals.to_json(),
            "by_project": [{"project": k, **t.to_json()} for k, t in self.by_project],
            "by_model": [{"model": k, **t.to_json()} for k, t in self.by_model],
            "gaps": self.gaps,
        }


def _aggregates() -> list[sa.ColumnElement[Any]]:
    c = calls.c
    return [
        sa.func.count().label("calls"),
        sa.func.coalesce(sa.func.sum(c.input_tokens), 0).label("input_tokens"),
        sa.func.coalesce(sa.func.sum(c.output_tokens), 0).label("output_tokens"),
        sa.func.coalesce(sa.func.sum(c.cache_read_tokens), 0).label("cache_read_tokens"),
        sa.func.coalesce(sa.func.sum(c.cache_write_tokens), 0).label("cache_write_tokens"),
        sa.func.coalesce(sa.func.sum(c.reasoning_tokens), 0).label("reasoning_tokens"),
        sa.func.coalesce(sa.func.sum(sa.case((c.billing == "subscription", 0), else_=c.cost_nanos)), 0).label(
            "cost_nanos"
        ),
        sa.func.sum(sa.case((c.billing == "subscription", 1), else_=0)).label("subscription_calls"),
        sa.func.coalesce(sa.func.sum(sa.case((c.billing == "subscription", c.cost_nanos), else_=0)), 0).label(
            "subscription_cost_nanos"
        ),
        sa.func.sum(sa.case((sa.and_(c.billable, sa.not_(c.priced)), 1), else_=0)).label("unpriced"),
        sa.func.sum(sa.case((c.estimated, 1), else_=0)).label("estimated"),
        sa.func.sum(sa.case((sa.not_(c.complete), 1), else_=0)).label("incomplete"),
        sa.func.sum(sa.case((c.error_type.is_not(None), 1), else_=0)).label("errors"),
        sa.func.avg(c.latency_ms).label("avg_latency_ms"),
    ]


def _totals(row: sa.Row[Any]) -> Totals:
    m = row._mapping
    return Totals(
        calls=m["calls"] or 0,
        input_tokens=m["input_tokens"],
        output_tokens=m["output_tokens"],
        cache_read_tokens=m["cache_read_tokens"],
        cache_write_tokens=m["cache_write_tokens"],
        reasoning_tokens=m["reasoning_tokens"],
        cost_nanos=m["cost_nanos"],
        subscription_calls=m["subscription_calls"] or 0,
        subscription_cost_nanos=m["subscription_cost_nanos"],
        unpriced=m["unpriced"] or 0,
        estimated=m["estimated"] or 0,
        incomplete=m["incomplete"] or 0,
        errors=m["errors"] or 0,
        avg_latency_ms=m["avg_latency_ms"],
    )


def build_report(engine: Engine, since: str, until: str) -> Report:
    """Totals and breakdowns for calls with since <= started_at < until (UTC ISO strings)."""
    # Self-tests (init, doctor --curl) are the meter checking itself, not a call anyone paid for.
    window = sa.and_(calls.c.started_at >= since, calls.c.started_at < until, calls.c.endpoint_kind != "self_test",
                     calls.c.incomplete_reason.is_distinct_from("in_progress"))
    model = sa.func.coalesce(calls.c.model, calls.c.model_requested, "(unknown)")
    with engine.connect() as conn:
        totals = _totals(conn.execute(sa.select(*_aggregates()).where(window)).one())
        by_project = [
            (r.project, _totals(r))
            for r in conn.execute(
                sa.select(calls.c.project, *_aggregates()).where(window).group_by(calls.c.project)
                .order_by(sa.desc("cost_nanos"), calls.c.project)
            )
        ]
        by_model = [
            (r.model, _totals(r))
            for r in conn.execute(
                sa.select(model.label("model"), *_aggregates()).where(window).group_by(model)
                .order_by(sa.desc("cost_nanos"), model)
            )
        ]
        gap_count = conn.execute(
            sa.select(sa.func.count()).select_from(gaps).where(gaps.c.at >= since, gaps.c.at < until)
        ).scalar_one()
    return Report(since, until, totals, by_project, by_model, gap_count)
