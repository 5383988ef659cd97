"""`check.sync`: a `status` row when a [[sync]] target has fallen behind (docs/sync.md).

Fast and local: it reads the database's `sync_state` (what the running meter's sync loop last managed), never
the target itself. A target with rows waiting and no success for more than 15 minutes is a warning, with its
last error; no targets, or every target current, is ok. Metering never depends on it: a target that is down
only means rows wait in the local database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from halton_meter.plugin import (
    Check,
    CheckContext,
    CheckResult,
    DatabaseError,
    check_readable,
    hookimpl,
    sync_status,
)

LAG_SECONDS = 15 * 60
FIX = "`halton-meter sync status` shows the last error; fix the target (or its password), the meter retries"


def check_sync(ctx: CheckContext) -> CheckResult:
    targets = tuple(getattr(ctx.config, "sync", ()) or ())
    if not targets:
        return CheckResult("ok", "no sync targets")
    db = ctx.paths.db
    if not db.exists():
        return CheckResult("ok", f"{len(targets)} sync target{'s' if len(targets) > 1 else ''}, nothing recorded yet")
    try:
        check_readable(db)
        rows = sync_status(db, targets)
    except (DatabaseError, sqlite3.Error):
        return CheckResult("skip", "sync state not readable (the database row says why)")
    late = [r for r in rows if r["lag_rows"] and (r["lag_seconds"] is None or r["lag_seconds"] > LAG_SECONDS)
            and (r["last_error"] or r["lag_seconds"] is not None)]
    if late:
        parts = [f"{r['target']} {r['lag_rows']:,} rows behind" + (f": {r['last_error']}" if r["last_error"] else "")
                 for r in late]
        return CheckResult("warn", "; ".join(parts), fix=FIX, details={"targets": rows})
    behind = sum(r["lag_rows"] or 0 for r in rows)
    return CheckResult("ok", f"{len(rows)} target{'s' if len(rows) > 1 else ''} current" if not behind else
                       f"{behind:,} rows on their way", details={"targets": rows})


def check_reachable(ctx: CheckContext) -> CheckResult:
    """`doctor` only: each configured target reached read-only (its own `probe`), schema current."""
    settings = tuple(getattr(ctx.config, "sync", ()) or ())
    if not settings:
        return CheckResult("ok", "no sync targets")
    targets = {t.id: t for t in ctx.sync_targets}
    problems, fine = [], []
    for s in settings:
        target = targets.get(f"sync.{s.target}")
        if target is None:
            problems.append(f"{s.name}: target {s.target!r} is not installed")
            continue
        if target.probe is None:
            fine.append(f"{s.name}: not checkable")
            continue
        try:
            fine.append(f"{s.name}: {target.probe(s.options)}")
        except Exception as exc:  # one line, whatever the driver raised
            problems.append(f"{s.name}: {' '.join(str(exc).split())[:200] or type(exc).__name__}")
    if problems:
        return CheckResult("fail", "; ".join(problems), fix="check the [[sync]] block (url, password) and that the "
                           "server is up; `halton-meter sync status` shows the last error")
    return CheckResult("ok", "; ".join(fine))


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.sync", "team sync", check_sync, status_row="sync"))
    register(Check("check.sync.reachable", "sync targets", check_reachable))
