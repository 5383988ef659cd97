"""systemd user units (Linux with a user manager).

One unit runs the supervisor (`halton-meter serve`), which owns the proxy port and runs the edge and the
core as child processes, restarting either with exponential backoff while the other keeps running (so the
proxy port never moves and traffic passes through while the core restarts). systemd restarts the
supervisor itself, with growing delays and a start limit, never in a tight loop, and not at all on a
configuration or database error (exit 2, 3 or 4), which only the user can fix.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from halton_meter.plugin import (
    SERVICE_NAME,
    CommandRunner,
    InitContext,
    Paths,
    PlatformInfo,
    ServiceState,
    UnsupportedOnPlatform,
    hookimpl,
    serve_argv,
    service_env,
    user_config_dir,
    wait_until_running,
)
from halton_meter_plugins.installers import linux

UNIT = f"{SERVICE_NAME}.service"


def systemd_version(runner: CommandRunner) -> int:
    result = runner.run(["systemctl", "--version"], check=False, timeout=2)
    words = result.stdout.split()
    return int(words[1]) if len(words) > 1 and words[0] == "systemd" and words[1].isdigit() else 0


def unit_file(paths: Paths, version: int) -> str:
    env = "\n".join(f"Environment={shlex.quote(f'{k}={v}')}" for k, v in service_env(paths).items())
    # Growing restart delays need systemd 254; older ones get a fixed delay under the same start limit.
    backoff = "RestartSteps=6\nRestartMaxDelaySec=120\n" if version >= 254 else ""
    return f"""[Unit]
Description=Halton Meter: meters the LLM API calls of this user's tools
Documentation=https://github.com/halton-meter/halton-meter
StartLimitIntervalSec=600
StartLimitBurst=10

[Service]
Type=simple
ExecStart={shlex.join(serve_argv())}
{env}
UMask=0077
Restart=on-failure
RestartSec=2
{backoff}RestartPreventExitStatus=2 3 4
TimeoutStopSec=30
KillMode=mixed

[Install]
WantedBy=default.target
"""


class SystemdInstaller:
    id = "installer.systemd"
    kind = "systemd"
    supports_system_proxy = False

    def __init__(self, platform: PlatformInfo) -> None:
        self.platform = platform

    def describe(self) -> str:
        return "systemd user unit"

    def unit_path(self, ctx: InitContext) -> Path:
        return user_config_dir(ctx.user_home) / "systemd" / "user" / UNIT

    def install_services(self, ctx: InitContext) -> None:
        changed = ctx.write_file(self.unit_path(ctx), unit_file(ctx.paths, systemd_version(ctx.runner)), mode=0o644)
        if changed:
            ctx.run(["systemctl", "--user", "daemon-reload"],
                    undo=[["systemctl", "--user", "daemon-reload"]], description="reload user units")
        ctx.run(["systemctl", "--user", "enable", UNIT], undo=[["systemctl", "--user", "disable", "--now", UNIT]],
                description=f"enable {UNIT}")
        user = os.environ.get("USER") or os.environ.get("LOGNAME") or ""
        linger = ctx.runner.run(["loginctl", "show-user", user, "--property=Linger"], check=False, timeout=2)
        if linger.ok and "Linger=no" in linger.stdout:
            ctx.notes.append(f"the meter stops when you log out; keep it running with `loginctl enable-linger {user}`")

    def start(self, ctx: InitContext) -> None:
        ctx.runner.run(["systemctl", "--user", "start", UNIT], timeout=30)
        wait_until_running(ctx.paths)

    def stop(self, ctx: InitContext) -> None:
        ctx.runner.run(["systemctl", "--user", "stop", UNIT], check=False, timeout=60)

    def service_state(self, ctx: InitContext) -> ServiceState:
        enabled = ctx.runner.run(["systemctl", "--user", "is-enabled", UNIT], check=False, timeout=2)
        active = ctx.runner.run(["systemctl", "--user", "is-active", UNIT], check=False, timeout=2)
        installed = enabled.stdout.strip() in ("enabled", "static")
        running = active.stdout.strip() == "active"
        if running:
            return ServiceState(installed, True, f"systemd user unit {UNIT} active")
        return ServiceState(installed, False, f"systemd user unit {UNIT} {active.stdout.strip() or 'inactive'}",
                            fix=f"systemctl --user start {UNIT}  (why it stopped: journalctl --user -u {UNIT})")

    def trust_ca(self, ctx: InitContext) -> bool:
        return linux.trust_ca(ctx)

    def persist_env(self, ctx: InitContext, env: Mapping[str, str]) -> None:
        linux.environment_d(ctx, env)
        assignments = [f"{k}={v}" for k, v in env.items()]
        ctx.run(["systemctl", "--user", "set-environment", *assignments],
                undo=[["systemctl", "--user", "unset-environment", *env]],
                description="environment for apps started by the user manager")

    def set_system_proxy(self, ctx: InitContext, port: int) -> None:
        raise UnsupportedOnPlatform(
            "--full (a system-wide proxy) is not supported on Linux; use --apps, which covers new shells "
            "and apps that honour HTTPS_PROXY"
        )


@hookimpl
def halton_platform_installer(platform: PlatformInfo) -> SystemdInstaller | None:
    if platform.system == "linux" and platform.has_systemd_user:
        return SystemdInstaller(platform)
    return None
