"""`halton-meter status`: one verdict and a row per component, from listener probes and published counters.

* HEALTHY: edge, core and API answer, writes are keeping up, the CA is valid.
* DEGRADED: traffic flows but metering is impaired (core down, writes failing, API down, CA expiring…).
* BROKEN: the proxy port does not answer, so clients pointed at it fail (or nothing runs at all).

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
from halton_meter.stats import CORE_STATS, EDGE_STATS, read_stats

STALE_SECONDS = 10.0
PENDING_WARN = 100


@dataclass
class Row:
    id: str
    title: str
    status: str
    summary: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status, "summary": self.summary, "fix": self.fix}


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def collect(ctx: InitContext) -> dict[str, Any]:
    paths = ctx.paths
    health = probe(paths)
    rows: list[Row] = []
    runtime = health.runtime or {}
    edge_port = runtime.get("edge_port", ctx.config.edge_port)

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
    gaps = read_stats(paths.run_dir / EDGE_STATS)
    if gaps and gaps.get("gaps"):
        rows.append(Row("gaps", "gaps", "warn", f"{gaps['gaps']} call(s) passed through unmetered since the edge "
                                                f"started (last: {gaps.get('last_gap_reason')})",
                        fix="keep the core running; `halton-meter report` counts them"))

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

    if not health.edge:
        verdict = "BROKEN"
    elif any(r.status in ("fail", "warn") for r in rows):
        verdict = "DEGRADED"
    else:
        verdict = "HEALTHY"
    worst = [r for r in rows if r.status in ("fail", "warn")]
    summary = "all components answer" if not worst else "; ".join(f"{r.title}: {r.summary}" for r in worst[:2])
    return {"verdict": verdict, "summary": summary, "rows": [r.to_json() for r in rows]}


DISK_FULL_BYTES = 1024 * 1024


def _writes_row(paths: Any, core_up: bool) -> Row:
    try:
        free = shutil.disk_usage(paths.home).free
    except OSError:
        free = None
    if free is not None and free < DISK_FULL_BYTES:
        stats = read_stats(paths.run_dir / CORE_STATS) or {}
        writer = stats.get("writer", {})
        return Row("writes", "writes", "fail",
                   f"disk full: {free} bytes free on the filesystem holding {paths.home}; "
                   f"{writer.get('pending', '?')} row(s) pending, {writer.get('spooled', '?')} spooled / "
                   f"{writer.get('dropped', '?')} lost", fix=f"free space on the disk holding {paths.home}; "
                                                           "pending rows are kept and written then")
    stats = read_stats(paths.run_dir / CORE_STATS)
    if stats is None:
        return Row("writes", "writes", "skip" if not core_up else "warn", "no counters published yet")
    writer = stats.get("writer", {})
    pending, dropped, spooled = writer.get("pending", 0), writer.get("dropped", 0), writer.get("spooled", 0)
    last_error, last_at = writer.get("last_error"), writer.get("last_error_at")
    if last_at and writer.get("last_success_at") and writer["last_success_at"] > last_at and not spooled:
        last_error = None  # a write has succeeded since: recovered
    if core_up and stats["age_s"] > STALE_SECONDS:
        return Row("writes", "writes", "warn", f"counters are {stats['age_s']:.0f} s old: the core may be wedged",
                   fix="halton-meter restart")
    if last_error and last_at and time.time() - last_at < 60:
        return Row("writes", "writes", "fail",
                   f"last write failed {_ago(time.time() - last_at)}: {last_error}; {pending} row(s) pending, "
                   f"{spooled} spooled / {dropped} lost",
                   fix="free disk space or release the database lock; rows are kept and retried")
    if dropped:
        return Row("writes", "writes", "warn", f"{dropped} record(s) could not be queued (counted as gaps)")
    if pending > PENDING_WARN:
        return Row("writes", "writes", "warn", f"{pending} rows pending (writes are behind)")
    if spooled:
        return Row("writes", "writes", "warn", f"writes delayed: {spooled} row(s) spooled, {pending} pending")
    return Row("writes", "writes", "ok", f"{writer.get('committed', 0)} committed, {pending} pending")


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
