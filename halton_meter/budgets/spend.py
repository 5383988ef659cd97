"""What a budget's period has spent, and its history: both read from the database, for the core when it
loads its counters, for `halton-meter budgets`, the `status` row and the dashboard.

Spend is exact: the same rollups and rows as `report` (`store.aggregate.collect`), summed over the calls in
the budget's scope that are billed per token (`billing = 'api'`); self-tests and calls in flight never
count. Money is integer nano-dollars.
"""

from __future__ import annotations

import datetime
import sqlite3
from dataclasses import dataclass
from typing import Any

from halton_meter.budget_config import Budget
from halton_meter.clock import utc_stamp
from halton_meter.store.aggregate import Filters, collect
from halton_meter.store.rollup import SUMS

_COST = list(SUMS).index("cost_nanos")


def filters_for(budget: Budget) -> Filters:
    scope = dict(budget.scope)
    return Filters(project=scope.get("project", ()), model=scope.get("model", ()),
                   provider=scope.get("provider", ()), client=scope.get("client", ()),
                   branch=scope.get("branch", ()), key=scope.get("key", ()))


def spent(conn: sqlite3.Connection, budget: Budget, now: datetime.datetime) -> int:
    """Nano-dollars spent in the period holding `now` (up to `now`), by calls in scope billed per token."""
    start, _ = budget.bounds(now)
    cells = collect(conn, start, now, filters=filters_for(budget), hist=False, only=("cost_nanos",))
    return sum(values[_COST] for key, values in cells.sums.items() if key[-2] == "api")  # key: (billing, 0)


@dataclass(frozen=True)
class Event:
    at: str
    budget: str
    period_start: str
    kind: str
    threshold: float | None = None
    spent_nanos: int | None = None
    limit_nanos: int | None = None
    until: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "budget": self.budget, "period_start": self.period_start, "kind": self.kind,
                "threshold": self.threshold, "spent_nanos": self.spent_nanos, "limit_nanos": self.limit_nanos,
                "until": self.until, "detail": self.detail}


_COLUMNS = ("at", "budget", "period_start", "kind", "threshold", "spent_nanos", "limit_nanos", "until", "detail")


def record(conn: sqlite3.Connection, event: Event) -> bool:
    """Store `event`; False when it was there already (a threshold alerts once per period)."""
    cursor = conn.execute(f"INSERT OR IGNORE INTO budget_events ({', '.join(_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(_COLUMNS))})", tuple(getattr(event, c) for c in _COLUMNS))
    return cursor.rowcount == 1


def has_events_table(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'budget_events'").fetchone() \
        is not None


def history(conn: sqlite3.Connection, budget: str | None = None, limit: int = 100) -> list[Event]:
    """The latest events, newest first."""
    if not has_events_table(conn):
        return []
    where, params = ("WHERE budget = ?", (budget,)) if budget is not None else ("", ())
    rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM budget_events {where} ORDER BY id DESC LIMIT ?",
                        (*params, limit)).fetchall()
    return [Event(*row) for row in rows]


def alerted(conn: sqlite3.Connection, budget: Budget, period_start: str) -> set[float]:
    """The thresholds (fractions; 1.0 for the limit) already alerted in this period."""
    if not has_events_table(conn):
        return set()
    rows = conn.execute("SELECT threshold FROM budget_events WHERE budget = ? AND period_start = ? "
                        "AND kind IN ('warn', 'limit')", (budget.name, period_start)).fetchall()
    return {float(r[0]) for r in rows if r[0] is not None}


def overrides(conn: sqlite3.Connection, now: datetime.datetime) -> dict[str, str]:
    """Budget name → the end of its override (UTC ISO), for overrides still running at `now`: the latest
    override or clear per budget decides."""
    if not has_events_table(conn):
        return {}
    rows = conn.execute("SELECT budget, kind, until FROM budget_events WHERE id IN (SELECT max(id) FROM "
                        "budget_events WHERE kind IN ('override', 'override_cleared') GROUP BY budget)").fetchall()
    stamp = utc_stamp(now)
    return {name: until for name, kind, until in rows if kind == "override" and until and until > stamp}


def period_start(budget: Budget, now: datetime.datetime) -> str:
    """The period's start as stored with its events. A rolling span has no start: its thresholds alert at
    most once per block of its own length (5 h blocks from the epoch for `5h`), so a budget that stays over
    its limit is not announced on every call, and one that falls back and crosses again later is."""
    if budget.rolling_seconds is None:
        return utc_stamp(budget.bounds(now)[0])
    span = budget.rolling_seconds
    return utc_stamp(datetime.datetime.fromtimestamp(int(now.timestamp()) // span * span, datetime.UTC))
