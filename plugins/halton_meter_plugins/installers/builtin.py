"""The built-in supervisor, for machines without a service manager (containers, WSL without systemd).

`start` launches `halton-meter serve` as a detached process (its own session, output to the log
directory): it binds the proxy port, runs and restarts the edge and the core with exponential backoff,
and hosts the API. `stop` sends it SIGTERM, which drains calls in flight. Nothing starts it at login:
after a reboot, `halton-meter start` (status says so).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping

from halton_meter.plugin import (
    HaltonError,
    InitContext,
    PlatformInfo,
    ServiceState,
    UnsupportedOnPlatform,
    hookimpl,
    pid_alive,
    probe,
    read_runtime,
    serve_argv,
    service_env,
    wait_until_running,
)
from halton_meter_plugins.installers import linux

STOP_TIMEOUT = 40.0


class BuiltinSupervisor:
    id = "installer.builtin"
    kind = "builtin"
    supports_system_proxy = False

    def __init__(self, platform: PlatformInfo) -> None:
        self.platform = platform

    def describe(self) -> str:
        return "built-in supervisor (no service manager found)"

    def install_services(self, ctx: InitContext) -> None:
        ctx.notes.append("no service manager here: the built-in supervisor runs the meter; "
                         "after a reboot run `halton-meter start`")

    def start(self, ctx: InitContext) -> None:
        paths = ctx.paths
        health = probe(paths)
        if health.running and health.supervisor_alive:
            return
        paths.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        out = paths.logs / "serve.out"
        if out.exists() and out.stat().st_size > 1024 * 1024:
            out.unlink()
        with open(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as sink:
            proc = subprocess.Popen(
                serve_argv(),
                env={**os.environ, **service_env(paths)},
                stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                start_new_session=True,  # not killed with the shell or terminal that started it
                cwd=str(paths.home),
            )
        try:
            wait_until_running(paths, pid=proc.pid)
        except HaltonError:
            if proc.poll() is None:
                proc.terminate()
            raise

    def stop(self, ctx: InitContext) -> None:
        runtime = read_runtime(ctx.paths)
        pid = runtime.get("pid") if runtime else None
        if not isinstance(pid, int) or not pid_alive(pid):  # pid_alive says False for a non-int too
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it if we happen to be its parent
            except ChildProcessError:
                pass
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def service_state(self, ctx: InitContext) -> ServiceState:
        health = probe(ctx.paths)
        if health.supervisor_alive and health.runtime is not None:  # alive means runtime.json was read
            return ServiceState(True, True, f"built-in supervisor, pid {health.runtime['pid']}")
        return ServiceState(True, False, "built-in supervisor, not running", fix="halton-meter start")

    def trust_ca(self, ctx: InitContext) -> bool:
        return linux.trust_ca(ctx) if self.platform.system == "linux" else False

    def persist_env(self, ctx: InitContext, env: Mapping[str, str]) -> None:
        if self.platform.system == "linux":
            linux.environment_d(ctx, env)

    def set_system_proxy(self, ctx: InitContext, port: int) -> None:
        raise UnsupportedOnPlatform(
            f"--full (a system-wide proxy) is not supported on {self.platform.system}; "
            "use --apps, which covers new shells and apps that honour HTTPS_PROXY"
        )


@hookimpl
def halton_platform_installer(platform: PlatformInfo) -> BuiltinSupervisor | None:
    if platform.system == "linux" and not platform.has_systemd_user:
        return BuiltinSupervisor(platform)
    return None
