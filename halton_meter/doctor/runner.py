"""The doctor: run every registered check concurrently, each with a time limit, and report in a fixed order.

Checks come from plugins (`halton_register_checks`) and are read-only; repairs go through `init`. The
runner guarantees what a check cannot:

* a check that raises, returns something other than a `CheckResult`, or runs past its time limit becomes
  an `error` row, and every other check still runs;
* a check runs only after the checks it `requires`; if one of them did not pass (fail, error or skip) it
  is skipped with a line naming that requirement, so one root cause is reported once;
* rows come out in the registry's `requires` order (ties broken by id), whatever order they finished in.

Checks run on daemon threads, not a ThreadPoolExecutor: an executor joins its threads at interpreter exit,
so one hung check would keep `halton-meter doctor` from exiting after it had already reported the timeout.

`--curl` adds one opt-in row, `check.end-to-end`, which is not read-only (it sends a real request through
the proxy and its self-test record lands in the database) and so is not a plugin check.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from halton_meter.errors import ConfigError, ExitCode, HaltonError, PluginError, UsageError
from halton_meter.types import Check, CheckContext, CheckResult

SCHEMA_VERSION = 1
"""Version of the `doctor --json` document; bumped only when a field changes meaning or disappears."""
STATUSES: tuple[str, ...] = ("ok", "warn", "fail", "skip", "error")
PASSING = ("ok", "warn")
"""A requirement that ended with one of these lets the checks that require it run."""
DEFAULT_TIMEOUT = 5.0
PROBE_ID = "check.end-to-end"
PROBE_TIMEOUT = 30.0
PROBE_CURL_MAX_TIME = 10
PROBE_RECORD_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One row of the report: a check's result plus what the runner knows (its id, title, duration)."""

    id: str
    title: str
    status: str
    summary: str
    fix: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    duration_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status, "summary": self.summary,
                "fix": self.fix, "details": dict(self.details), "duration_ms": self.duration_ms}


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for finding in self.findings:
            counts[finding.status] += 1
        return counts

    @property
    def has_issues(self) -> bool:
        return any(f.status in ("fail", "error") for f in self.findings)

    @property
    def exit_code(self) -> ExitCode:
        """0 with no `fail` or `error` (warnings allowed), 6 (DEGRADED) otherwise."""
        return ExitCode.DEGRADED if self.has_issues else ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {"version": SCHEMA_VERSION, "verdict": "issues" if self.has_issues else "ok",
                "summary": self.counts(), "checks": [f.to_json() for f in self.findings]}


def _plain(details: Any) -> dict[str, Any]:
    """Details as JSON-safe data (a check may put paths or datetimes in them)."""
    if not isinstance(details, Mapping):
        return {"value": str(details)}
    try:
        return json.loads(json.dumps(dict(details), default=str))
    except (TypeError, ValueError):
        return {str(k): str(v) for k, v in details.items()}


def _finding(check: Check, result: CheckResult, seconds: float) -> Finding:
    return Finding(check.id, check.title, result.status, str(result.summary), result.fix, _plain(result.details),
                   int(round(seconds * 1000)))


# --------------------------------------------------------------------------------------------------
# Running checks
# --------------------------------------------------------------------------------------------------


FIRST = "check.config"
"""Every other check reads the configuration, so a broken config.toml is the first row shown."""


def ordered_checks(checks: Any) -> list[Check]:
    """The registry's `requires` order, configuration first. A requirement on a check that is not
    registered (its plugin was disabled) or a cycle cannot stop the doctor: then unknown ids are ignored,
    and a cycle falls back to ids."""
    from halton_meter.host import topological_order

    try:
        ordered = list(checks.ordered())
    except PluginError:
        by_id = {c.id: c for c in checks}
        requires = {c.id: tuple(r for r in c.requires if r in by_id) for c in by_id.values()}
        try:
            order = topological_order(requires, "check")
        except PluginError:
            order = sorted(requires)
        ordered = [by_id[i] for i in order]
    return sorted(ordered, key=lambda c: c.id != FIRST)  # stable: everything else keeps its order


def _crash_fix(owner: str | None) -> str:
    if not owner or owner.startswith("checks.") or owner == "halton-meter":
        return "a bug in Halton Meter: please report it with this line (`halton-meter doctor --json` has details)"
    return (f"a bug in the plugin {owner}: upgrade or report it; to run without it: "
            f"export HALTON_METER_DISABLE_PLUGINS={owner}")


def _run_one(check: Check, ctx: CheckContext, done: queue.Queue[tuple[str, CheckResult, float]],
             owner: str | None) -> None:
    started = time.perf_counter()
    try:
        result = check.run(ctx)
        if not isinstance(result, CheckResult) or result.status not in STATUSES:
            result = CheckResult("error", f"the check returned {result!r:.120}, not a CheckResult with a known status",
                                 fix=_crash_fix(owner))
    except BaseException as exc:  # a crashing check is an error row, never the end of the doctor
        result = CheckResult("error", f"the check crashed: {type(exc).__name__}: {exc}", fix=_crash_fix(owner))
    done.put((check.id, result, time.perf_counter() - started))


def select(checks: Sequence[Check], only: Iterable[str] = ()) -> tuple[list[Check], set[str]]:
    """(checks to run, ids to show): `only` plus everything they transitively require, which runs so the
    selected rows mean the same as in a full report; a requirement is shown only when it blocked a selected
    row. Unknown ids are a usage error."""
    by_id = {c.id: c for c in checks}
    wanted = list(dict.fromkeys(only))
    if not wanted:
        return list(checks), set(by_id)
    unknown = [i for i in wanted if i not in by_id]
    if unknown:
        raise UsageError(f"unknown check id {', '.join(unknown)} for --only; known ids: {', '.join(sorted(by_id))}")
    needed: set[str] = set()
    stack = list(wanted)
    while stack:
        item = stack.pop()
        if item in needed:
            continue
        needed.add(item)
        stack.extend(r for r in by_id[item].requires if r in by_id)
    return [c for c in checks if c.id in needed], set(wanted)


def run_checks(
    checks: Sequence[Check],
    ctx: CheckContext,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    timeouts: Mapping[str, float] | None = None,
    only: Iterable[str] = (),
    owners: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Run `checks` (already in display order) concurrently; return one Finding per shown check, in order."""
    to_run, shown = select(checks, only)
    by_id = {c.id: c for c in to_run}
    owners = owners or {}
    limits = {c.id: (timeouts or {}).get(c.id, timeout) for c in to_run}
    results: dict[str, Finding] = {}
    started: dict[str, float] = {}
    done: queue.Queue[tuple[str, CheckResult, float]] = queue.Queue()

    def schedule() -> None:
        progressed = True
        while progressed:
            progressed = False
            for check in to_run:
                if check.id in results or check.id in started:
                    continue
                requires = [r for r in check.requires if r in by_id]
                if any(r not in results for r in requires):
                    continue
                blocked = [results[r] for r in requires if results[r].status not in PASSING]
                if blocked:
                    why = " and ".join(f"{b.title} {_verb(b.status)}" for b in blocked)
                    results[check.id] = Finding(check.id, check.title, "skip", f"skipped because {why}",
                                                details={"blocked_by": [b.id for b in blocked]})
                    progressed = True
                    continue
                started[check.id] = time.monotonic()
                threading.Thread(target=_run_one, args=(check, ctx, done, owners.get(check.id)),
                                 name=f"doctor:{check.id}", daemon=True).start()

    while len(results) < len(to_run):
        schedule()
        running = [i for i in started if i not in results]
        if not running:
            for check in to_run:  # only a requirement cycle gets here
                results.setdefault(check.id, Finding(check.id, check.title, "error",
                                                     "its requires form a cycle, so it never ran",
                                                     fix=_crash_fix(owners.get(check.id))))
            break
        deadline = min(started[i] + limits[i] for i in running)
        try:
            check_id, result, seconds = done.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            now = time.monotonic()
            for i in running:
                if now >= started[i] + limits[i]:
                    results[i] = Finding(i, by_id[i].title, "error",
                                         f"the check did not finish within {limits[i]:g} s (timed out)",
                                         fix=_crash_fix(owners.get(i)), duration_ms=int(limits[i] * 1000))
            continue
        if check_id not in results:  # a result arriving after its timeout row is dropped
            results[check_id] = _finding(by_id[check_id], result, seconds)
    # A selected row skipped because a hidden requirement did not pass brings that row along: it holds the
    # cause and the fix, and it counts towards the exit code (`--only check.core` on a stopped meter is not 0).
    stack = list(shown)
    while stack:
        for blocker in results[stack.pop()].details.get("blocked_by", ()):
            if blocker not in shown:
                shown.add(blocker)
                stack.append(blocker)
    return [results[c.id] for c in to_run if c.id in shown]


def _verb(status: str) -> str:
    return {"fail": "failed", "error": "could not run", "skip": "was skipped"}.get(status, status)


# --------------------------------------------------------------------------------------------------
# The context and the whole doctor
# --------------------------------------------------------------------------------------------------


def check_context(runner: Any | None = None, environ: Mapping[str, str] | None = None) -> tuple[CheckContext, Any]:
    """(CheckContext, PluginHost) for this home. A config that does not load is reported, not raised:
    `config_error` holds its one line and checks that require `check.config` are skipped."""
    from halton_meter.config import load_config
    from halton_meter.host import PluginHost
    from halton_meter.lifecycle.commands import SystemRunner
    from halton_meter.lifecycle.context import STATE_FILE
    from halton_meter.lifecycle.platforms import detect_platform
    from halton_meter.lifecycle.state import SystemState
    from halton_meter.paths import Paths

    paths = Paths.from_env()
    config, config_error = None, None
    try:
        config = load_config(paths)
    except ConfigError as exc:
        config_error = exc.message
    try:
        host = PluginHost(config).load().validate_config()
    except ConfigError as exc:  # a plugin rejected its [plugins.NAME] block, or [prices] names no provider
        config, config_error = None, exc.message
        host = PluginHost(None).load()
    _ = host.registries  # run the register hooks so registration errors show in the plugin list
    runner = runner or SystemRunner()
    platform = installer = None
    try:
        platform = detect_platform(runner)
        installer = host.hook.halton_platform_installer(platform=platform)
    except Exception:  # a broken installer plugin shows in check.plugins; the service check says "none"
        installer = None
    try:
        state = SystemState.load(paths.home / STATE_FILE)
    except HaltonError:
        state = None  # check.supervisor reads it again and reports why
    ctx = CheckContext(paths=paths, config=config, config_error=config_error, plugins=tuple(host.plugins.values()),
                       runner=runner, installer=installer, state=state, platform=platform,
                       environ=dict(os.environ if environ is None else environ),
                       attributors=tuple(_attributors(host)), cwd=_cwd())
    return ctx, host


def _attributors(host: Any) -> list[Any]:
    try:
        return list(host.registries.attributors.ordered())
    except Exception:  # a cycle or unknown id: the plugins row says so; this row then uses none
        return []


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the directory was deleted under the shell
        return None


def run_doctor(
    only: Iterable[str] = (),
    *,
    curl: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    runner: Any | None = None,
    environ: Mapping[str, str] | None = None,
) -> Report:
    only = tuple(only)
    curl = curl or PROBE_ID in only
    ctx, host = check_context(runner, environ)
    registry = host.registries.checks
    known = {*registry.ids(), PROBE_ID}
    unknown = [i for i in dict.fromkeys(only) if i not in known]
    if unknown:
        raise UsageError(f"unknown check id {', '.join(unknown)} for --only; known ids: {', '.join(sorted(known))}")
    checks = ordered_checks(registry)
    owners = {c.id: registry.owner(c.id) for c in checks}
    timeouts: dict[str, float] = {}
    if curl:
        probe = end_to_end_check(ctx.runner, requires=("check.edge",) if "check.edge" in registry else ())
        checks.append(probe)
        owners[probe.id] = "halton-meter"
        timeouts[probe.id] = max(timeout, PROBE_TIMEOUT)
    return Report(tuple(run_checks(checks, ctx, timeout=timeout, timeouts=timeouts, only=only, owners=owners)))


# --------------------------------------------------------------------------------------------------
# --curl: one real request through edge and core to the loopback canary
# --------------------------------------------------------------------------------------------------

HOPS = ("edge", "tls", "core", "record")
HOP_FIX = {
    "edge": "halton-meter start  (or `halton-meter restart`; why it is down: halton-meter logs)",
    "tls": "halton-meter init  (rewrites the trust bundle), then `halton-meter restart`",
    "core": "halton-meter restart  (why the core failed: halton-meter logs)",
    "record": "halton-meter doctor --only check.db.writes  (why writes fail), and halton-meter logs",
}
_MARKER = "__halton_meter_probe__"
_TLS_EXITS = {35, 51, 53, 54, 58, 59, 60, 66, 77, 80, 82, 83, 90, 91}
"""curl exit codes that mean the TLS handshake or certificate verification failed."""


def _hop(name: str, status: str, detail: str) -> dict[str, str]:
    return {"hop": name, "status": status, "detail": detail}


def _curl_argv(curl: str, paths: Any, port: int) -> list[str]:
    from halton_meter.lifecycle.selftest import CANARY_URL

    body = json.dumps({"model": "halton-meter-selftest", "nonce": str(uuid.uuid4())})
    return [curl, "-sS", "-v", "--noproxy", "", "--proxy", f"http://127.0.0.1:{port}",
            "--cacert", str(paths.client_bundle), "--max-time", str(PROBE_CURL_MAX_TIME),
            "-X", "POST", "-H", "content-type: application/json", "-A", "halton-meter-selftest", "--data", body,
            "-D", "-", "-o", os.devnull,
            "-w", f"{_MARKER} connect=%{{http_connect}} code=%{{http_code}} verify=%{{ssl_verify_result}}",
            CANARY_URL]


def _curl_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("curl: (")]
    return lines[-1] if lines else (stderr.strip().splitlines() or ["no output"])[-1]


def curl_hops(result: Any, port: int) -> list[dict[str, str]]:
    """Read what happened at each hop from curl's exit code, its `-w` line, headers and `-v` trace."""
    from halton_meter.ca import CA_COMMON_NAME
    from halton_meter.lifecycle.selftest import CANARY_HOST

    stdout, stderr, code = result.stdout or "", result.stderr or "", result.returncode
    found = re.search(rf"{_MARKER} connect=(\d+) code=(\d+) verify=(\d+)", stdout)
    connect, status, verify = (int(g) for g in found.groups()) if found else (0, 0, -1)
    hops: list[dict[str, str]] = []
    if connect == 200:
        hops.append(_hop("edge", "ok", f"CONNECT {CANARY_HOST}:443 accepted by 127.0.0.1:{port}"))
    else:
        why = f"answered the CONNECT with HTTP {connect}" if connect else _curl_error(stderr)
        hops.append(_hop("edge", "fail", f"127.0.0.1:{port} {why}" if connect else f"127.0.0.1:{port}: {why}"))
        return hops
    issuer_line = re.search(r"^\*\s+issuer:\s*(.+)$", stderr, re.M)
    issuer = issuer_line.group(1).strip() if issuer_line else "an unknown issuer"
    if code in _TLS_EXITS or (verify not in (0, -1)):
        hops.append(_hop("tls", "fail", f"TLS to {CANARY_HOST} failed ({_curl_error(stderr)}); certificate issued by "
                         f"{issuer}"))
        return hops
    if issuer_line and CA_COMMON_NAME not in issuer:
        hops.append(_hop("tls", "fail", f"certificate issued by {issuer}, not this meter's CA: something else "
                         "intercepts TLS"))
        return hops
    hops.append(_hop("tls", "ok", f"certificate for {CANARY_HOST} issued by {issuer}, trusted via the bundle"))
    answered_by_core = re.search(r"^x-halton-meter:\s*selftest\s*$", stdout, re.M | re.I) is not None
    if code == 0 and status == 200 and answered_by_core:
        hops.append(_hop("core", "ok", "answered HTTP 200 itself (x-halton-meter: selftest)"))
    elif code == 28:
        hops.append(_hop("core", "fail", f"no answer within {PROBE_CURL_MAX_TIME} s"))
    elif code != 0:
        hops.append(_hop("core", "fail", f"the request failed: {_curl_error(stderr)}"))
    else:
        hops.append(_hop("core", "fail", f"HTTP {status} from something other than the core"))
    return hops


def python_hops(paths: Any, port: int) -> list[dict[str, str]]:
    """The same request with Python's http.client (`halton_meter.lifecycle.selftest`), when curl is absent."""
    from halton_meter.lifecycle.selftest import canary_request

    try:
        answers = canary_request(paths, port, timeout=PROBE_CURL_MAX_TIME)
    except HaltonError as exc:
        message = exc.message
        hop = "edge" if message.startswith("the proxy") else "tls" if message.startswith("TLS") else "core"
        done = HOPS[: HOPS.index(hop)]
        return [_hop(h, "ok", "passed") for h in done] + [_hop(hop, "fail", message)]
    return [_hop(h, "ok", answers[h]) for h in ("edge", "tls", "core")]


def probe_through_proxy(ctx: CheckContext, runner: Any) -> CheckResult:
    from halton_meter.lifecycle.selftest import utc_stamp, wait_for_record
    from halton_meter.serve.runtime import read_runtime

    data = read_runtime(ctx.paths)
    if data is None:
        return CheckResult("fail", f"no meter is running for {ctx.paths.home}", fix=HOP_FIX["edge"])
    port = int(data["edge_port"])
    since = utc_stamp(-1)
    details: dict[str, Any] = {}
    curl = runner.which("curl") if runner is not None else None
    if curl:
        argv = _curl_argv(curl, ctx.paths, port)
        details["tool"], details["command"] = "curl", shlex.join(argv)
        hops = curl_hops(runner.run(argv, check=False, timeout=PROBE_CURL_MAX_TIME + 5), port)
    else:
        details["tool"] = "python"
        hops = python_hops(ctx.paths, port)
    if all(h["status"] == "ok" for h in hops) and len(hops) == 3:
        try:
            row = wait_for_record(ctx.paths, since, timeout=PROBE_RECORD_TIMEOUT)
            hops.append(_hop("record", "ok", f"landed in {ctx.paths.db} (id {str(row['id'])[:8]}…)"))
        except HaltonError as exc:
            hops.append(_hop("record", "fail", exc.message))
    reached = {h["hop"] for h in hops}
    hops += [_hop(h, "skip", "not reached") for h in HOPS if h not in reached]
    details["hops"] = hops
    failed = next((h for h in hops if h["status"] == "fail"), None)
    if failed is None:
        return CheckResult("ok", f"edge → TLS → core → database: every hop passed ({details['tool']})",
                           details=details)
    return CheckResult("fail", f"{failed['hop']} hop failed: {failed['detail']}", fix=HOP_FIX[failed["hop"]],
                       details=details)


def end_to_end_check(runner: Any, requires: tuple[str, ...] = ("check.edge",)) -> Check:
    return Check(PROBE_ID, "end-to-end probe", lambda ctx: probe_through_proxy(ctx, runner), requires=requires)


__all__ = [
    "DEFAULT_TIMEOUT",
    "PROBE_ID",
    "SCHEMA_VERSION",
    "STATUSES",
    "Finding",
    "Report",
    "check_context",
    "curl_hops",
    "end_to_end_check",
    "ordered_checks",
    "run_checks",
    "run_doctor",
    "select",
]
