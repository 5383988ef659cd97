"""The database and what flows into it: readable, writable, the schema version, the core's write counters,
and calls the edge had to pass through unmetered.

Never changes the database: reads use a read-only connection; the write probe takes the write lock and
rolls back (`BEGIN IMMEDIATE; ROLLBACK`) with checkpoint-on-close turned off, so not a byte moves.
"""

from __future__ import annotations

import datetime
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from halton_meter.plugin import (
    CORE_STATS,
    LATEST_VERSION,
    Check,
    CheckContext,
    CheckResult,
    DatabaseError,
    check_readable,
    connect_read_only,
    hookimpl,
    read_stats,
)
from halton_meter_checks._support import ago, since

BUSY_TIMEOUT_S = 1.0
STALE_STATS_S = 10.0
"""Counters are published every 2 s; older than this means the core is gone or wedged."""
RECENT_ERROR_S = 60.0
"""A write error this recent, with nothing committed since, is a failure now."""
PENDING_WARN = 1000
EXPECTED_TABLES = ("calls", "gaps")


def _read_only(path: Path) -> sqlite3.Connection:
    return connect_read_only(path, timeout=BUSY_TIMEOUT_S)


def _moved_aside_fix(db: Path) -> str:
    return f"mv {db} {db}.corrupt && halton-meter restart  (the meter starts a new, empty database)"


def check_db(ctx: CheckContext) -> CheckResult:
    db = ctx.paths.db
    if not db.exists():
        return CheckResult("fail", f"no database at {db} yet", fix="halton-meter start  (the meter creates it)")
    try:
        version = check_readable(db)
    except DatabaseError as exc:
        newer = "newer than" in exc.message
        return CheckResult("fail", exc.message, fix="pip install -U halton-meter" if newer else _moved_aside_fix(db))
    details: dict[str, Any] = {"path": str(db), "schema_version": version, "latest_version": LATEST_VERSION,
                               "bytes": db.stat().st_size}
    try:
        conn = _read_only(db)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            last = None
            if "calls" in tables:
                last = conn.execute("SELECT max(started_at) FROM calls").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return CheckResult("fail", f"database {db} is not readable ({exc})", fix=_moved_aside_fix(db),
                           details=details)
    if version == 0 and not tables:
        return CheckResult("warn", f"{db} is empty; the meter creates its tables when it starts",
                           fix="halton-meter start", details=details)
    if version == 0:
        return CheckResult("fail", f"{db} holds tables but was not created by Halton Meter",
                           fix=f"mv {db} {db}.foreign && halton-meter restart", details=details)
    missing = [t for t in EXPECTED_TABLES if t not in tables and version >= 2]
    if missing or "calls" not in tables:
        return CheckResult("fail", f"{db} (schema v{version}) lacks table(s) {', '.join(missing or ['calls'])}",
                           fix=_moved_aside_fix(db), details=details)
    if version < LATEST_VERSION:
        return CheckResult("warn", f"schema v{version}; the meter migrates it to v{LATEST_VERSION} when it starts "
                           "(a backup is kept beside it)", fix="halton-meter restart", details=details)
    details["last_call_at"] = last
    when = "no calls recorded yet"
    if last:
        started = datetime.datetime.fromisoformat(last.replace("Z", "+00:00"))
        when = f"last call {ago((datetime.datetime.now(datetime.UTC) - started).total_seconds())} ago"
    return CheckResult("ok", f"schema v{version} (latest), {details['bytes'] / 1048576:.1f} MiB, {when}",
                       details=details)


def check_db_writable(ctx: CheckContext) -> CheckResult:
    db = ctx.paths.db
    mode = stat.S_IMODE(db.stat().st_mode)
    details = {"path": str(db), "mode": f"{mode:04o}"}
    try:
        conn = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        return CheckResult("fail", f"cannot open {db} for writing ({exc})",
                           fix=f"chmod 600 {db} && chmod 700 {ctx.paths.home}", details=details)
    try:
        if hasattr(sqlite3, "SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE"):
            conn.setconfig(sqlite3.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, True)  # closing must not checkpoint the WAL
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return CheckResult("warn", f"{db} stayed locked by another process for over {BUSY_TIMEOUT_S:g} s: the "
                               "meter's writes wait behind it", fix="close whatever holds db.sqlite in an open "
                               "transaction (a sqlite3 shell, a DB browser), or `halton-meter restart`",
                               details=details)
        return CheckResult("fail", f"{db} cannot be written ({text})",
                           fix=f"chmod 600 {db} && chmod 700 {ctx.paths.home}  (and check the disk is not full "
                           "or read-only)", details=details)
    finally:
        conn.close()
    if mode & 0o077:
        return CheckResult("warn", f"{db} is writable, but readable by other users (mode {mode:04o})",
                           fix=f"chmod 600 {db}", details=details)
    return CheckResult("ok", f"writable (write lock taken and released; mode {mode:04o})", details=details)


DISK_FULL_BYTES = 1024 * 1024
"""Below this, writes are failing for want of space (check.disk warns long before)."""
GAPS_RECENT_SECONDS = 15 * 60
"""Gaps newer than this make the row a warning (and `status` DEGRADED); older ones are information."""


def _held(pending: int, unsaved: int, dropped: int) -> str:
    """`12 row(s) pending, all journaled / 0 lost`: what waits, and whether a crash now would lose any."""
    safe = "all journaled" if not unsaved else f"{unsaved} not journaled (a crash now would lose them)"
    return f"{pending} row(s) pending, {safe} / {dropped} lost"


def check_db_writes(ctx: CheckContext) -> CheckResult:
    """Whether what the core meters reaches the database: its published counters while it runs, the
    journal it left while it does not, and the disk under both."""
    import shutil

    from halton_meter.plugin import backlog, core_state, pid_alive

    paths = ctx.paths
    try:
        free: int | None = shutil.disk_usage(paths.home).free
    except OSError:
        free = None
    state = core_state(paths)
    core_up = state is not None and pid_alive(state.get("pid"))
    stats = read_stats(paths.run_dir / CORE_STATS)
    fresh = stats is not None and core_up and stats["age_s"] <= STALE_STATS_S
    writer = (stats or {}).get("writer", {}) if fresh else {}
    if fresh:
        pending, unsaved = int(writer.get("pending") or 0), int(writer.get("unsaved") or 0)
    else:  # no live core: what it left is on disk, in the journal, until the next core writes it
        pending, unsaved = backlog(paths.spool)
    dropped = int(writer.get("dropped") or 0)
    held = _held(pending, unsaved, dropped)
    last_error, error_age = writer.get("last_error"), since(writer.get("last_error_at"))
    details = {"pending": pending, "unsaved": unsaved, "dropped": dropped, "committed": writer.get("committed"),
               "write_errors": writer.get("write_errors"), "last_error": last_error,
               "last_error_age_s": None if error_age is None else round(error_age, 1), "free_bytes": free,
               "stats_age_s": None if stats is None else round(stats["age_s"], 1)}
    space_fix = f"free space on the disk holding {paths.home}; pending rows are kept and written then"
    if free is not None and free < DISK_FULL_BYTES:
        return CheckResult("fail", f"disk full: {free} bytes free on the filesystem holding {paths.home}; {held}",
                           fix=space_fix, details=details)
    if not core_up:
        if pending or unsaved:
            return CheckResult("warn", f"the core is not running; {held}: written when it starts",
                               fix="halton-meter start  (the core row says why it is down)", details=details)
        return CheckResult("skip", "no core running", details=details)
    if stats is None:
        return CheckResult("warn", "the core has published no counters yet", fix="halton-meter logs",
                           details=details)
    if stats["age_s"] > STALE_STATS_S:
        return CheckResult("warn", f"the core's counters are {ago(stats['age_s'])} old: it may be wedged; {held}",
                           fix="halton-meter restart  (why: halton-meter logs)", details=details)
    recovered = (writer.get("last_success_at") or 0) > (writer.get("last_error_at") or 0) and not pending
    if last_error and error_age is not None and error_age < RECENT_ERROR_S and not recovered:
        return CheckResult("fail", f"last write failed {ago(error_age)} ago: {last_error}; {held}",
                           fix="free disk space or release the database lock; rows are kept and retried",
                           details=details)
    if writer.get("journal_problem"):
        return CheckResult("warn", f"{writer['journal_problem']}; {held}",
                           fix=f"free space on the disk holding {paths.home}, or make {paths.spool} writable",
                           details=details)
    if dropped:
        return CheckResult("warn", f"{dropped} record(s) could not be queued (the write queue was full): counted "
                           "as gaps", fix="halton-meter logs  (the database was slow or locked for long)",
                           details=details)
    if pending > PENDING_WARN:
        return CheckResult("warn", f"writes are behind: {held}", fix="halton-meter logs", details=details)
    if writer.get("recovered") is False:
        return CheckResult("warn", f"replaying what the previous core left: {held}", fix="halton-meter logs",
                           details=details)
    text = f"{writer.get('committed', 0)} committed, {pending} pending"
    if last_error and error_age is not None and error_age < 10 * RECENT_ERROR_S:
        text += f"; last error {ago(error_age)} ago, recovered since"
    return CheckResult("ok", text, details=details)


def check_gaps(ctx: CheckContext) -> CheckResult:
    """Traffic that passed the meter by since the meter started (the last 24 h when none runs), from the
    durable gap log — the table and the lines not ingested yet — never from a process's memory. Recent gaps
    (15 min) are a warning; older ones are reported as information."""
    import time

    from halton_meter.plugin import iso, read_only_uri, read_runtime
    from halton_meter.plugin import summarize_gaps as summarize

    paths = ctx.paths
    started = (read_runtime(paths) or {}).get("started_at")
    since_at = started or iso(datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1))
    conn = None
    try:
        if paths.db.exists():
            conn = sqlite3.connect(read_only_uri(paths.db), uri=True, timeout=BUSY_TIMEOUT_S)
        summary = summarize(conn, paths.spool, since=since_at)
    except sqlite3.Error:
        summary = summarize(None, paths.spool, since=since_at)
    finally:
        if conn is not None:
            conn.close()
    when = "since the meter started" if started else "in the last 24 h"
    if summary.empty:
        return CheckResult("ok", f"nothing went unmetered {when}", details=summary.to_json())
    last = _epoch(summary.last_at)
    recent = last is not None and time.time() - last < GAPS_RECENT_SECONDS
    text = f"{summary.describe()} went unmetered {when}"
    if last is not None:
        text += f" (last {ago(time.time() - last)} ago: {summary.last_reason})"
    if recent:
        return CheckResult("warn", text, fix="keep the core running (`halton-meter logs` shows why it was down); "
                           "`halton-meter report` counts them", details=summary.to_json())
    return CheckResult("ok", text, details=summary.to_json())


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.db", "database", check_db))
    register(Check("check.db.writable", "database writable", check_db_writable, requires=("check.db", "check.home")))
    register(Check("check.db.writes", "database writes", check_db_writes, status_row="writes"))
    register(Check("check.gaps", "pass-through gaps", check_gaps, status_row="gaps"))

