"""`halton-meter retag`: move past calls (and gaps) from one project to another.

Calls in flight are left alone (their final row would put the old project back); everything else in the
window moves, in short immediate transactions of at most `CHUNK` rows, so the running meter's writer is
never held up for long. The rollups follow through their triggers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from halton_meter.store.schema import check_readable, make_engine
from halton_meter.types import BILLING_SUBSCRIPTION, nanos_to_usd

CHUNK = 2000
RETAG_SOURCE = "retag"
_WINDOW = "project = ? AND started_at >= ? AND started_at < ? AND endpoint_kind IS NOT 'self_test'"
_ENDED = "incomplete_reason IS NOT 'in_progress'"


@dataclass
class RetagResult:
    source: str
    target: str
    since: str
    until: str
    dry_run: bool
    calls: int = 0
    cost_nanos: int = 0
    subscription_calls: int = 0
    subscription_cost_nanos: int = 0
    gaps: int = 0
    in_progress: int = 0
    """Calls of the source project still in flight: not moved."""

    def to_json(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "since": self.since, "until": self.until,
                "dry_run": self.dry_run, "calls": self.calls, "cost_usd": nanos_to_usd(self.cost_nanos),
                "subscription_calls": self.subscription_calls,
                "subscription_list_price_usd": nanos_to_usd(self.subscription_cost_nanos), "gaps": self.gaps,
                "in_progress_skipped": self.in_progress}


def _add(result: RetagResult, rows: Sequence[Any]) -> None:
    for _, billing, cost in rows:
        if billing == BILLING_SUBSCRIPTION:
            result.subscription_calls += 1
            result.subscription_cost_nanos += cost or 0
        else:
            result.calls += 1
            result.cost_nanos += cost or 0


def retag(db: Path, source: str, target: str, since: str, until: str, dry_run: bool) -> RetagResult:
    """Move (or with `dry_run`, count) the calls and gaps of `source` in [since, until) to `target`."""
    check_readable(db)
    result = RetagResult(source, target, since, until, dry_run)
    window = (source, since, until)
    engine = make_engine(db, immediate=not dry_run)
    try:
        with engine.connect() as conn:
            result.in_progress = conn.exec_driver_sql(
                f"SELECT count(*) FROM calls WHERE {_WINDOW} AND NOT ({_ENDED})", window).scalar_one()
        if dry_run:
            with engine.connect() as conn:
                _add(result, conn.exec_driver_sql(
                    f"SELECT rowid, billing, cost_nanos FROM calls WHERE {_WINDOW} AND {_ENDED}", window).all())
                result.gaps = conn.exec_driver_sql(
                    "SELECT count(*) FROM gaps WHERE project = ? AND at >= ? AND at < ?", window).scalar_one()
            return result
        while True:
            with engine.begin() as conn:  # BEGIN IMMEDIATE, busy timeout 5 s: waits for the writer, briefly
                rows = conn.exec_driver_sql(
                    f"SELECT rowid, billing, cost_nanos FROM calls WHERE {_WINDOW} AND {_ENDED} LIMIT {CHUNK}",
                    window).all()
                if not rows:
                    break
                marks = ", ".join("?" * len(rows))
                conn.exec_driver_sql(f"UPDATE calls SET project = ?, project_source = ? WHERE rowid IN ({marks})",
                                     (target, RETAG_SOURCE, *(r[0] for r in rows)))
                _add(result, rows)
        with engine.begin() as conn:
            result.gaps = conn.exec_driver_sql(
                "UPDATE gaps SET project = ? WHERE project = ? AND at >= ? AND at < ?", (target, *window)).rowcount
    finally:
        engine.dispose()
    return result
