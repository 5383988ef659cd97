"""What every installer shares: the command a service runs, its environment, and how to tell it is up."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from halton_meter.errors import HaltonError
from halton_meter.logs import LOG_DIR_ENV
from halton_meter.paths import Paths
from halton_meter.runtime import port_answers, read_runtime

SERVICE_NAME = "halton-meter"
START_TIMEOUT = 45.0


def serve_argv() -> list[str]:
    """The supervisor command every service manager runs (absolute interpreter path: services start
    without the user's PATH or virtualenv activation)."""
    return [sys.executable, "-m", "halton_meter", "serve"]


def service_env(paths: Paths) -> dict[str, str]:
    return {"HALTON_METER_HOME": str(paths.home), LOG_DIR_ENV: str(paths.logs), "PYTHONUNBUFFERED": "1"}


def pid_alive(pid: Any) -> bool:
    """Is there a process with this pid? (psutil, not `os.kill(pid, 0)`, which on Windows kills it.)"""
    if not isinstance(pid, int) or pid <= 0:
        return False
    import psutil

    return bool(psutil.pid_exists(pid))


@dataclass(frozen=True)
class Health:
    runtime: dict[str, Any] | None
    supervisor_alive: bool
    edge: bool
    core: bool
    core_port: int | None
    api: bool

    @property
    def running(self) -> bool:
        return self.runtime is not None and self.edge


def core_port(paths: Paths) -> int | None:
    try:
        return int(json.loads(paths.core_state.read_text())["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def api_healthy(port: int, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            urllib.request.Request(f"http://127.0.0.1:{port}/health"), timeout=timeout
        ) as response:
            return response.status == 200 and json.loads(response.read()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def probe(paths: Paths) -> Health:
    """Read-only: what answers right now (each probe bounded to about a second)."""
    runtime = read_runtime(paths)
    port = core_port(paths)
    if runtime is None:
        return Health(None, False, False, port is not None and port_answers(port), port, False)
    return Health(
        runtime,
        pid_alive(runtime.get("pid")),
        port_answers(runtime["edge_port"]),
        port is not None and port_answers(port),
        port,
        api_healthy(runtime["api_port"]),
    )


def log_tail(paths: Paths, lines: int = 8) -> str:
    for name in ("serve.log", "serve.out"):
        path = paths.logs / name
        try:
            text = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            continue
        if text:
            return "\n".join(text[-lines:])
    return ""


def wait_until_running(paths: Paths, timeout: float = START_TIMEOUT, pid: int | None = None) -> dict[str, Any]:
    """Block until edge, core and API answer (or `timeout`); HaltonError naming what did not come up."""
    deadline = time.monotonic() + timeout
    health = probe(paths)
    while time.monotonic() < deadline:
        health = probe(paths)
        if health.runtime is not None and (pid is None or health.runtime.get("pid") == pid):
            if health.edge and health.core and health.api:
                return health.runtime
        time.sleep(0.1)
    missing = [name for name, ok in (("edge", health.edge), ("core", health.core), ("api", health.api)) if not ok]
    tail = log_tail(paths)
    raise HaltonError(
        f"the meter did not come up within {timeout:g} s ({', '.join(missing) or 'runtime.json'} not answering); "
        f"see `halton-meter logs`" + (f"\n{tail}" if tail else "")
    )


def user_config_dir(home: Path) -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
