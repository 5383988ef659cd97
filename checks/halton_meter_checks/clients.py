"""Running AI tools (Claude Code, Codex, Gemini CLI, Cursor): were they started with their HTTPS going
through this meter?

Only this user's processes are looked at, and of each one's environment only the HTTPS proxy variables
are read; no value is ever printed, only whether it points at the meter.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from halton_meter.plugin import Check, CheckContext, CheckResult, hookimpl
from halton_meter_checks._support import effective_https_proxy, meter_ports, parse_proxy

CLIENT_NAMES = {"claude": "claude", "codex": "codex", "gemini": "gemini", "cursor": "cursor"}
"""Executable name (lower case, without .exe) -> the client it is."""
SCRIPT_MARKERS = {
    "@anthropic-ai/claude-code": "claude",
    "claude-code": "claude",
    "@openai/codex": "codex",
    "@google/gemini-cli": "gemini",
}
"""For node/bun processes: a piece of the command line -> the client it runs."""
SCRIPT_HOSTS = ("node", "bun", "deno")


@dataclass(frozen=True)
class ClientProcess:
    client: str
    pid: int
    proxy: str
    """`meter`, `elsewhere`, `unset` or `unknown` (its environment could not be read)."""


def identify(name: str, cmdline: Iterable[str]) -> str | None:
    base = (name or "").lower().removesuffix(".exe")
    if base in CLIENT_NAMES:
        return CLIENT_NAMES[base]
    if base.startswith("cursor") and "helper" not in base:
        return "cursor"
    if base in SCRIPT_HOSTS:
        line = " ".join(cmdline or ())
        for marker, client in SCRIPT_MARKERS.items():
            if marker in line:
                return client
        args = list(cmdline or ())
        if len(args) > 1:
            script = os.path.basename(args[1]).lower()
            if script in CLIENT_NAMES:
                return CLIENT_NAMES[script]
    return None


def classify(environ: dict[str, str], ctx: CheckContext) -> str:
    found = effective_https_proxy(environ)
    if found is None:
        return "unset"
    target = parse_proxy(found[1])
    if target is not None and target.loopback and meter_ports(ctx).ours(target.port):
        return "meter"
    return "elsewhere"


def scan(ctx: CheckContext) -> list[ClientProcess]:
    import psutil

    me = os.getpid()
    uid = os.getuid() if hasattr(os, "getuid") else None
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "uids", "username"]):
        info = proc.info
        if info["pid"] == me:
            continue
        uids = info.get("uids")
        if uid is not None and uids is not None and uids.real != uid:
            continue
        client = identify(info.get("name") or "", info.get("cmdline") or ())
        if client is None:
            continue
        try:
            environ = proc.environ()
        except (psutil.Error, OSError):
            found.append(ClientProcess(client, info["pid"], "unknown"))
            continue
        found.append(ClientProcess(client, info["pid"], classify(environ, ctx)))
    return sorted(found, key=lambda c: (c.client, c.pid))


def _pids(items: list[ClientProcess]) -> str:
    pids = [str(c.pid) for c in items]
    return "pid " + ", ".join(pids[:5]) + (" …" if len(pids) > 5 else "")


def check_clients(ctx: CheckContext) -> CheckResult:
    found = scan(ctx)
    if not found:
        return CheckResult("skip", "no Claude Code, Codex, Gemini CLI or Cursor process is running")
    details = {"processes": [{"client": c.client, "pid": c.pid, "proxy": c.proxy} for c in found]}
    by_client: dict[str, list[ClientProcess]] = {}
    for c in found:
        by_client.setdefault(c.client, []).append(c)
    missed = {name: [c for c in items if c.proxy in ("unset", "elsewhere")] for name, items in by_client.items()}
    missed = {name: items for name, items in missed.items() if items}
    if missed:
        parts = []
        for name, items in missed.items():
            why = "HTTPS_PROXY not set" if all(c.proxy == "unset" for c in items) else "proxy points elsewhere"
            parts.append(f"{name} ({_pids(items)}): {why}")
        first = next(iter(missed))
        return CheckResult("warn", "not metered: " + "; ".join(parts),
                           fix=f"quit it and start it again through the meter: halton-meter run -- {first}",
                           details=details)
    metered = [name for name, items in by_client.items() if any(c.proxy == "meter" for c in items)]
    unknown = [name for name, items in by_client.items() if all(c.proxy == "unknown" for c in items)]
    text = (f"{', '.join(metered)} {'goes' if len(metered) == 1 else 'go'} through the meter" if metered else "")
    if unknown:
        text += ("; " if text else "") + f"could not read the environment of {', '.join(unknown)}"
    return CheckResult("ok", text, details=details)


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.clients", "running AI clients", check_clients, requires=("check.config",)))
