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
from halton_meter.serve.runtime import read_runtime

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


LIVENESS_TIMEOUT = 1.0
"""How long `status`, `doctor` and start-up waits give the edge or the core to answer their liveness
question: twice the edge's own probe timeout (0.5 s), so a loaded machine is not called wedged."""


def _ask(port: int, question: bytes, expect: bytes, timeout: float) -> bool:
    """Send `question` to 127.0.0.1:`port` and read the answer's first line: True when it starts with
    `expect` within `timeout` (a listening socket alone says nothing: the kernel accepts for a frozen
    process)."""
    import socket

    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(question)
            answer = b""
            while b"\r\n" not in answer and len(answer) < 4096:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                more = sock.recv(4096)
                if not more:
                    break
                answer += more
            return answer.startswith(expect)
    except OSError:
        return False


def edge_answers(port: int, timeout: float = LIVENESS_TIMEOUT) -> bool:
    """The edge's event loop answers (its own health request), not just its listening socket."""
    from halton_meter.protocol import HEALTH_PATH

    return _ask(port, f"GET {HEALTH_PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode(), b"HTTP/1.1 200", timeout)


def core_state(paths: Paths, worker: int = 0) -> dict[str, Any] | None:
    """What the first core (or core worker `worker`) published about itself: port, pid, secret."""
    try:
        data = json.loads((paths.worker_state(worker) if worker else paths.core_state).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("port"), int) else None


def core_answers(paths: Paths, timeout: float = LIVENESS_TIMEOUT, worker: int = 0) -> bool:
    """The core (or core worker `worker`) answers the canary question the edge asks before every metered
    CONNECT (with that core's secret, from its 0600 state file): the same test that decides whether calls
    are metered."""
    from halton_meter.lifecycle.selftest import CANARY_HOST

    state = core_state(paths, worker)
    if state is None:
        return False
    question = (f"CONNECT {CANARY_HOST}:443 HTTP/1.1\r\nhost: {CANARY_HOST}:443\r\n"
                f"x-halton-meter-auth: {state.get('secret') or ''}\r\n\r\n").encode()
    return _ask(state["port"], question, b"HTTP/1.1 200", timeout)


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
        return Health(None, False, False, port is not None and core_answers(paths), port, False)
    return Health(
        runtime,
        pid_alive(runtime.get("pid")),
        edge_answers(runtime["edge_port"]),
        port is not None and core_answers(paths),
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
        if pid is not None and not pid_alive(pid):  # it exited (a taken port, a bad config): say why now
            tail = log_tail(paths, lines=3)
            raise HaltonError("the meter exited as it started" + (f": {tail.splitlines()[-1]}" if tail else
                                                                   "; see `halton-meter logs`"))
        time.sleep(0.1)
    missing = [name for name, ok in (("edge", health.edge), ("core", health.core), ("api", health.api)) if not ok]
    tail = log_tail(paths)
    raise HaltonError(
        f"the meter did not come up within {timeout:g} s ({', '.join(missing) or 'runtime.json'} not answering); "
        f"see `halton-meter logs`" + (f"\n{tail}" if tail else "")
    )


def check_ports_free(config: Any) -> None:
    """Before starting a service: the configured ports are free, or held by this home's own meter.
    PortInUseError (exit 4) at once, naming the holder and the config key to change — never a long wait
    for a service that cannot bind."""
    import errno
    import socket

    from halton_meter.errors import PortInUseError
    from halton_meter.serve.supervisor import port_holder

    runtime = read_runtime(config.paths)
    ours = runtime is not None and pid_alive(runtime.get("pid"))
    for role, port, key in (("edge", config.edge_port, "[edge] port"), ("api", config.api_port, "[api] port")):
        if ours and runtime is not None and port in (runtime.get("edge_port"), runtime.get("api_port")):
            continue
        try:
            socket.create_server(("127.0.0.1", port)).close()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                continue  # the service will say what is wrong
            holder = port_holder(port)
            by = f" by {holder}" if holder else " by another process"
            raise PortInUseError(f"port {port} ({role}) is in use{by}; stop that process, or set `{key} = N` in "
                                 f"{config.paths.config} to another port, then `halton-meter start`") from None


def user_config_dir(home: Path) -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
