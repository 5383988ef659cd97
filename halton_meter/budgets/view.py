"""Every budget's state as one JSON document: what `halton-meter budgets --json` prints and the dashboard's
`GET /v1/budgets` returns, so the two never disagree.

Everything is read from the database, read-only and in one snapshot (`store.aggregate.snapshot`): the
spend exactly as the core's ledger loads it (`spend.spent`, the same rollups as `report`), the thresholds
already alerted this period, the overrides running, the calls refused for the budget this period and the
latest events. Nothing here asks the running meter: the document is the same whether it runs or not (a
blocked call and an alert are rows the meter wrote).

State, first match wins:

* `unknown` — the database is missing or unreadable (spend is not known; a running meter lets calls pass);
* `overridden` — an override (`halton-meter budgets override NAME --for 1h`) is running;
* `blocked` — `action = "block"` and the period's spend has reached the limit (new calls are refused);
* `warned` — the spend has reached the lowest warn threshold (or the limit of a `warn` budget);
* `ok` — otherwise.

A refused call is a `calls` row with `error_type = 'budget_exceeded'` whose `extra` JSON names the budget
(`{"budget": "<name>"}`); they are counted per period from `started_at` (ISO text compares in order).
"""

from __future__ import annotations

import datetime
import sqlite3
from typing import Any

from halton_meter.budget_config import Budget, usd
from halton_meter.budgets import spend
from halton_meter.clock import utc_stamp
from halton_meter.config import Config
from halton_meter.errors import DatabaseError

STATES = ("ok", "warned", "blocked", "overridden", "unknown")
LAST_EVENTS = 5
BLOCKED_ERROR = "budget_exceeded"


def document(config: Config, now: datetime.datetime) -> dict[str, Any]:
    """{"now", "database": {"path", "problem"}, "budgets": [one row per configured budget, in config order]}."""
    from halton_meter.store.aggregate import snapshot
    from halton_meter.store.schema import initialised

    db = config.paths.db
    rows: list[dict[str, Any]] | None = None
    problem: str | None = None
    try:
        if not initialised(db):
            problem = f"no database at {db} yet (the meter creates it when it starts)"
        elif config.budgets:
            with snapshot(db) as conn:
                running = spend.overrides(conn, now)
                rows = [_plan_row(conn, budget, now, running) if budget.is_plan else _row(conn, budget, now, running)
                        for budget in config.budgets]
    except (DatabaseError, sqlite3.Error, OSError) as exc:
        problem = exc.message if isinstance(exc, DatabaseError) else f"cannot read {db}: {exc}"
        rows = None
    if rows is None:
        rows = [_unknown(budget, now) for budget in config.budgets]
    return {"now": utc_stamp(now), "database": {"path": str(db), "problem": problem}, "budgets": rows}


def _plan_row(conn: sqlite3.Connection, budget: Budget, now: datetime.datetime,
              running: dict[str, str]) -> dict[str, Any]:
    """A plan budget: the highest latest utilization of its window among the accounts in its scope (a window
    whose reset has passed counts 0), against `limit_plan`; `share` is utilization / limit_plan."""
    stamp = utc_stamp(now)
    try:
        rows = conn.execute(
            "SELECT provider, account, utilization, resets_at FROM plan_snapshots WHERE id IN (SELECT max(id) FROM "
            "plan_snapshots WHERE kind = 'plan' AND window = ? GROUP BY provider, account)", (budget.plan_window,)
        ).fetchall()
    except sqlite3.OperationalError:
        rows = []
    best: tuple[float, str | None] | None = None
    for provider, account, utilization, resets in rows:
        if utilization is None or not budget.matches({"key": account, "provider": provider}):
            continue
        value = 0.0 if resets is not None and resets <= stamp else float(utilization)
        if best is None or value > best[0]:
            best = (value, resets if value else None)
    limit = budget.limit_plan or 1.0
    share = best[0] / limit if best is not None else None
    override_until = running.get(budget.name)
    if share is None:
        state_name = "overridden" if override_until else "ok"
    elif override_until is not None:
        state_name = "overridden"
    elif share >= 1:
        state_name = "blocked" if budget.blocks else "warned"
    else:
        state_name = "warned" if share >= min(budget.warn_at, default=1.0) else "ok"
    resets = best[1] if best is not None else None
    return {"name": budget.name, "scope": budget.scope_dict(), "period": budget.period_label,
            "action": budget.action, "warn_at": list(budget.warn_at), "limit_usd": None, "limit_nanos": None,
            "plan_window": budget.plan_window, "limit_plan": budget.limit_plan,
            "utilization": best[0] if best is not None else None, "period_start": None, "period_end": resets,
            "resets_in_seconds": max(0, int((datetime.datetime.fromisoformat(resets.replace("Z", "+00:00")) - now)
                                            .total_seconds())) if resets else None,
            "spent_usd": None, "spent_nanos": None, "share": share, "state": state_name,
            "override_until": override_until, "thresholds_alerted": [],
            "blocked_calls": blocked_calls(conn, budget.name, "", "~"),
            "last_events": [e.to_json() for e in spend.history(conn, budget.name, limit=LAST_EVENTS)]}


def _base(budget: Budget, now: datetime.datetime) -> dict[str, Any]:
    start, end = budget.bounds(now)
    rolling = budget.rolling_seconds is not None
    return {"name": budget.name, "scope": budget.scope_dict(), "period": budget.period_label,
            "action": budget.action, "warn_at": list(budget.warn_at), "limit_usd": usd(budget.limit_nanos),
            "limit_nanos": budget.limit_nanos, "period_start": utc_stamp(start),
            "period_end": None if rolling else utc_stamp(end),
            "resets_in_seconds": None if rolling else max(0, int((end - now).total_seconds()))}


def _unknown(budget: Budget, now: datetime.datetime) -> dict[str, Any]:
    return {**_base(budget, now), "spent_usd": None, "spent_nanos": None, "share": None, "state": "unknown",
            "override_until": None, "thresholds_alerted": [], "blocked_calls": None, "last_events": []}


def _row(conn: sqlite3.Connection, budget: Budget, now: datetime.datetime,
         running: dict[str, str]) -> dict[str, Any]:
    start, end = budget.bounds(now)
    spent = spend.spent(conn, budget, now)
    override_until = running.get(budget.name)
    return {**_base(budget, now), "spent_usd": usd(spent), "spent_nanos": spent,
            "share": spent / budget.limit_nanos, "state": state(budget, spent, override_until),
            "override_until": override_until, "thresholds_alerted": thresholds_alerted(conn, budget, now),
            "blocked_calls": blocked_calls(conn, budget.name, utc_stamp(start), utc_stamp(end)),
            "last_events": [e.to_json() for e in spend.history(conn, budget.name, limit=LAST_EVENTS)]}


def state(budget: Budget, spent: int, override_until: str | None) -> str:
    """`overridden`, `blocked`, `warned` or `ok` for a known spend (see the module docstring)."""
    if override_until is not None:
        return "overridden"
    if spent >= budget.limit_nanos:
        return "blocked" if budget.blocks else "warned"
    lowest = min(budget.warn_at, default=1.0)
    return "warned" if spent >= budget.limit_nanos * lowest else "ok"


def thresholds_alerted(conn: sqlite3.Connection, budget: Budget, now: datetime.datetime) -> list[float]:
    """The thresholds (fractions, 1.0 for the limit) alerted in the current period; for a rolling budget,
    those alerted within its span."""
    if budget.rolling_seconds is None:
        return sorted(spend.alerted(conn, budget, spend.period_start(budget, now)))
    if not spend.has_events_table(conn):
        return []
    since = utc_stamp(budget.bounds(now)[0])
    rows = conn.execute("SELECT DISTINCT threshold FROM budget_events WHERE budget = ? AND kind IN ('warn', "
                        "'limit') AND at >= ? AND threshold IS NOT NULL", (budget.name, since)).fetchall()
    return sorted(float(r[0]) for r in rows)


def blocked_calls(conn: sqlite3.Connection, name: str, since: str, until: str) -> int:
    """Calls refused for budget `name` that started in [since, until)."""
    row = conn.execute("SELECT count(*) FROM calls WHERE error_type = ? AND started_at >= ? AND started_at < ? "
                       "AND json_extract(extra, '$.budget') = ?", (BLOCKED_ERROR, since, until, name)).fetchone()
    return int(row[0])
