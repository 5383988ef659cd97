"""The database and what flows into it: readable, writable, the schema version, the core's write counters,
and calls the edge had to pass through unmetered.

Never changes the database: reads use a read-only connection; the write probe takes the write lock and
rolls back (`BEGIN IMMEDIATE; ROLLBACK`) with checkpoint-on-close turned off, so not a byte moves.
"""

from __future__ import annotations

import datetime
import sqlite3
import stat
from typing import Any

from halton_meter import hookimpl
from halton_meter.errors import DatabaseError
from halton_meter.stats import CORE_STATS, read_stats
from halton_meter.store.schema import LATEST_VERSION, check_readable
from halton_meter.types import Check, CheckContext, CheckResult
from halton_meter_checks._support import ago, since

BUSY_TIMEOUT_S = 1.0
STALE_STATS_S = 15.0
RECENT_ERROR_S = 600.0
PENDING_WARN = 1000
EXPECTED_TABLES = ("calls", "gaps")


def _read_only(path: Any) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)


def _moved_aside_fix(db: Any) -> str:
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


def check_db_writes(ctx: CheckContext) -> CheckResult:
    stats = read_stats(ctx.paths.run_dir / CORE_STATS)
    if stats is None:
        return CheckResult("skip", f"the core has published no counters yet ({ctx.paths.run_dir / CORE_STATS})")
    writer = stats.get("writer") or {}
    pending = int(writer.get("pending") or 0)
    committed = int(writer.get("committed") or 0)
    dropped = int(writer.get("dropped") or 0)
    errors = int(writer.get("write_errors") or 0)
    last_error = writer.get("last_error")
    error_age = since(writer.get("last_error_at"))
    details = {"pending": pending, "committed": committed, "dropped": dropped, "write_errors": errors,
               "last_error": last_error, "last_error_age_s": None if error_age is None else round(error_age, 1),
               "stats_age_s": round(stats["age_s"], 1)}
    logs = "see `halton-meter logs`; check free disk space and that nothing else holds db.sqlite locked"
    if stats["age_s"] > STALE_STATS_S:
        return CheckResult("warn", f"the core's counters are {ago(stats['age_s'])} old: it is not publishing "
                           "(stopped or wedged)", fix="halton-meter restart  (why: halton-meter logs)", details=details)
    recovered = (writer.get("last_success_at") or 0) > (writer.get("last_error_at") or 0) and not pending
    if last_error and error_age is not None and error_age < RECENT_ERROR_S and not recovered:
        return CheckResult("fail", f"writes are failing: {last_error} ({ago(error_age)} ago); {pending} row(s) "
                           "waiting to be written", fix=logs, details=details)
    if dropped:
        return CheckResult("warn", f"{dropped} record(s) dropped since the core started (the write queue was full): "
                           "counted, but not in the database", fix=logs, details=details)
    if pending > PENDING_WARN:
        return CheckResult("warn", f"{pending} rows waiting to be written: the database is slow or locked",
                           fix=logs, details=details)
    text = f"{committed} row(s) written since the core started, {pending} pending"
    if last_error and error_age is not None:
        text += f"; last error {ago(error_age)} ago, recovered since"
    else:
        text += ", no write errors"
    return CheckResult("ok", text, details=details)


def check_gaps(ctx: CheckContext) -> CheckResult:
    """The same verdict `status` gives (one health model), from the durable gap log."""
    from halton_meter.lifecycle.status import gaps_row
    from halton_meter.runtime import read_runtime

    row = gaps_row(ctx.paths, read_runtime(ctx.paths) or {})
    if row is None:
        return CheckResult("ok", "nothing went unmetered (gap log and database)")
    return CheckResult(row.status, row.summary, fix=row.fix, details=row.details)


@hookimpl
def halton_register_checks(register: Any) -> None:
    register(Check("check.db", "database", check_db))
    register(Check("check.db.writable", "database writable", check_db_writable, requires=("check.db",)))
    register(Check("check.db.writes", "database writes", check_db_writes, requires=("check.edge",)))
    register(Check("check.gaps", "pass-through gaps", check_gaps, requires=("check.edge",)))

