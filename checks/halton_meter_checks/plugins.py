"""Plugins: every one loaded, or the one that failed named with the variable that switches it off; and
which cloud-hosted model services (Bedrock, Vertex AI, Azure OpenAI) are metered, on which hosts."""

from __future__ import annotations

from collections.abc import Callable

from halton_meter.plugin import DISABLE_ENV, Check, CheckContext, CheckResult, hookimpl
from halton_meter_checks._support import provider_hosts

CLOUDS = {"bedrock": "Bedrock", "vertex": "Vertex AI", "azure-openai": "Azure OpenAI"}


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


def check_clouds(ctx: CheckContext) -> CheckResult:
    """The cloud services metered and their host patterns; a built-in cloud provider switched off warns
    (its calls pass through unmetered)."""
    hosts = provider_hosts(ctx)
    metered = {name: hosts[name] for name in CLOUDS if name in hosts}
    details = {"metered": {name: list(patterns) for name, patterns in metered.items()},
               "not_metered": [name for name in CLOUDS if name not in hosts]}
    if not metered:
        return CheckResult("warn", "no cloud provider is metered: Bedrock, Vertex AI and Azure OpenAI calls pass "
                           "through unmetered", fix=f"unset {DISABLE_ENV} (or remove the cloud plugins from it)",
                           details=details)
    text = "; ".join(f"{CLOUDS[name]} ({', '.join(patterns)})" for name, patterns in metered.items())
    if details["not_metered"]:
        off = ", ".join(CLOUDS[name] for name in details["not_metered"])
        return CheckResult("warn", f"metered: {text}; not metered: {off}",
                           fix=f"remove {', '.join(details['not_metered'])} from {DISABLE_ENV}", details=details)
    return CheckResult("ok", f"metered: {text}", details=details)


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.plugins", "plugins", check_plugins))
    register(Check("check.clouds", "cloud providers", check_clouds, requires=("check.plugins",)))
