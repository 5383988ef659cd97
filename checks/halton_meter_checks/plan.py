"""The plan row of `status` (and `doctor`): warns when a Claude or ChatGPT plan window is at 90 % or more, or the
provider rejects calls, as the latest snapshot in `plan_snapshots` says (`halton-meter plan` shows the rest).

Fast and read-only: one index seek per (account, window) on a read-only connection. A missing, unreadable
or older database (no `plan_snapshots` yet) is a `skip`: the database row reports those, this one never
fails the command. A window whose reset has passed is over and never warns.
"""

from __future__ import annotations

import datetime
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from halton_meter.plugin import (
    Check,
    CheckContext,
    CheckResult,
    DatabaseError,
    check_readable,
    connect_read_only,
    hookimpl,
    parse_stamp,
)

HIGH = 0.9
"""At or above this utilization a plan window is a warning."""
BUSY_TIMEOUT_S = 1.0
MAX_KEYS = 200


def _epoch(text: str | None) -> float | None:
    moment = parse_stamp(text)
    return moment.timestamp() if moment is not None else None


def _local(epoch: float, now: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch).astimezone()
    same_day = moment.date() == datetime.datetime.fromtimestamp(now).astimezone().date()
    return moment.strftime("%H:%M" if same_day else "%a %H:%M")


def latest(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The latest plan snapshot of each (account, window), by index seeks."""
    out: list[dict[str, Any]] = []
    key = conn.execute("SELECT account, window FROM plan_snapshots ORDER BY account, window LIMIT 1").fetchone()
    while key is not None and len(out) < MAX_KEYS:
        row = conn.execute(
            "SELECT provider, kind, utilization, resets_at, status FROM plan_snapshots WHERE account = ? "
            "AND window = ? ORDER BY seen_at DESC LIMIT 1", key).fetchone()
        if row is not None and row[1] == "plan":
            out.append({"account": key[0], "window": key[1], "provider": row[0], "utilization": row[2],
                        "resets_at": row[3], "status": row[4]})
        key = conn.execute("SELECT account, window FROM plan_snapshots WHERE (account, window) > (?, ?) "
                           "ORDER BY account, window LIMIT 1", key).fetchone()
    return out


def check_plan(ctx: CheckContext) -> CheckResult:
    db = ctx.paths.db
    if not db.exists() or db.stat().st_size == 0:
        return CheckResult("skip", "no database yet")
    try:
        check_readable(db)
        conn = connect_read_only(db, timeout=BUSY_TIMEOUT_S)
    except (DatabaseError, sqlite3.Error):
        return CheckResult("skip", "database not readable (the database row says why)")
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'plan_snapshots'").fetchone() \
                is None:
            return CheckResult("skip", "no plan limits recorded by this version of the database yet")
        windows = latest(conn)
    except sqlite3.Error:
        return CheckResult("skip", "plan limits not readable (the database row says why)")
    finally:
        conn.close()
    now = time.time()
    open_windows = [w for w in windows if (_epoch(w["resets_at"]) or now + 1) > now]
    if not windows:
        return CheckResult("ok", "no plan limits seen yet (they appear after a call from a tool signed in with "
                           "a Claude or ChatGPT plan)")
    hot = []
    for w in open_windows:
        rejected = (w["status"] or "").startswith("rejected")
        if rejected or (w["utilization"] is not None and w["utilization"] >= HIGH):
            hot.append((not rejected, -(w["utilization"] or 0), w, rejected))
    details = {"windows": open_windows}
    if hot:
        hot.sort(key=lambda h: h[:2])
        parts, until = [], []
        for _, _, w, rejected in hot[:3]:
            reset = _epoch(w["resets_at"])
            when = f" until {_local(reset, now)}" if reset is not None else ""
            used = f" at {w['utilization'] * 100:.0f} %" if w["utilization"] is not None else ""
            parts.append(f"{w['provider']} {w['window']}{used}" + (f", rejected{when}" if rejected else
                                                                   f" (resets {_local(reset, now)})" if reset else ""))
            if reset is not None:
                until.append(reset)
        wait = f"wait until {_local(min(until), now)}" if until else "wait for the window to reset"
        return CheckResult("warn", "; ".join(parts), fix=f"{wait} or switch model (`halton-meter plan` shows who "
                           "used it)", details=details)
    top = sorted((w for w in open_windows if w["utilization"] is not None), key=lambda w: -w["utilization"])
    if not top:
        return CheckResult("ok", "no plan window near its limit", details=details)
    return CheckResult("ok", "highest: " + ", ".join(f"{w['provider']} {w['window']} {w['utilization'] * 100:.0f} %"
                                                     for w in top[:2]), details=details)


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.plan", "plan limits", check_plan, status_row="plan"))
