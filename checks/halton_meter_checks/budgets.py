"""The budgets row of `status` (and `doctor`): ok while every budget is below its first warn threshold,
a warning when one has passed it (or is blocked, or its spend cannot be read), with the way out.

Read-only, through the host's own spend reader (`budget_spent`, exported by `halton_meter.plugin`: the
report's aggregation over the rollup, exact at the edges), so the row, `halton-meter budgets` and the core's
counters can never disagree.

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
    budget_overrides,
    budget_spent,
    check_readable,
    connect_read_only,
    hookimpl,
    load_config,
)

BUSY_TIMEOUT_S = 1.0
FIX = ("`halton-meter budgets` shows them; `halton-meter budgets override NAME --for 1h` lets calls through")


def _budgets(ctx: CheckContext) -> Sequence[Any]:
    """The money budgets: a plan budget (`plan_window`) is a plan window's utilization, which the plan row
    already reports."""
    budgets = getattr(ctx.config, "budgets", None)
    if budgets is None:
        budgets = load_config(ctx.paths).budgets
    return tuple(b for b in budgets if getattr(b, "plan_window", None) is None)


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
        overridden = budget_overrides(conn, now)
        rows = [(b, budget_spent(conn, b, now)) for b in budgets]
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
