"""`halton-meter status`: one verdict and a row per component, from listener probes and published counters.

* HEALTHY: edge, core and API answer, writes are keeping up, the CA is valid.
* DEGRADED: traffic flows but metering is impaired (core down, writes failing, API down, CA expiring…).
* BROKEN: the proxy port does not answer, so clients pointed at it fail (or nothing runs at all), or
  config.toml is invalid, so the meter cannot start or restart (a running edge passes traffic on defaults).

It reports what runs, however it was started: a foreground `serve` counts ("unsupervised"), and a meter
that serves traffic is never called broken because some service file is missing.
"""

from __future__ import annotations

import datetime
import shutil
import time
from dataclasses import dataclass
from typing import Any

from halton_meter.ca import CAProblem, inspect_ca
from halton_meter.lifecycle.init import InitContext
from halton_meter.lifecycle.services import probe
from halton_meter.stats import CORE_STATS, read_stats

STALE_SECONDS = 10.0
PENDING_WARN = 100


@dataclass
class Row:
    id: str
    title: str
    status: str
    summary: str
    fix: str | None = None
    details: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status, "summary": self.summary, "fix": self.fix}


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def collect(ctx: InitContext, config_error: str | None = None) -> dict[str, Any]:
    paths = ctx.paths
    health = probe(paths)
    rows: list[Row] = []
    runtime = health.runtime or {}
    edge_port = runtime.get("edge_port", ctx.config.edge_port)
    if config_error is not None:
        rows.append(Row("config", "config", "fail", f"{config_error}: the meter cannot start or restart with it"
                        + ("; the running edge passes traffic on the defaults" if health.edge else ""),
                        fix="fix config.toml (`halton-meter doctor` shows the line), then `halton-meter restart`"))

    if health.edge:
        rows.append(Row("edge", "proxy", "ok", f"listening on 127.0.0.1:{edge_port}"))
    else:
        rows.append(Row("edge", "proxy", "fail", f"nothing answers on 127.0.0.1:{edge_port}",
                        fix="halton-meter start   (or `halton-meter serve` in the foreground)"))
    if health.core:
        rows.append(Row("core", "core", "ok", f"metering (internal port {health.core_port})"))
    elif health.edge:
        failure = read_stats(paths.run_dir / "core-error.json")
        if failure and failure.get("message"):
            rows.append(Row("core", "core", "fail",
                            f"cannot start (exit {failure.get('exit_code')}): {failure['message']}; calls pass "
                            "through UNMETERED meanwhile", fix="fix what the message names; the supervisor retries"))
        else:
            rows.append(Row("core", "core", "fail", "down: calls pass through UNMETERED and are counted as gaps",
                            fix="halton-meter logs   (the supervisor restarts it with backoff; see why it stopped)"))
    else:
        rows.append(Row("core", "core", "skip", "not running"))
    if health.api:
        rows.append(Row("api", "api", "ok", f"127.0.0.1:{runtime.get('api_port')} answers /health"))
    elif health.edge:
        rows.append(Row("api", "api", "warn", "does not answer /health", fix="halton-meter restart"))
    else:
        rows.append(Row("api", "api", "skip", "not running"))

    rows.append(_writes_row(paths, health.core))
    gap_row = gaps_row(paths, runtime)
    if gap_row is not None:
        rows.append(gap_row)

    try:
        info = inspect_ca(paths)
    except CAProblem as exc:
        rows.append(Row("ca", "CA", "fail", str(exc).split("; fix:")[0], fix=exc.fix))
    else:
        if info is None:
            rows.append(Row("ca", "CA", "fail", "no CA yet", fix="halton-meter init"))
        else:
            not_after = datetime.datetime.fromisoformat(info["not_after"])
            days = (not_after - datetime.datetime.now(datetime.UTC)).days
            status = "ok" if days > 30 else "warn"
            rows.append(Row("ca", "CA", status, f"valid until {not_after:%Y-%m-%d} ({days} days)",
                            fix=None if status == "ok" else "halton-meter init --clean   (new CA; re-trust it)"))

    rows.append(_supervisor_row(ctx, health))
    mode = ctx.state.mode
    rows.append(Row("mode", "mode", "ok" if mode else "warn",
                    f"{mode} (set up {ctx.state.init_at})" if mode else "not set up with `init`",
                    fix=None if mode else "halton-meter init"))

    if not health.edge or config_error is not None:
        verdict = "BROKEN"
    elif any(r.status in ("fail", "warn") for r in rows):
        verdict = "DEGRADED"
    else:
        verdict = "HEALTHY"
    worst = [r for r in rows if r.status in ("fail", "warn")]
    summary = "all components answer" if not worst else "; ".join(f"{r.title}: {r.summary}" for r in worst[:2])
    return {"verdict": verdict, "summary": summary, "rows": [r.to_json() for r in rows]}


DISK_FULL_BYTES = 1024 * 1024
GAPS_RECENT_SECONDS = 15 * 60
"""Gaps newer than this make status DEGRADED; older ones are reported as information."""


def gaps_row(paths: Any, runtime: dict[str, Any]) -> Row | None:
    """Traffic that passed the meter by since the meter started (the last 24 h when none runs), from the
    durable gap log — the table and the lines not ingested yet — never from a process's memory."""
    import sqlite3

    from halton_meter.store.gaps import summarize
    from halton_meter.store.schema import read_only_uri
    from halton_meter.timewindow import iso

    since = runtime.get("started_at") or iso(datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1))
    conn = None
    try:
        if paths.db.exists():
            conn = sqlite3.connect(read_only_uri(paths.db), uri=True, timeout=2)
        summary = summarize(conn, paths.spool, since=since)
    except sqlite3.Error:
        summary = summarize(None, paths.spool, since=since)
    finally:
        if conn is not None:
            conn.close()
    if summary.empty:
        return None
    last = _parse_iso(summary.last_at)
    recent = last is not None and time.time() - last < GAPS_RECENT_SECONDS
    when = "since the meter started" if runtime.get("started_at") else "in the last 24 h"
    text = (f"{summary.describe()} went unmetered {when} (last {_ago(time.time() - last)}: "
            f"{summary.last_reason})" if last is not None else f"{summary.describe()} went unmetered")
    return Row("gaps", "gaps", "warn" if recent else "ok", text,
               fix="keep the core running (`halton-meter logs` shows why it was down); `halton-meter report` "
                   "counts them" if recent else None, details=summary.to_json())


def _parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _writes_row(paths: Any, core_up: bool) -> Row:
    from halton_meter.store.journal import backlog

    try:
        free = shutil.disk_usage(paths.home).free
    except OSError:
        free = None
    stats = read_stats(paths.run_dir / CORE_STATS)
    fresh = stats is not None and core_up and stats["age_s"] <= STALE_SECONDS
    writer = (stats or {}).get("writer", {}) if fresh else {}
    if fresh:
        pending, unsaved = int(writer.get("pending", 0) or 0), int(writer.get("unsaved", 0) or 0)
    else:  # no live core: what it left is on disk, in the journal, until the next core writes it
        pending, unsaved = backlog(paths.spool)
    dropped = int(writer.get("dropped", 0) or 0)
    held = _held(pending, unsaved, dropped)
    if free is not None and free < DISK_FULL_BYTES:
        return Row("writes", "writes", "fail",
                   f"disk full: {free} bytes free on the filesystem holding {paths.home}; {held}",
                   fix=f"free space on the disk holding {paths.home}; pending rows are kept and written then")
    if not core_up:
        if pending or unsaved:
            return Row("writes", "writes", "warn", f"the core is not running; {held}: written when it starts",
                       fix="halton-meter start   (or see `halton-meter status` above for why the core is down)")
        return Row("writes", "writes", "skip", "no core running")
    if stats is None:
        return Row("writes", "writes", "warn", "no counters published yet")
    if stats["age_s"] > STALE_SECONDS:
        return Row("writes", "writes", "warn", f"counters are {stats['age_s']:.0f} s old: the core may be wedged; "
                                               f"{held}", fix="halton-meter restart")
    last_error, last_at = writer.get("last_error"), writer.get("last_error_at")
    if last_at and writer.get("last_success_at") and writer["last_success_at"] > last_at and not pending:
        last_error = None  # a write has succeeded since and nothing waits: recovered
    if last_error and last_at and time.time() - last_at < 60:
        return Row("writes", "writes", "fail", f"last write failed {_ago(time.time() - last_at)}: {last_error}; {held}",
                   fix="free disk space or release the database lock; rows are kept and retried")
    if writer.get("journal_problem"):
        return Row("writes", "writes", "warn", f"{writer['journal_problem']}; {held}",
                   fix=f"free space on the disk holding {paths.home}, or make {paths.spool} writable")
    if dropped:
        return Row("writes", "writes", "warn", f"{dropped} record(s) could not be queued (counted as gaps)")
    if pending > PENDING_WARN:
        return Row("writes", "writes", "warn", f"writes are behind: {held}")
    if writer.get("recovered") is False:
        return Row("writes", "writes", "warn", f"replaying what the previous core left: {held}")
    return Row("writes", "writes", "ok", f"{writer.get('committed', 0)} committed, {pending} pending")


def _held(pending: int, unsaved: int, dropped: int) -> str:
    """`12 row(s) pending, all journaled / 0 lost`: what waits, and whether a crash now would lose any."""
    safe = "all journaled" if not unsaved else f"{unsaved} not journaled (a crash now would lose them)"
    return f"{pending} row(s) pending, {safe} / {dropped} lost"


def _supervisor_row(ctx: InitContext, health: Any) -> Row:
    if ctx.state.installer is None and health.running:
        pid = health.runtime.get("pid")
        return Row("supervisor", "supervisor", "ok",
                   f"unsupervised: `halton-meter serve` in the foreground (pid {pid})")
    try:
        state = ctx.installer.service_state(ctx)
    except Exception as exc:  # a service manager that cannot be asked is a warning, not a crash
        return Row("supervisor", "supervisor", "warn", f"{ctx.installer.describe()}: cannot tell ({exc})")
    if state.running:
        return Row("supervisor", "supervisor", "ok", state.detail)
    if health.running:
        return Row("supervisor", "supervisor", "warn", f"{state.detail}, but a meter is serving (pid "
                                                        f"{health.runtime.get('pid')}) outside it", fix=state.fix)
    return Row("supervisor", "supervisor", "fail", state.detail, fix=state.fix)
