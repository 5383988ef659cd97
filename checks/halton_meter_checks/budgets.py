"""The budgets row of `status` (and `doctor`): ok while every budget is below its first warn threshold,
a warning when one has passed it (or is blocked, or its spend cannot be read), with the way out.

Self-contained (a check imports the host only through `halton_meter.plugin`), fast and read-only: a
budget's spend is summed from the rollup the triggers keep exact (`rollup`, 15-minute UTC buckets per
combination of dimensions in `rollup_dims`), over the dimension combinations billed per token in the
budget's scope. Whole buckets come from the rollup; the partial buckets at either edge (the one holding
`now`, and a rolling span's first) from `calls`, a few minutes of rows each, so the sum is exact. Self-tests and
calls in flight never reach the rollup. `halton-meter budgets` shows the same figures from the same rows
(`halton_meter.budgets.spend`, which goes through the report's aggregation).

No database yet: nothing has been spent (ok). A database that cannot be read while budgets are configured
is a warning: the meter lets calls pass while it cannot read their spend.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from halton_meter.plugin import (
    Check,
    CheckContext,
    CheckResult,
    DatabaseError,
    HaltonError,
    check_readable,
    connect_read_only,
    hookimpl,
    load_config,
)

BUSY_TIMEOUT_S = 1.0
BUCKET_SECONDS = 900
FIX = ("`halton-meter budgets` shows them; `halton-meter budgets override NAME --for 1h` lets calls through")
_DIMS = ("project", "model", "provider", "client", "branch", "key")


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _budgets(ctx: CheckContext) -> Sequence[Any]:
    """The money budgets: a plan budget (`plan_window`) is a plan window's utilization, which the plan row
    already reports."""
    budgets = getattr(ctx.config, "budgets", None)
    if budgets is None:
        budgets = load_config(ctx.paths).budgets
    return tuple(b for b in budgets if getattr(b, "plan_window", None) is None)


def spent(conn: sqlite3.Connection, budget: Any, now: datetime.datetime, dims: list[tuple[Any, ...]]) -> int:
    """Nano-dollars `budget` has spent in the period holding `now`, up to `now`, from the rollup's whole
    15-minute buckets and the rows of the partial buckets at either edge (see the module docstring)."""
    start, _ = budget.bounds(now)
    ids = [row[0] for row in dims if row[7] == "api" and budget.matches(dict(zip(_DIMS, row[1:7], strict=True)))]
    if not ids:
        return 0
    first = -(-int(start.timestamp()) // BUCKET_SECONDS) * BUCKET_SECONDS  # the first whole bucket
    last = int(now.timestamp()) // BUCKET_SECONDS * BUCKET_SECONDS  # the bucket holding `now`
    total, edges = 0, [(start, now)]
    if first < last:
        marks = ", ".join("?" * len(ids))
        total = conn.execute(f"SELECT ifnull(sum(cost_nanos), 0) FROM rollup WHERE bucket >= ? AND bucket < ? "
                             f"AND dims IN ({marks})", (first, last, *ids)).fetchone()[0]
        edges = [(start, _utc(first)), (_utc(last), now)]
    for since, until in edges:
        if since >= until:
            continue
        rows = conn.execute(
            "SELECT project, coalesce(model, model_requested, ''), provider, ifnull(client, ''), "
            "ifnull(branch, ''), ifnull(key_fingerprint, ''), ifnull(cost_nanos, 0) FROM calls WHERE "
            "started_at >= ? AND started_at < ? AND billing = 'api' AND endpoint_kind IS NOT 'self_test' AND "
            "incomplete_reason IS NOT 'in_progress'", (_stamp(since), _stamp(until))).fetchall()
        total += sum(r[6] for r in rows if budget.matches(dict(zip(_DIMS, r[:6], strict=True))))
    return int(total)


def _utc(epoch: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def _overridden(conn: sqlite3.Connection, now: datetime.datetime) -> set[str]:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'budget_events'").fetchone() is None:
        return set()
    rows = conn.execute("SELECT budget, kind, until FROM budget_events WHERE id IN (SELECT max(id) FROM "
                        "budget_events WHERE kind IN ('override', 'override_cleared') GROUP BY budget)").fetchall()
    stamp = _stamp(now)
    return {name for name, kind, until in rows if kind == "override" and until and until > stamp}


def _money(nanos: int) -> str:
    return f"${nanos / 1e9:,.2f}"


def check_budgets(ctx: CheckContext, now: datetime.datetime | None = None) -> CheckResult:
    """The row; `now` (aware) for tests, else the clock."""
    if ctx.config is None:
        return CheckResult("skip", "config.toml not loaded (the config row says why)")
    try:
        budgets = _budgets(ctx)
    except HaltonError:
        return CheckResult("skip", "config.toml not loaded (the config row says why)")
    if not budgets:
        return CheckResult("ok", "no budgets")
    db = ctx.paths.db
    if not db.exists() or db.stat().st_size == 0:
        return CheckResult("ok", f"{len(budgets)} budget{'s' if len(budgets) > 1 else ''}, nothing spent yet")
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        check_readable(db)
        conn = connect_read_only(db, timeout=BUSY_TIMEOUT_S)
    except (DatabaseError, sqlite3.Error):
        return CheckResult("warn", "spend unknown: the database is not readable (calls pass unchecked)", fix=FIX)
    try:
        dims = conn.execute("SELECT id, project, model, provider, client, branch, key_fingerprint, billing "
                            "FROM rollup_dims").fetchall()
        overridden = _overridden(conn, now)
        rows = [(b, spent(conn, b, now, dims)) for b in budgets]
    except sqlite3.Error:
        return CheckResult("warn", "spend unknown: the database is not readable (calls pass unchecked)", fix=FIX)
    finally:
        conn.close()
    hot, details = [], []
    for budget, amount in rows:
        share = amount / budget.limit_nanos
        first = min(budget.warn_at, default=1.0)
        details.append({"name": budget.name, "spent_nanos": amount, "limit_nanos": budget.limit_nanos,
                        "share": share, "overridden": budget.name in overridden})
        if share >= first:
            if budget.name in overridden:
                state = "overridden"
            elif share >= 1:
                state = "blocked" if budget.action == "block" else "limit reached"
            else:
                state = "warned"
            hot.append((-share, f"{budget.name} at {share * 100:.0f} % of {_money(budget.limit_nanos)} ({state})"))
    if hot:
        hot.sort()
        more = f" (+{len(hot) - 3} more)" if len(hot) > 3 else ""
        return CheckResult("warn", "; ".join(text for _, text in hot[:3]) + more, fix=FIX,
                           details={"budgets": details})
    top = max(details, key=lambda d: d["share"])
    counted = f"{len(rows)} budgets below their" if len(rows) > 1 else "1 budget below its"
    return CheckResult("ok", f"{counted} warn thresholds (highest: {top['name']} {top['share'] * 100:.0f} %)",
                       details={"budgets": details})


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.budgets", "budgets", check_budgets, status_row="budgets"))
