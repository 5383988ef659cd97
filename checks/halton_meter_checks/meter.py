"""The running meter: the edge (the proxy port tools use), the core behind it, the loopback API, and the
service that keeps them up."""

from __future__ import annotations

from collections.abc import Callable

from halton_meter.plugin import (
    CORE_STATS,
    Check,
    CheckContext,
    CheckResult,
    SystemState,
    __version__,
    api_healthy,
    core_answers,
    core_state,
    edge_answers,
    hookimpl,
    pid_alive,
    port_answers,
    read_only_init_context,
    read_stats,
)
from halton_meter_checks._support import ago, runtime

STALE_STATS_S = 10.0
"""Counters are published every 2 s; older than this means the process is gone or wedged."""


def _start_fix(ctx: CheckContext) -> str:
    from halton_meter.plugin import WRITABLE_FIX, writable_problem

    problem = writable_problem(ctx.paths.home)
    if problem is not None:  # nothing init or start could do about that
        return f"{problem}: {WRITABLE_FIX}"
    if getattr(ctx.state, "mode", None):
        return "halton-meter start"
    return "halton-meter init  (installs and starts the meter as a service), or `halton-meter serve` in a terminal"


def check_edge(ctx: CheckContext) -> CheckResult:
    data = runtime(ctx)
    if data is None:
        return CheckResult("fail", f"no meter is running for {ctx.paths.home} (no {ctx.paths.runtime.name})",
                           fix=_start_fix(ctx))
    port, pid = data["edge_port"], data.get("pid")
    details = {"edge_port": port, "api_port": data.get("api_port"), "pid": pid, "version": data.get("version")}
    answers = port_answers(port)
    if not pid_alive(pid):
        if answers:
            return CheckResult("fail", f"127.0.0.1:{port} answers, but the meter that wrote {ctx.paths.runtime} "
                               f"(pid {pid}) is gone: another process holds the port", fix=_start_fix(ctx),
                               details=details)
        return CheckResult("fail", f"the meter (pid {pid}) has exited; {ctx.paths.runtime} is stale",
                           fix=_start_fix(ctx), details=details)
    if not answers:
        return CheckResult("fail", f"the meter (pid {pid}) runs but its proxy port 127.0.0.1:{port} does not answer",
                           fix="halton-meter restart  (why: halton-meter logs)", details=details)
    if not edge_answers(port):
        return CheckResult("fail", f"127.0.0.1:{port} accepts connections but the proxy does not answer (stopped or "
                           "wedged): every client pointed at it waits", fix="halton-meter restart  (why: halton-meter "
                           "logs)", details=details)
    version = data.get("version")
    if version and version != __version__:
        return CheckResult("warn", f"listening on 127.0.0.1:{port}, but the running meter is version {version} and "
                           f"this command is {__version__}", fix="halton-meter restart", details=details)
    return CheckResult("ok", f"listening on 127.0.0.1:{port} (pid {pid})", details=details)


def check_core(ctx: CheckContext) -> CheckResult:
    """Asks the core the same canary question the edge asks before every metered call: a frozen or wedged
    core fails here exactly when calls are passing it by."""
    state = core_state(ctx.paths)
    unmetered = "provider calls pass through unmetered (counted as gaps) until it is back"
    fix = "halton-meter restart  (why it stopped: halton-meter logs)"
    failure = read_stats(ctx.paths.run_dir / "core-error.json")
    if state is None or not pid_alive(state.get("pid")):
        if failure and failure.get("message"):
            return CheckResult("fail", f"cannot start (exit {failure.get('exit_code')}): {failure['message']}; "
                               f"{unmetered}", fix="fix what the message names; the supervisor retries",
                               details={"exit_code": failure.get("exit_code")})
        if state is None:
            return CheckResult("fail", f"the core is not running (no {ctx.paths.core_state}): {unmetered}", fix=fix)
    assert state is not None
    port, pid = state["port"], state.get("pid")
    details = {"port": port, "pid": pid}
    if not pid_alive(pid):
        return CheckResult("fail", f"the core (pid {pid}) has exited: {unmetered}; the supervisor restarts it with "
                           "backoff", fix=fix, details=details)
    if not core_answers(ctx.paths):
        return CheckResult("fail", f"the core (pid {pid}) does not answer the edge's canary on 127.0.0.1:{port} "
                           f"(stopped or wedged): {unmetered}", fix=fix, details=details)
    stats = read_stats(ctx.paths.run_dir / CORE_STATS)
    if stats is not None and stats.get("pid") == pid and stats["age_s"] > STALE_STATS_S:
        return CheckResult("warn", f"the core answers on 127.0.0.1:{port} but has not published its counters for "
                           f"{ago(stats['age_s'])} (wedged?)", fix=fix, details=details)
    writer = (stats.get("writer") or {}) if stats is not None and stats.get("pid") == pid else {}
    hook_errors = int(writer.get("hook_errors") or 0)
    if hook_errors:  # calls are metered and stored; a plugin listening for them failed (halton_usage_recorded)
        details["hook_errors"] = hook_errors
        return CheckResult("warn", f"metering (internal port {port}, pid {pid}), but a plugin's halton_usage_recorded "
                           f"hook failed {hook_errors} time(s) since the core started (those calls are stored)",
                           fix="halton-meter logs  (names the error); fix or disable the plugin "
                               "(HALTON_METER_DISABLE_PLUGINS=NAME), then halton-meter restart", details=details)
    cores = _cores(ctx)
    if cores > 1:
        details["cores"] = cores
        silent = [i for i in range(1, cores) if not core_answers(ctx.paths, worker=i)]
        if silent:
            details["silent_workers"] = silent
            names = ", ".join(str(i) for i in silent)
            return CheckResult("warn", f"metering, but core worker {names} of {cores - 1} does not answer (starting, "
                               "restarting or wedged): the other cores take its calls", fix=fix, details=details)
        return CheckResult("ok", f"metering on {cores} cores (the first: internal port {port}, pid {pid})",
                           details=details)
    return CheckResult("ok", f"metering (internal port {port}, pid {pid})", details=details)


def _cores(ctx: CheckContext) -> int:
    """How many cores the running `serve` started (its runtime.json), 1 when it does not say."""
    try:
        return max(1, int((runtime(ctx) or {}).get("cores") or 1))
    except (ValueError, TypeError):
        return 1


def check_api(ctx: CheckContext) -> CheckResult:
    data = runtime(ctx) or {}
    port = data.get("api_port")
    if not isinstance(port, int):
        return CheckResult("fail", f"{ctx.paths.runtime} names no API port", fix="halton-meter restart")
    if api_healthy(port):
        return CheckResult("ok", f"/health answers on 127.0.0.1:{port}", details={"api_port": port})
    return CheckResult("fail", f"the API on 127.0.0.1:{port} does not answer /health (the dashboard and scripts "
                       "reading /v1/calls, /v1/report or /v1/stats need it; metering goes on)",
                       fix="halton-meter restart  (why: halton-meter logs)",
                       details={"api_port": port})


def _state(ctx: CheckContext) -> tuple[SystemState | None, str | None]:
    if ctx.state is not None:
        return ctx.state, None
    from halton_meter.plugin import STATE_FILE, HaltonError, SystemState

    try:
        return SystemState.load(ctx.paths.home / STATE_FILE), None
    except HaltonError as exc:
        return None, exc.message


def check_supervisor(ctx: CheckContext) -> CheckResult:
    state, error = _state(ctx)
    if error is not None:
        from halton_meter.plugin import STATE_FILE

        path = ctx.paths.home / STATE_FILE
        return CheckResult("fail", error, fix=f"mv {path} {path}.broken && halton-meter init")
    data = runtime(ctx)
    if state is None or not state.mode:
        if data is not None and pid_alive(data.get("pid")):
            return CheckResult("warn", f"no service installed: the meter runs under `halton-meter serve` (pid "
                               f"{data.get('pid')}) and stops with it", fix="halton-meter init  (installs a service "
                               "that starts at login and restarts the meter)", details={"mode": None})
        return CheckResult("warn", "no service installed (`halton-meter init` has not run)",
                           fix="halton-meter init", details={"mode": None})
    if ctx.installer is None:
        return CheckResult("fail", "no installer plugin handles this platform, so the service cannot be managed",
                           fix="halton-meter plugins  (an installer plugin may have failed to load)",
                           details={"mode": state.mode})
    # service_state only reads (systemctl is-active, launchctl print, a pid): the init context is its input.
    init_ctx = read_only_init_context(ctx.paths, ctx.config, ctx.installer, ctx.platform, state, ctx.runner)
    service = ctx.installer.service_state(init_ctx)
    details = {"mode": state.mode, "installer": ctx.installer.id, "installed": service.installed,
               "running": service.running}
    if state.installer and state.installer != ctx.installer.id:
        return CheckResult("warn", f"init set up {state.installer}, but this machine now uses {ctx.installer.id}",
                           fix="halton-meter init", details=details)
    if not service.installed:
        return CheckResult("fail", f"{service.detail}: the service init installed is gone",
                           fix=service.fix or "halton-meter init", details=details)
    if not service.running:
        return CheckResult("fail", service.detail, fix=service.fix or "halton-meter start", details=details)
    return CheckResult("ok", f"{service.detail} ({state.mode} mode)", details=details)


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.edge", "proxy (edge)", check_edge, status_row="edge"))
    register(Check("check.core", "core (mitmproxy)", check_core, requires=("check.edge",), status_row="core"))
    register(Check("check.api", "loopback API", check_api, requires=("check.edge",), status_row="api"))
    register(Check("check.supervisor", "service", check_supervisor, requires=("check.home",), status_row="supervisor"))
