"""Helpers for the report tests (test_report.py, test_rollup.py, test_calls_cli.py, test_projects_retag.py):
rows written through the writer's own upsert, a time-zone switch, and an aggregation of the raw rows in
plain Python that the report must equal."""

from __future__ import annotations

import datetime
import math
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from halton_meter.store.schema import migrate
from halton_meter.store.writer import Writer
from halton_meter.types import CallRecord


def call(started_at: str = "2026-11-22T10:00:00.000000Z", **fields: Any) -> CallRecord:
    base: dict[str, Any] = dict(
        id=str(uuid.uuid4()), started_at=started_at, provider="anthropic", endpoint_kind="messages",
        host="api.anthropic.com", method="POST", path="/v1/messages", model="claude-sonnet-4-5-20250929",
        model_requested="claude-sonnet-4-5", complete=True, billable=True, usage_reported=True, priced=True,
        input_tokens=1000, output_tokens=100, cost_nanos=4_500_000, cache_savings_nanos=0, project="alpha",
        project_source="git", client="claude-code", branch="main", latency_ms=1500.0,
        price_provider_id="anthropic",
    )
    base.update(fields)
    return CallRecord(**base)


def write(db: Path, records: Iterable[CallRecord]) -> None:
    """Commit `records` exactly as the meter's writer does (its upsert: a final row replaces a provisional
    one, never the other way round), without its thread."""
    migrate(db)
    records = list(records)
    if not records:
        return
    writer = Writer(db)
    try:
        writer._upsert(records)
    finally:
        writer._disconnect()


def rows(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM calls")]
    finally:
        conn.close()


@contextmanager
def local_zone(name: str) -> Iterator[None]:
    """Run with TZ=`name` (the process's local zone), restored afterwards."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---- the reference: the raw rows, aggregated in Python ----------------------------------------------------

_DIMS = {
    "project": lambda r: r["project"] or None,
    "model": lambda r: r["model"] or r["model_requested"] or None,
    "provider": lambda r: r["provider"] or None,
    "client": lambda r: r["client"] or None,
    "branch": lambda r: r["branch"] or None,
    "key": lambda r: r["key_fingerprint"] or None,
    "day": lambda r: utc(r["started_at"]).astimezone().date().isoformat(),
    "hour": lambda r: utc(r["started_at"]).astimezone().replace(minute=0, second=0, microsecond=0).isoformat(),
}


def _usd(nanos: int) -> str:
    from decimal import Decimal

    return f"{Decimal(nanos).scaleb(-9):.9f}"


def nearest_rank_95(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def expected(all_rows: Iterable[dict[str, Any]], since: str, until: str, by: Sequence[str]) -> dict[tuple, dict]:
    """Per group (a tuple of JSON values in `by` order): the metrics the report must show, computed from
    scratch. Latency percentiles are the exact nearest-rank values (the report's are within 4.9%)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in all_rows:
        if not (since <= r["started_at"] < until):
            continue
        if r["endpoint_kind"] == "self_test" or r["incomplete_reason"] == "in_progress":
            continue
        key = tuple(_DIMS[d](r) for d in by)
        g = groups.setdefault(key, {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
                                    "cache_write_tokens": 0, "cache_write_1h_tokens": 0, "reasoning_tokens": 0,
                                    "cost": 0, "savings": 0, "unpriced_calls": 0, "subscription_calls": 0,
                                    "sub_cost": 0, "sub_savings": 0, "subscription_unpriced_calls": 0,
                                    "estimated_calls": 0, "incomplete_calls": 0, "error_calls": 0,
                                    "latency": [], "ttft": []})
        g["calls"] += 1
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                     "cache_write_1h_tokens"):
            g[name] += r[name]
        g["reasoning_tokens"] += r["reasoning_tokens"] or 0
        unpriced = int(bool(r["billable"]) and not r["priced"])
        if r["billing"] == "subscription":
            g["subscription_calls"] += 1
            g["sub_cost"] += r["cost_nanos"] or 0
            g["sub_savings"] += r["cache_savings_nanos"] or 0
            g["subscription_unpriced_calls"] += unpriced
        else:
            g["cost"] += r["cost_nanos"] or 0
            g["savings"] += r["cache_savings_nanos"] or 0
            g["unpriced_calls"] += unpriced
        g["estimated_calls"] += int(bool(r["estimated"]))
        g["incomplete_calls"] += int(not r["complete"])
        g["error_calls"] += int(r["error_type"] is not None)
        if r["latency_ms"] is not None:
            g["latency"].append(r["latency_ms"])
        if r["ttft_ms"] is not None:
            g["ttft"].append(r["ttft_ms"])
    result = {}
    for key, g in groups.items():
        result[key] = {
            **{k: v for k, v in g.items() if k not in ("cost", "savings", "sub_cost", "sub_savings", "latency",
                                                         "ttft")},
            "cost_usd": _usd(g["cost"]), "cache_savings_usd": _usd(g["savings"]),
            "subscription_list_price_usd": _usd(g["sub_cost"]),
            "subscription_cache_savings_usd": _usd(g["sub_savings"]),
            "latency_mean": sum(g["latency"]) / len(g["latency"]) if g["latency"] else None,
            "ttft_mean": sum(g["ttft"]) / len(g["ttft"]) if g["ttft"] else None,
            "latency_p95": nearest_rank_95(g["latency"]), "ttft_p95": nearest_rank_95(g["ttft"]),
        }
    return result


def assert_matches(report_json: dict[str, Any], reference: dict[tuple, dict]) -> None:
    """The report's groups equal the reference, group for group; its totals are their sum."""
    by = report_json["by"]
    got = {tuple(g[d] for d in by): g for g in report_json["groups"]}
    assert set(got) == set(reference), (sorted(map(str, got)), sorted(map(str, reference)))
    for key, want in reference.items():
        g = got[key]
        for name, value in want.items():
            if name in ("latency_mean", "ttft_mean"):
                shown = g[f"avg_{name.split('_')[0]}_ms"]
                assert (shown is None) == (value is None), (key, name)
                if value is not None:
                    assert abs(shown - value) <= 0.051, (key, name, shown, value)
            elif name in ("latency_p95", "ttft_p95"):
                shown = g[f"p95_{name.split('_')[0]}_ms"]
                assert (shown is None) == (value is None), (key, name)
                if value is not None and value >= 1:
                    assert abs(shown - value) <= 0.049 * value + 0.05, (key, name, shown, value)
            else:
                assert g[name] == value, (key, name, g[name], value)
    totals = report_json["totals"]
    assert totals["calls"] == sum(w["calls"] for w in reference.values())
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "unpriced_calls",
                 "subscription_calls", "error_calls", "incomplete_calls", "estimated_calls"):
        assert totals[name] == sum(g[name] for g in report_json["groups"])
    for name in ("cost_usd", "cache_savings_usd", "subscription_list_price_usd"):
        from decimal import Decimal

        assert Decimal(totals[name]) == sum((Decimal(g[name]) for g in report_json["groups"]), Decimal(0))
