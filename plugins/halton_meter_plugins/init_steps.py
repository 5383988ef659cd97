"""The built-in `halton-meter init` steps, in the order their `requires` give:

home → ca → trust-bundle → os-trust → service → environment (apps, full) → system-proxy (full) → start →
self-test

Each step's `check` is read-only; `apply` is idempotent and changes the machine only through the context,
which records every change for `uninstall` and for rollback when a later step fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from halton_meter.plugin import (
    NO_PROXY,
    HaltonError,
    InitContext,
    InitStep,
    StepSkipped,
    client_bundle_bytes,
    ensure_ca,
    ensure_private_dir,
    hookimpl,
    inspect_ca,
    probe,
    run_self_test,
    write_client_bundle,
)

SHELL_RC = {"bash": ".bashrc", "zsh": ".zshrc"}


def client_env(ctx: InitContext) -> dict[str, str]:
    """What apps mode persists: the same variables `halton-meter run` sets, pointing at the configured port."""
    proxy = f"http://127.0.0.1:{ctx.config.edge_port}"
    bundle = str(ctx.paths.client_bundle)
    return {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy,
            "NO_PROXY": NO_PROXY, "no_proxy": NO_PROXY, "SSL_CERT_FILE": bundle, "REQUESTS_CA_BUNDLE": bundle,
            "CURL_CA_BUNDLE": bundle, "NODE_EXTRA_CA_CERTS": bundle}


# ---- home, CA, bundle ---------------------------------------------------------------------------------


def home_ok(ctx: InitContext) -> bool:
    home = ctx.paths.home
    return home.is_dir() and not home.stat().st_mode & 0o077


def make_home(ctx: InitContext) -> None:
    ensure_private_dir(ctx.paths.home)
    ensure_private_dir(ctx.paths.logs)


def ca_ok(ctx: InitContext) -> bool:
    try:
        return inspect_ca(ctx.paths) is not None
    except HaltonError:
        return False


def make_ca(ctx: InitContext) -> None:
    ensure_ca(ctx.paths)
    ctx.notes.append(f"CA at {ctx.paths.ca_cert} (valid 2 years, key 0600)")


def bundle_ok(ctx: InitContext) -> bool:
    bundle = ctx.paths.client_bundle
    return bundle.exists() and bundle.read_bytes() == client_bundle_bytes(ctx.paths)


def make_bundle(ctx: InitContext) -> None:
    write_client_bundle(ctx.paths)
    ctx.notes.append(f"trust bundle {ctx.paths.client_bundle}")


# ---- ports --------------------------------------------------------------------------------------------------

FALLBACK_OFFSET = 10000


def _busy(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ours(ctx: InitContext) -> dict[str, Any] | None:
    health = probe(ctx.paths)
    return health.runtime if health.running and health.supervisor_alive else None


def _port_conflicts(ctx: InitContext) -> list[tuple[str, str, int]]:
    runtime = _ours(ctx) or {}
    conflicts = []
    for role, key, port in (("edge", "edge_port", ctx.config.edge_port), ("api", "api_port", ctx.config.api_port)):
        if port and runtime.get(key) != port and _busy(port):
            conflicts.append((role, key, port))
    return conflicts


def ports_ok(ctx: InitContext) -> bool:
    return not _port_conflicts(ctx)


def choose_ports(ctx: InitContext) -> None:
    """A port the configuration names explicitly is the user's choice: if it is taken, stop and say so.
    A default port that is taken is replaced by a free one, saved in config.toml (the one place every
    consumer reads), and said out loud: never a silent change."""
    from halton_meter.plugin import load_config, port_holder

    explicit = (ctx.config.source.read_text() if ctx.config.source else "")
    lines = []
    for role, _key, port in _port_conflicts(ctx):
        holder = port_holder(port) or "another process"
        if f"[{role}]" in explicit:
            raise HaltonError(f"port {port} ({role}, set in {ctx.paths.config}) is in use by {holder}; "
                              f"stop it or set another [{role}] port in config.toml")
        candidate = port + FALLBACK_OFFSET
        if candidate > 65535 or _busy(candidate):
            candidate = _free_port()
        lines.append(f"[{role}]\nport = {candidate}\n")
        ctx.notes.append(f"port {port} ({role}) is in use by {holder}; using {candidate} instead "
                         f"(saved in {ctx.paths.config})")
    if lines:
        previous = explicit
        separator = "\n" if previous and not previous.endswith("\n") else ""
        header = "" if previous else "# Written by `halton-meter init`: the default ports were taken.\n"
        ctx.write_file(ctx.paths.config, previous + separator + header + "\n".join(lines), mode=0o600)
        ctx.config = load_config(ctx.paths)


# ---- OS trust, services ---------------------------------------------------------------------------------


def trusted(ctx: InitContext) -> bool:
    return bool(ctx.state.for_step("init.os-trust"))


def trust(ctx: InitContext) -> None:
    if not ctx.installer.trust_ca(ctx):
        raise StepSkipped(ctx.notes.pop() if ctx.notes else "no per-user trust store on this platform")


def services_ok(ctx: InitContext) -> bool:
    # Installing is idempotent and cheap, and re-running it picks up a new interpreter path or port.
    return False


def install_services(ctx: InitContext) -> None:
    ctx.installer.install_services(ctx)


# ---- environment (apps, full) ---------------------------------------------------------------------------


def rc_files(ctx: InitContext) -> list[Path]:
    """The rc files of the user's shell: the one for $SHELL, plus any other known one that exists."""
    shell = Path(os.environ.get("SHELL", "bash")).name
    names = {SHELL_RC.get(shell, ".bashrc")} | {n for n in SHELL_RC.values() if (ctx.user_home / n).exists()}
    return [ctx.user_home / n for n in sorted(names)]


def shell_block(env: dict[str, str]) -> str:
    lines = ["# Added by `halton-meter init --apps`: route LLM API calls through the local meter.",
             "# Remove with `halton-meter uninstall` (or `halton-meter init` to go back to env-only mode)."]
    for key, value in env.items():
        if key.lower() == "no_proxy":
            lines.append(f'export {key}="${{{key}:+${key},}}{value}"')
        else:
            lines.append(f'export {key}="{value}"')
    return "\n".join(lines)


def environment_ok(ctx: InitContext) -> bool:
    return False  # apply is idempotent and reports "already in place" itself when nothing changed


def set_environment(ctx: InitContext) -> None:
    env = client_env(ctx)
    changed = []
    if ctx.options.shell_rc and ctx.platform.system != "windows":  # Windows shells read HKCU\Environment
        for rc in rc_files(ctx):
            if ctx.add_block(rc, shell_block(env)):
                changed.append(str(rc))
    else:
        for change in [c for c in ctx.state.for_step("init.environment") if c.kind == "block"]:
            ctx.undo_change(change)  # --no-shell-rc after an earlier run with it: take our block out
    ctx.installer.persist_env(ctx, env)
    where = ", ".join(changed) if changed else "shell rc unchanged"
    ctx.notes.append(f"HTTPS_PROXY and CA variables for new shells and apps ({where}); open a new terminal")


def system_proxy_ok(ctx: InitContext) -> bool:
    return False  # idempotent: re-applying follows a changed edge port


def set_system_proxy(ctx: InitContext) -> None:
    ctx.installer.set_system_proxy(ctx, ctx.config.edge_port)


# ---- start and self-test -------------------------------------------------------------------------------


def running(ctx: InitContext) -> bool:
    health = probe(ctx.paths)
    return health.running and health.core and health.api and health.runtime is not None and \
        health.runtime.get("edge_port") == ctx.config.edge_port


def start(ctx: InitContext) -> None:
    ctx.installer.stop(ctx)  # restart on re-init: the service definition or ports may have changed
    ctx.installer.start(ctx)
    runtime = probe(ctx.paths).runtime or {}
    ctx.notes.append(f"edge 127.0.0.1:{runtime.get('edge_port')} · api 127.0.0.1:{runtime.get('api_port')}")


def stop(ctx: InitContext) -> None:
    ctx.installer.stop(ctx)


def self_test(ctx: InitContext) -> None:
    hops = run_self_test(ctx.paths, ctx.config.edge_port)
    ctx.notes.append(f"a test call went through edge and core; its record {hops['record']}")


def never_done(ctx: InitContext) -> bool:
    return False


STEPS = (
    InitStep("init.home", "home directory and permissions", home_ok, make_home),
    InitStep("init.ca", "certificate authority", ca_ok, make_ca, requires=("init.home",)),
    InitStep("init.trust-bundle", "trust bundle for clients", bundle_ok, make_bundle, requires=("init.ca",)),
    InitStep("init.os-trust", "OS trust for the CA", trusted, trust, requires=("init.ca",)),
    InitStep("init.ports", "proxy and API ports", ports_ok, choose_ports, requires=("init.home",)),
    InitStep("init.service", "service", services_ok, install_services, requires=("init.home", "init.ports")),
    InitStep("init.environment", "environment for new shells and apps", environment_ok, set_environment,
             requires=("init.trust-bundle", "init.ports"), modes=("apps", "full")),
    InitStep("init.system-proxy", "system proxy", system_proxy_ok, set_system_proxy,
             requires=("init.environment",), modes=("full",)),
    InitStep("init.start", "start the meter", running, start, undo=stop,
             requires=("init.service", "init.trust-bundle", "init.os-trust", "init.environment",
                       "init.system-proxy")),
    InitStep("init.self-test", "self-test through edge and core", never_done, self_test,
             requires=("init.start",)),
)


@hookimpl
def halton_register_init_steps(register: Callable[[InitStep], None]) -> None:
    for step in STEPS:
        register(step)
