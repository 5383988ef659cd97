"""Plugins: every one loaded, or the one that failed named with the variable that switches it off."""

from __future__ import annotations

from collections.abc import Callable

from halton_meter.plugin import DISABLE_ENV, Check, CheckContext, CheckResult, hookimpl


def check_plugins(ctx: CheckContext) -> CheckResult:
    plugins = list(ctx.plugins)
    broken = [p for p in plugins if p.status == "error"]
    disabled = [p for p in plugins if p.status == "disabled"]
    details = {"loaded": sum(p.status == "ok" for p in plugins), "disabled": [p.name for p in disabled],
               "errors": {p.name: p.error for p in broken}}
    if broken:
        already = [n.strip() for n in ctx.environ.get(DISABLE_ENV, "").split(",") if n.strip()]
        names = already + [p.name for p in broken if p.name not in already]
        third_party = [p for p in broken if p.source == "entry_point"]
        cause = (f"pip install -U the package providing {', '.join(p.name for p in third_party)}" if third_party
                 else "report the error: it is a bug in a built-in plugin")
        text = "; ".join(f"{p.name}: {p.error}" for p in broken)
        return CheckResult("fail", f"{len(broken)} plugin(s) failed: {text}",
                           fix=f"export {DISABLE_ENV}={','.join(names)}  (runs without it; to repair it, {cause})",
                           details=details)
    text = f"{details['loaded']} plugin(s) loaded"
    if disabled:
        text += f"; disabled: {', '.join(p.name for p in disabled)}"
    return CheckResult("ok", text, details=details)


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.plugins", "plugins", check_plugins))
