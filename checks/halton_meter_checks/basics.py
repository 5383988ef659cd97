"""The ground everything else stands on: the configuration, the home directory and the disk under it."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from halton_meter.plugin import Check, CheckContext, CheckResult, hookimpl

MiB = 1024 * 1024
GiB = 1024 * MiB
DISK_WARN_BYTES = 1 * GiB
DISK_FAIL_BYTES = 100 * MiB


def check_config(ctx: CheckContext) -> CheckResult:
    if ctx.config_error:
        from halton_meter.plugin import EDGE_STATS, pid_alive, read_runtime, read_stats

        running = pid_alive((read_runtime(ctx.paths) or {}).get("pid"))
        on_defaults = (read_stats(ctx.paths.run_dir / EDGE_STATS) or {}).get("config_error")
        tail = ("; the running edge passes traffic on the defaults" if running and on_defaults else
                "; the running meter keeps the configuration it loaded" if running else "")
        return CheckResult("fail", f"{ctx.config_error}: the meter cannot start or restart with it{tail}",
                           fix=f"edit {ctx.paths.config} where the message points, then run `halton-meter doctor` again",
                           details={"path": str(ctx.paths.config)})
    pending = _not_applied(ctx)
    if pending:
        return CheckResult("warn", pending, fix="halton-meter restart")
    if ctx.config is None or ctx.config.source is None:
        return CheckResult("ok", f"no {ctx.paths.config}: using the defaults")
    return CheckResult("ok", f"{ctx.config.source} is valid and in effect", details={"path": str(ctx.config.source)})


def _not_applied(ctx: CheckContext) -> str | None:
    """What the running meter published about config.toml: changes that wait for a restart, or an apply
    that failed. None when nothing runs or everything is in effect."""
    from halton_meter.plugin import CORE_STATS, EDGE_STATS, read_stats

    restart: set[str] = set()
    failed: list[str] = []
    for name in (CORE_STATS, EDGE_STATS):
        stats = read_stats(ctx.paths.run_dir / name) or {}
        state = stats.get("config") if stats.get("age_s", 99) < 30 else None
        if isinstance(state, dict):
            restart.update(state.get("restart_needed") or [])
            if state.get("error"):
                failed.append(str(state["error"]))
    if failed:
        return f"the running meter could not apply config.toml ({failed[0]}); it keeps the configuration it had"
    if restart:
        return f"{', '.join(sorted(restart))} changed in config.toml: takes effect after a restart"
    return None


def check_home(ctx: CheckContext) -> CheckResult:
    home = ctx.paths.home
    if not home.exists():
        return CheckResult("warn", f"{home} does not exist yet", fix="halton-meter init  (creates it, mode 0700)")
    if not home.is_dir():
        return CheckResult("fail", f"{home} is not a directory",
                           fix=f"mv {home} {home}.old && halton-meter init")
    st = home.stat()
    mode = stat.S_IMODE(st.st_mode)
    details = {"path": str(home), "mode": f"{mode:04o}"}
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return CheckResult("fail", f"{home} belongs to another user (uid {st.st_uid})",
                           fix=f"set HALTON_METER_HOME to a directory of your own, or: sudo chown -R $USER {home}",
                           details=details)
    if mode & 0o077:
        return CheckResult("fail", f"{home} is open to other users (mode {mode:04o}); it holds the CA key and "
                           "your usage", fix=f"chmod 700 {home}", details=details)
    from halton_meter.plugin import WRITABLE_FIX, writable_problem

    problem = writable_problem(home)
    if problem is not None:
        fix = f"chmod 700 {home}" if "not writable by you" in problem else WRITABLE_FIX
        return CheckResult("fail", f"{problem}: the meter cannot keep its database, CA or logs there", fix=fix,
                           details=details)
    return CheckResult("ok", f"{home} (mode {mode:04o})", details=details)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def check_disk(ctx: CheckContext) -> CheckResult:
    where = _existing(ctx.paths.home)
    usage = shutil.disk_usage(where)
    details = {"path": str(where), "free_bytes": usage.free, "total_bytes": usage.total}
    text = f"{_size(usage.free)} free on the filesystem holding {ctx.paths.home}"
    fix = (f"free space on the disk holding {ctx.paths.home} (the database, WAL and logs live there), or point "
           "HALTON_METER_HOME at a larger disk")
    if usage.free < DISK_FAIL_BYTES:
        return CheckResult("fail", f"only {text}: database writes will start failing", fix=fix, details=details)
    if usage.free < DISK_WARN_BYTES:
        return CheckResult("warn", f"only {text} (under 1 GiB)", fix=fix, details=details)
    return CheckResult("ok", text, details=details)


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.config", "configuration", check_config, status_row="config"))
    register(Check("check.home", "home directory", check_home))
    register(Check("check.disk", "disk space", check_disk, status_row="disk"))
