"""The environment of the shell running `doctor`: do its proxy variables send HTTPS to this meter, do its CA
variables trust the meter's certificates, and does NO_PROXY let provider calls bypass the meter?

Values of proxy variables are printed with any user and password removed; no other variable is printed
except NO_PROXY itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from halton_meter.plugin import (
    NO_PROXY,
    Check,
    CheckContext,
    CheckResult,
    hookimpl,
    pattern_covers,
    port_answers,
)
from halton_meter_checks._support import (
    CA_VARS,
    HTTPS_PROXY_VARS,
    effective_https_proxy,
    init_mode,
    meter_ports,
    parse_proxy,
    provider_hosts,
    redact_proxy,
)


def check_env_proxy(ctx: CheckContext) -> CheckResult:
    env = ctx.environ
    mode = init_mode(ctx)
    ports = meter_ports(ctx)
    found = effective_https_proxy(env)
    details: dict[str, Any] = {"mode": mode, "meter": ports.describe(),
                               "set": [name for name in HTTPS_PROXY_VARS if env.get(name)]}
    if found is None:
        if mode == "env":
            return CheckResult("ok", "no HTTPS proxy set in this shell (env mode): meter a tool by wrapping it, "
                               "`halton-meter run -- <tool>`", details=details)
        return CheckResult("warn", f"no HTTPS proxy set in this shell, though init ran in {mode} mode: tools started "
                           "from here are not metered", fix="open a new terminal (init set the variables for new "
                           "shells), or wrap the tool: halton-meter run -- <tool>", details=details)
    name, value = found
    shown = redact_proxy(value)
    details["variable"], details["value"] = name, shown
    target = parse_proxy(value)
    if target is None:
        return CheckResult("warn", f"{name}={shown} is not a proxy URL", fix=f"unset {name}", details=details)
    if target.loopback and target.port is not None and ports.ours(target.port):
        if ports.running is not None and target.port != ports.running:
            return CheckResult("fail", f"{name} points at 127.0.0.1:{target.port}, but the meter listens on "
                               f"127.0.0.1:{ports.running}: HTTPS calls from this shell fail",
                               fix="halton-meter init  (updates the variables), then open a new terminal",
                               details=details)
        if not port_answers(target.port):
            return CheckResult("fail", f"{name} points at the meter (127.0.0.1:{target.port}), which is not running: "
                               "HTTPS calls from this shell fail", fix="halton-meter start", details=details)
        unset_ca = [v for v in CA_VARS if not env.get(v)]
        if len(unset_ca) == len(CA_VARS):
            return CheckResult("warn", f"{name} points at the meter, but none of {', '.join(CA_VARS)} is set: tools "
                               "that do not use the OS trust store will reject the meter's certificates",
                               fix=f"export SSL_CERT_FILE={ctx.paths.client_bundle} "
                               f"NODE_EXTRA_CA_CERTS={ctx.paths.client_bundle}  (or use `halton-meter run -- <tool>`)",
                               details=details)
        return CheckResult("ok", f"{name} points at this meter (127.0.0.1:{target.port})", details=details)
    if target.loopback and not ports.ours(target.port):
        return CheckResult("warn", f"{name}={shown} is a local proxy, but not this meter ({ports.describe()})",
                           fix="unset HTTPS_PROXY https_proxy ALL_PROXY all_proxy, or wrap the tool: "
                           "halton-meter run -- <tool>", details=details)
    return CheckResult("warn", f"{name}={shown} sends HTTPS elsewhere: calls from this shell bypass the meter",
                       fix="unset HTTPS_PROXY https_proxy ALL_PROXY all_proxy, or wrap the tool: "
                       "halton-meter run -- <tool>", details=details)


def _entries(value: str) -> list[str]:
    return [e.strip() for e in value.replace(";", ",").split(",") if e.strip()]


def _normal(entry: str) -> str:
    entry = entry.strip().lower()
    if entry.startswith("*."):
        entry = entry[2:]
    entry = entry.lstrip(".")
    if entry.count(":") == 1:  # host:port (an IPv6 address has more colons and is left alone)
        entry = entry.split(":", 1)[0]
    return entry


def bypasses(entry: str, host_pattern: str) -> bool:
    """Whether a NO_PROXY entry sends (some of) the calls to `host_pattern` around the proxy."""
    entry = entry.strip()
    if entry == "*":
        return True
    pattern = host_pattern.lower()
    if pattern.count(":") == 1:
        pattern = pattern.split(":", 1)[0]
    wildcard = pattern.startswith("*.")
    base = pattern[2:] if wildcard else pattern
    norm = _normal(entry)
    if not norm:
        return False
    if base == norm or base.endswith("." + norm):
        return True
    if "*" in base:  # a label pattern: the entry names one of its hosts, or a domain above some of them
        return pattern_covers(base, norm)
    return wildcard and norm.endswith("." + base)


def _offending(value: str, hosts: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """NO_PROXY entry -> the metered hosts it bypasses."""
    found: dict[str, list[str]] = {}
    for entry in _entries(value):
        covered = [h for names in hosts.values() for h in names
                   if not h.endswith(".invalid") and bypasses(entry, h)]  # the self-test canary is not a provider
        if covered:
            found[entry] = covered
    return found


def _summarise(hosts: Iterable[str], limit: int = 3) -> str:
    items = sorted(set(hosts))
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_env_no_proxy(ctx: CheckContext) -> CheckResult:
    env = ctx.environ
    names = [n for n in ("NO_PROXY", "no_proxy") if env.get(n) is not None]
    if not names:
        return CheckResult("ok", "NO_PROXY is not set")
    hosts = provider_hosts(ctx)
    bad: dict[str, dict[str, list[str]]] = {}
    for name in names:
        offending = _offending(env[name], hosts)
        if offending:
            bad[name] = offending
    details: dict[str, Any] = {name: env[name] for name in names}
    if not bad:
        return CheckResult("ok", f"{names[0]}={env[names[0]]} leaves every metered host to the proxy", details=details)
    details["bypassed"] = {name: offending for name, offending in bad.items()}
    entries = sorted({entry for offending in bad.values() for entry in offending})
    covered = [h for offending in bad.values() for hs in offending.values() for h in hs]
    kept = [e for e in _entries(env[names[0]]) if e not in entries] or NO_PROXY.split(",")
    fix = " ".join(f"{name}={','.join(kept)}" for name in ("NO_PROXY", "no_proxy"))
    which = f"entry {entries[0]!r}" if len(entries) == 1 else f"entries {', '.join(repr(e) for e in entries)}"
    return CheckResult("warn", f"{' and '.join(bad)} {which} sends calls to {_summarise(covered)} around the proxy: "
                       "they are never metered",
                       fix=f"export {fix}", details=details)


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.env.proxy", "proxy variables", check_env_proxy, requires=("check.config",)))
    register(Check("check.env.no-proxy", "NO_PROXY", check_env_no_proxy, requires=("check.config",)))
