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

`--curl` adds one opt-in row, `check.end-to-end` (`doctor/curl.py`), which is not read-only (it sends a
real request through the proxy and its self-test record lands in the database) and so is not a plugin check.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from halton_meter.doctor.curl import PROBE_ID, PROBE_TIMEOUT, end_to_end_check
from halton_meter.errors import ConfigError, ExitCode, HaltonError, PluginError, UsageError
from halton_meter.types import Check, CheckContext, CheckResult

SCHEMA_VERSION = 1
"""Version of the `doctor --json` document; bumped only when a field changes meaning or disappears."""
STATUSES: tuple[str, ...] = ("ok", "warn", "fail", "skip", "error")
PASSING = ("ok", "warn")
"""A requirement that ended with one of these lets the checks that require it run."""
DEFAULT_TIMEOUT = 5.0


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
                       attributors=tuple(_attributors(host)), cwd=_cwd(), sync_targets=tuple(_sync_targets(host)))
    return ctx, host


def _sync_targets(host: Any) -> list[Any]:
    try:
        return list(host.registries.sync_targets)
    except Exception:  # a broken plugin shows in check.plugins
        return []


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


__all__ = [
    "DEFAULT_TIMEOUT",
    "PROBE_ID",
    "SCHEMA_VERSION",
    "STATUSES",
    "Finding",
    "Report",
    "check_context",
    "end_to_end_check",
    "ordered_checks",
    "run_checks",
    "run_doctor",
    "select",
]
