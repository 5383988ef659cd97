"""Processes under test and what /proc says about them: CPU seconds, RSS now and at peak, the machine.

CPU is the time the process's threads spent running, from `/proc/<pid>/task/*/schedstat` (nanoseconds),
checked against `utime + stime` from `/proc/<pid>/stat` (clock ticks, but including threads that have
ended): it counts only the work a process did, so unlike wall time it barely moves when other programs
share the machine. Peak RSS is the
kernel's own high-water mark (`VmHWM`), reset between measurements through `/proc/<pid>/clear_refs`; where
that reset is not allowed, a sampler reads `VmRSS` every 20 ms instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
READY_TIMEOUT = 60.0


# --------------------------------------------------------------------------------------------------
# /proc
# --------------------------------------------------------------------------------------------------


def _stat_seconds(pid: int) -> float:
    """utime + stime from /proc/<pid>/stat: every thread, the dead ones included, in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    # after the command name: state(0) ppid(1) ... utime(11) stime(12)
    return (int(fields[11]) + int(fields[12])) / TICK


def _schedstat_seconds(pid: int) -> float | None:
    """Nanosecond CPU time of the live threads (first field of /proc/<pid>/task/*/schedstat)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


@dataclass(frozen=True)
class CPU:
    stat: float
    precise: float | None

    def __sub__(self, other: CPU) -> float:
        """Seconds between two readings: the nanosecond figure, unless a thread ended in between (its time
        then shows only in the tick figure, which is then clearly larger)."""
        coarse = self.stat - other.stat
        if self.precise is None or other.precise is None:
            return coarse
        fine = self.precise - other.precise
        if coarse > fine + 2 / TICK + 0.05 * fine:
            return coarse
        return fine


def cpu_reading(pid: int) -> CPU:
    return CPU(_stat_seconds(pid), _schedstat_seconds(pid))


def main_thread_cpu(pid: int) -> CPU:
    """The process's main thread alone (for the core: mitmproxy's event loop and the meter addon; the
    writer, attribution and stats threads are the rest)."""
    with open(f"/proc/{pid}/task/{pid}/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    with open(f"/proc/{pid}/task/{pid}/schedstat", "rb") as f:
        precise = int(f.read().split()[0]) / 1e9
    return CPU((int(fields[11]) + int(fields[12])) / TICK, precise)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (all its threads), tick resolution."""
    return _stat_seconds(pid)


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(key.encode()):
                return int(line.split()[1])
    return 0


def rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS:")


def hwm_kb(pid: int) -> int:
    return _status_kb(pid, "VmHWM:")


def reset_peak(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark of `pid` to its current RSS (Linux 4.0+); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakWatch:
    """Peak RSS of a set of processes over a stretch of time (`start()` … `peaks()`)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._sampled: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._hwm = all(reset_peak(pid) for pid in pids.values())

    def start(self) -> None:
        self._sampled = {name: rss_kb(pid) for name, pid in self.pids.items()}
        if self._hwm:
            for pid in self.pids.values():
                reset_peak(pid)
        elif self._task is None:
            with contextlib.suppress(RuntimeError):
                self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError):
                    self._sampled[name] = max(self._sampled.get(name, 0), rss_kb(pid))
            await asyncio.sleep(0.02)

    def peaks(self) -> dict[str, int]:
        """kB per process since `start()`."""
        if self._hwm:
            return {name: hwm_kb(pid) for name, pid in self.pids.items()}
        return dict(self._sampled)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


def cpu_snapshot(pids: dict[str, int]) -> dict[str, CPU]:
    """CPU readings by role; a role `X:main` means the main thread of the process of role X."""
    out = {}
    for name, pid in pids.items():
        out[name] = cpu_reading(pid)
        if name == "core":
            out["core:main"] = main_thread_cpu(pid)
    return out


def cpu_delta(before: dict[str, CPU], after: dict[str, CPU]) -> dict[str, float]:
    """CPU seconds per process between two snapshots."""
    return {name: after[name] - before[name] for name in before}


# --------------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        from mitmproxy.version import VERSION as mitm
    except Exception:  # pragma: no cover
        mitm = "?"
    from halton_meter import __version__

    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = f"{int(Path('/proc/meminfo').read_text().split()[1]) / 2**20:.1f} GiB"
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "host": socket.gethostname(),
        "cores": str(os.cpu_count()),
        "cpu": model or "unknown",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "mitmproxy": mitm,
        "halton_meter": __version__,
        "loadavg_at_start": load,
    }


# --------------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------------


@dataclass
class Child:
    """A process the runner started; stopped with SIGTERM (then SIGKILL) by `stop()`."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    pids: dict[str, int] = field(default_factory=dict)
    """The processes to measure for this path, by role (for Halton Meter: edge, core, worker1…, serve)."""
    extra: dict[str, object] = field(default_factory=dict)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()


def _wait_line(proc: subprocess.Popen[bytes], log: Path, pattern: re.Pattern[bytes], what: str,
               timeout: float = READY_TIMEOUT) -> re.Match[bytes]:
    """Poll the child's output file until a line matches."""
    deadline = time.monotonic() + timeout
    text = b""
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            text = log.read_bytes()
        for line in text.splitlines():
            match = pattern.search(line)
            if match:
                return match
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    tail = b"\n".join(text.splitlines()[-30:]).decode(errors="replace")
    raise RuntimeError(f"{what} did not start (exit {proc.poll()}):\n{tail}")


def _spawn(argv: list[str], log: Path, *, stdin: int) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv, stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=str(Path(__file__).resolve().parent.parent),
        )


def start_module(name: str, module: str, *args: str, workdir: Path) -> Child:
    """`python -m module args` that prints `READY <port>`; its stdin is a pipe we hold (EOF stops it)."""
    log = workdir / f"{name}.log"
    proc = _spawn([sys.executable, "-m", module, *args], log, stdin=subprocess.PIPE)
    match = _wait_line(proc, log, re.compile(rb"^READY (\d+)"), name)
    return Child(name, proc, int(match.group(1)), pids={name: proc.pid})


def _listening_port(proc: subprocess.Popen[bytes], log: Path, what: str) -> int:
    """The TCP port a child listens on (for programs that do not print it when told to be quiet)."""
    import psutil

    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            for conn in psutil.Process(proc.pid).net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr:
                    return int(conn.laddr.port)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start listening (exit {proc.poll()}):\n"
                       + log.read_text(errors="replace")[-3000:])


def mitmdump_path() -> str:
    candidate = Path(sys.executable).parent / "mitmdump"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("mitmdump")
    if not found:
        raise RuntimeError("mitmdump not found next to this Python or on PATH (pip install mitmproxy)")
    return found


def start_mitmdump(upstream_ca: str, workdir: Path) -> Child:
    """Bare mitmdump: no addon of ours, every body streamed (stream_large_bodies=1, so SSE is never
    buffered), upstream certificates checked against the fake's CA. Its own CA goes to `workdir`."""
    confdir = workdir / "mitmproxy"
    confdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "mitmdump.log"
    proc = _spawn(
        [mitmdump_path(), "--listen-host", "127.0.0.1", "--listen-port", "0",
         "--set", f"confdir={confdir}",
         "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}",
         "--set", "stream_large_bodies=1",
         "--set", "flow_detail=0",
         # warnings only: at info level mitmdump logs lines per connection and per streamed body,
         # work the meter's core (mitmproxy logger at WARNING) does not do either
         "--set", "termlog_verbosity=warn"],
        log, stdin=subprocess.DEVNULL,
    )
    child = Child("mitmdump", proc, _listening_port(proc, log, "mitmdump"), pids={"mitmdump": proc.pid})
    child.extra["ca"] = str(confdir / "mitmproxy-ca-cert.pem")
    return child


WORKER_ROLE = re.compile(r"^worker(\d+)$")


def worker_role(index: int) -> str:
    """The role of core worker `index` (`python -m halton_meter.core --worker index`): `worker1`, …"""
    return f"worker{index}"


def is_core_role(role: str) -> bool:
    """The first core (`core`, which owns the database) or one of its workers (`worker1`, …)."""
    return role == "core" or WORKER_ROLE.match(role) is not None


def proc_key(path: str, role: str) -> str:
    """The name of a process across paths (idle RSS and CPU, the whole run's peaks): its role, except for
    the second meter (`meter1`), whose processes have the same roles as the first's: `meter1.edge`, …"""
    return role if path != "meter1" else f"{path}.{role}"


def _core_index(cmdline: list[str]) -> int | None:
    """0 for the first core, K for `halton_meter.core --worker K`, None for anything else."""
    if "halton_meter.core" not in cmdline:
        return None
    if "--worker" in cmdline:
        at = cmdline.index("--worker") + 1
        return int(cmdline[at]) if at < len(cmdline) and cmdline[at].isdigit() else None
    return 0


def start_meter(upstream_ca: str, resolve: list[str], workdir: Path, *, name: str = "meter",
                workers: str | None = None) -> Child:
    """`halton-meter serve` with its own home under `workdir`: real edge, cores, writer and database,
    upstream routed to the fake by `[upstream] resolve` and trusted by `[upstream] ca_bundle`.

    `workers` is the serve's `HALTON_METER_WORKERS` (None: the meter's default, "auto" unless this
    environment sets it). Roles: `edge`, `core` (the first core, which owns the database), `worker1` …
    `workerK` (`halton_meter.core --worker K`), `serve`; all of `runtime.json`'s `cores` are waited for."""
    import psutil

    from halton_meter.testing.meter import MeterProcess, write_config

    home = workdir / f"{name}-home"
    write_config(home, ca_bundle=Path(upstream_ca), resolve=resolve)
    meter = MeterProcess.start(home, env={"HALTON_METER_WORKERS": workers} if workers else None)
    cores = int(meter.runtime.get("cores") or 1)
    wanted = {"edge", "core", *(worker_role(k) for k in range(1, cores))}
    serve = psutil.Process(meter.proc.pid)
    deadline = time.monotonic() + READY_TIMEOUT
    roles: dict[str, int] = {}
    while time.monotonic() < deadline and set(roles) != wanted:
        for kid in serve.children():
            with contextlib.suppress(psutil.Error):
                argv = kid.cmdline()
                index = _core_index(argv)
                if "halton_meter.edge" in argv:
                    roles["edge"] = kid.pid
                elif index == 0:
                    roles["core"] = kid.pid
                elif index is not None:
                    roles[worker_role(index)] = kid.pid
        if set(roles) != wanted:
            time.sleep(0.05)
    if set(roles) != wanted:
        meter.stop()
        raise RuntimeError(f"could not find the edge and the {cores} core processes of serve "
                           f"(runtime.json cores={cores}; found {roles})")
    ordered = {role: roles[role] for role in sorted(wanted, key=_role_order)}
    child = Child(name, meter.proc, meter.edge_port, pids={**ordered, "serve": meter.proc.pid})
    child.extra.update(ca=str(meter.runtime["ca_cert"]), home=str(home), db=str(home / "db.sqlite"),
                       meter=meter, cores=cores)
    return child


def _role_order(role: str) -> tuple[int, int]:
    """edge, core, worker1, worker2, …"""
    if role == "edge":
        return (0, 0)
    match = WORKER_ROLE.match(role)
    return (1, int(match.group(1)) if match else 0)


def make_ca(workdir: Path) -> tuple[str, str]:
    """A trustme CA and a server certificate for the fake's host; returns (ca.pem, cert-and-key.pem)."""
    import trustme

    from bench.fake import HOST

    ca = trustme.CA()
    cert = ca.issue_cert(HOST)
    ca_pem = workdir / "fake-ca.pem"
    server_pem = workdir / "fake-server.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    with open(server_pem, "wb") as f:
        f.write(cert.private_key_pem.bytes())
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    os.chmod(server_pem, 0o600)
    return str(ca_pem), str(server_pem)


def workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="halton-bench-")
