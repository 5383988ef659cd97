"""Checks on the home directory, the configuration and the CA: the ground everything else stands on."""

from __future__ import annotations

import stat
from typing import Any

from halton_meter import hookimpl
from halton_meter.types import Check, CheckContext, CheckResult


def check_config(ctx: CheckContext) -> CheckResult:
    if ctx.config_error:
        return CheckResult("error", ctx.config_error, fix=f"edit {ctx.paths.config} and fix the line named")
    if ctx.config is None or ctx.config.source is None:
        return CheckResult("ok", "no config.toml; using defaults")
    return CheckResult("ok", f"{ctx.config.source} is valid")


def check_home(ctx: CheckContext) -> CheckResult:
    home = ctx.paths.home
    if not home.exists():
        return CheckResult("warn", f"{home} does not exist yet", fix="halton-meter serve  (creates it)")
    mode = stat.S_IMODE(home.stat().st_mode)
    if mode & 0o077:
        return CheckResult("error", f"{home} is readable by others (mode {mode:04o})", fix=f"chmod 700 {home}")
    return CheckResult("ok", f"{home} (mode {mode:04o})")


def check_ca(ctx: CheckContext) -> CheckResult:
    from halton_meter.ca import CAProblem, inspect_ca

    try:
        info = inspect_ca(ctx.paths)
    except CAProblem as exc:
        return CheckResult("error", str(exc), fix=exc.fix)
    if info is None:
        return CheckResult("warn", "no CA yet", fix="halton-meter serve  (creates one)")
    return CheckResult("ok", f"CA valid until {info['not_after']}", details=info)


@hookimpl
def halton_register_checks(register: Any) -> None:
    register(Check("check.config", "configuration", check_config))
    register(Check("check.home", "home directory", check_home, requires=("check.config",)))
    register(Check("check.ca", "certificate authority", check_ca, requires=("check.home",)))
