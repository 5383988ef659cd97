"""Helpers for the fault and load tests (tests/test_faults.py, tests/test_load.py).

Every call carries the canary credential (and a canary prompt) so the session-wide secrets test can prove
neither reached disk. Every wait is bounded in time; every load loop is bounded in count and time.

The accounting identity every test asserts (docs/reliability.md):

    calls the provider received = rows landed + rows pending + calls covered by gaps

* received: counted by the fake provider itself (`received_since`), never by the meter;
* landed: final rows in `calls` (not the provisional `in_progress` ones);
* pending: records the core has not committed yet (writer queue), provisional rows of calls still in
  flight, and pass-through tunnels still open (their calls are counted when they close); it must reach 0
  once the meter has recovered;
* calls covered by gaps: from the `gaps` table (ingested from the edge's `spool/gaps.jsonl`): exact for a
  plain-HTTP request or a record the writer could not keep; for a pass-through tunnel, its estimate from
  the TLS record pattern (exact for the HTTP/1.1 clients these tests use, and asserted as such).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import ssl
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from halton_meter.serve.stats import CORE_STATS, EDGE_STATS, read_stats
from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Gate, Reply
from halton_meter.testing.meter import MeterProcess

ANTHROPIC = "https://api.anthropic.com"
MESSAGES = f"{ANTHROPIC}/v1/messages"
CANARY_KEY = "sk-ant-api03-CANARYKEY-faultkit-not-a-real-key"
HEADERS = {"x-api-key": CANARY_KEY, "anthropic-version": "2023-06-01"}


LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
conn.close()
"""
"""A separate process holding `BEGIN EXCLUSIVE` on a database for argv[2] seconds ("locked" once it holds it)."""


def request_json(stream: bool = False, model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "stream": stream,
            "messages": [{"role": "user", "content": f"PROMPT-CANARY-{uuid.uuid4()}"}]}


# --------------------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy (returned); AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------------
# Looking into a running meter
# --------------------------------------------------------------------------------------------------


def core_pid(meter: MeterProcess) -> int | None:
    try:
        return int(json.loads((meter.home / "run" / "core.json").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def wait_core_pid(meter: MeterProcess, other_than: int | None = None, timeout: float = 30.0) -> int:
    """The pid of a core that answers (its `run/core.json`), different from `other_than`."""
    def ready() -> int | None:
        pid = core_pid(meter)
        return pid if pid is not None and pid != other_than else None

    return int(wait_until(ready, timeout, what="a (new) core publishing run/core.json"))


def edge_stats(meter: MeterProcess) -> dict[str, Any]:
    return read_stats(meter.home / "run" / EDGE_STATS) or {}


def fresh_edge_stats(meter: MeterProcess, timeout: float = 5.0) -> dict[str, Any]:
    """Edge counters published after this call (they are published every 2 s), so they include everything
    that happened before it."""
    asked = time.time()
    return dict(wait_until(lambda: (s := edge_stats(meter)) and s.get("updated_at", 0) > asked and s, timeout,
                           what="a fresh edge-stats.json"))


def core_stats(meter: MeterProcess) -> dict[str, Any]:
    return read_stats(meter.home / "run" / CORE_STATS) or {}


def _query(meter: MeterProcess, sql: str) -> list[tuple[Any, ...]]:
    db = meter.home / "db.sqlite"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def gap_rows(meter: MeterProcess) -> list[dict[str, Any]]:
    names = ("id", "at", "host", "reason", "project", "client", "bytes_up", "bytes_down", "kind", "connections",
             "calls", "calls_estimated", "duration_ms", "ended_at")
    return [dict(zip(names, row, strict=True))
            for row in _query(meter, f"SELECT {', '.join(names)} FROM gaps ORDER BY at, id")]


def in_progress_rows(meter: MeterProcess) -> int:
    return int(_query(meter, "SELECT count(*) FROM calls WHERE incomplete_reason = 'in_progress'")[0][0])


def gap_calls(gap: dict[str, Any]) -> int:
    """The calls a gap row covers: exact for a request or record, the estimate for a tunnel (which must
    have one: these tests only tunnel TLS)."""
    if gap["kind"] == "tunnel":
        assert gap["calls_estimated"] is not None, f"a TLS tunnel gap without an estimate: {gap}"
        return int(gap["calls_estimated"])
    return int(gap["calls"] or 0)


@dataclass(frozen=True)
class Ledger:
    landed: int
    pending: int
    gaps: int
    """Calls covered by gaps (see gap_calls), not gap rows."""
    gap_rows: int = 0

    def total(self) -> int:
        return self.landed + self.pending + self.gaps


def ledger(meter: MeterProcess) -> Ledger:
    """The right-hand side of the accounting identity, right now."""
    stats = core_stats(meter)
    writer = stats.get("writer", {}) if stats.get("age_s", 99) < 10 else {}
    pending = int(writer.get("pending", 0) or 0) + in_progress_rows(meter)
    gaps = gap_rows(meter)
    open_tunnels = [g for g in gaps if g["kind"] == "tunnel" and g["ended_at"] is None]
    closed = [g for g in gaps if g not in open_tunnels]
    return Ledger(landed=len(meter.rows()), pending=pending + len(open_tunnels),
                  gaps=sum(gap_calls(g) for g in closed), gap_rows=len(gaps))


def assert_accounting(meter: MeterProcess, sent: int, timeout: float = 15.0, base: Ledger | None = None,
                      received: int | None = None) -> Ledger:
    """`sent == landed + pending + gaps` with `pending == 0`, waiting (bounded) for recovery to finish.
    With `base` (a ledger taken before the test's calls, on a shared meter) only the change is counted;
    the returned ledger is then that change. With `received` (the fake provider's own count, from
    `received_since`), `sent` must also be what the provider received: every call reached it once."""
    if received is not None:
        assert received == sent, f"the provider received {received} calls, the clients sent {sent}"
    start = base or Ledger(0, 0, 0)
    deadline = time.monotonic() + timeout
    while True:
        now = ledger(meter)
        delta = Ledger(now.landed - start.landed, now.pending, now.gaps - start.gaps, now.gap_rows - start.gap_rows)
        if delta.pending == 0 and delta.total() == sent:
            return delta
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"accounting identity broken: sent {sent} != landed {delta.landed} + pending {delta.pending} + "
                f"gaps {delta.gaps}\n{meter.log()[-3000:]}")
        time.sleep(0.1)


def received_since(fake: Any, base: int, path: str = "/v1/messages") -> int:
    """Requests the fake provider itself received for `path` after the first `base` it had received."""
    return sum(1 for r in fake.requests[base:] if r.path == path)


def assert_received(meter: MeterProcess, fake: Any, base: int, timeout: float = 15.0,
                    path: str = "/v1/messages", start: Ledger | None = None) -> Ledger:
    """The identity against the provider's own count: what it received since `base` equals rows landed +
    pending (→ 0) + calls covered by gaps, waiting (bounded) for recovery to finish."""
    return assert_accounting(meter, received_since(fake, base, path), timeout=timeout, base=start)


@contextlib.contextmanager
def wedged_core(meter: MeterProcess) -> Iterator[int]:
    """The core stopped (SIGSTOP) for the `with` block — after waiting out the edge's probe freshness, so
    the next metered call asks it first — and continued however the block ends. Yields its pid."""
    import signal

    pid = core_pid(meter)
    assert pid is not None
    time.sleep(1.2)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


def read_http_message(recv: Callable[[int], bytes], limit: int = 1 << 20) -> tuple[bytes, bytes]:
    """(head, body) of one HTTP/1 message read with `recv` (a socket's), the body by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < limit:
        more = recv(65536)
        if not more:
            break
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        more = recv(65536)
        if not more:
            break
        body += more
    return head, body


def rss(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


class PeakRss:
    """Peak RSS of a process over a `with` block, exactly where Linux lets us: the block starts by resetting
    the kernel's high-water mark (`echo 5 > /proc/PID/clear_refs`) and ends by reading it (`VmHWM`), so no
    transient peak is missed between samples. Elsewhere it samples `memory_info().rss` every millisecond."""

    def __init__(self, pid: int, limit: float = 60.0) -> None:
        self.pid = pid
        self.limit = limit
        self.baseline = 0
        self.peak = 0
        self.exact = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def _hwm(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def _sample(self) -> None:
        import psutil

        process = psutil.Process(self.pid)
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.peak = max(self.peak, process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.001)

    def __enter__(self) -> PeakRss:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.exact = self._hwm() is not None
        except OSError:
            self.exact = False
        self.baseline = rss(self.pid)
        if not self.exact:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.exact:
            self.peak = max(self._hwm() or 0, rss(self.pid))
        else:
            self._stop.set()
            self._thread.join(5)


# --------------------------------------------------------------------------------------------------
# Clients and calls
# --------------------------------------------------------------------------------------------------


def shared_ssl_context(meter: MeterProcess, fake_ca: Path) -> ssl.SSLContext:
    return meter.ssl_context(fake_ca)


def one_shot_client(meter: MeterProcess, fake_ca: Path, timeout: float = 10.0,
                    context: ssl.SSLContext | None = None) -> httpx.Client:
    """A proxied client that opens a new connection (one CONNECT, one tunnel) per request, so a call that
    passes through unmetered is exactly one gap."""
    return httpx.Client(proxy=meter.proxy_url, verify=context or meter.ssl_context(fake_ca), trust_env=False,
                        timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0))


@dataclass
class CallResult:
    started_wall: float
    started: float
    elapsed: float
    status: int | None
    error: str | None
    body: bytes = b""


def timed_call(client: httpx.Client, url: str = MESSAGES, stream: bool = False,
               headers: dict[str, str] | None = None) -> CallResult:
    wall, start = time.time(), time.monotonic()
    try:
        response = client.post(url, json=request_json(stream), headers={**HEADERS, **(headers or {})})
        return CallResult(wall, start, time.monotonic() - start, response.status_code, None, response.content)
    except httpx.HTTPError as exc:
        return CallResult(wall, start, time.monotonic() - start, None, f"{type(exc).__name__}: {exc}")


@dataclass
class PacedLoad:
    """Calls `call()` every `period` seconds on a small pool (a slow call never delays the next one),
    until `stop()`, at most `max_calls` times and `max_seconds` long."""

    call: Callable[[], CallResult]
    period: float
    max_calls: int
    max_seconds: float
    workers: int = 16
    hold: threading.Event = field(default_factory=threading.Event)
    """While set, no call starts (the slot is skipped, not counted)."""
    results: list[CallResult] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> PacedLoad:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _one(self) -> None:
        result = self.call()
        with self._lock:
            self.results.append(result)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with ThreadPoolExecutor(self.workers) as pool:
            next_at = time.monotonic()
            for _ in range(self.max_calls):
                if self._stop.is_set() or time.monotonic() >= deadline:
                    break
                if not self.hold.is_set():
                    pool.submit(self._one)
                next_at += self.period
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break

    def stop(self, timeout: float = 40.0) -> list[CallResult]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "load loop did not finish in time"
        with self._lock:
            return sorted(self.results, key=lambda r: r.started)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def status_json(meter: MeterProcess) -> dict[str, Any]:
    return json.loads(meter.cli("status", "--json", check=False, timeout=30).stdout)


def status_row(status: dict[str, Any], row_id: str) -> dict[str, Any]:
    return next(r for r in status["rows"] if r["id"] == row_id)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------------
# An upstream that resets before it answers
# --------------------------------------------------------------------------------------------------


class ResetServer:
    """A TLS server (certificate from `ca`, e.g. the fake provider's) that reads one HTTP request and then
    resets the connection (RST, SO_LINGER 0) without a single byte of response: "the provider reset before
    the response". The fake provider's `cut_after=0` writes the response head before its reset."""

    def __init__(self, ca: Any, hosts: tuple[str, ...]) -> None:
        import socket

        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*hosts, "localhost").configure_cert(self.context)
        self.context.set_alpn_protocols(["http/1.1"])
        self.hosts = hosts
        self.requests = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def resolve_rules(self) -> list[str]:
        return [f"{host}:443:127.0.0.1:{self.port}" for host in self.hosts]

    def __enter__(self) -> ResetServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Any) -> None:
        import socket
        import struct

        conn.settimeout(10)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
            head, _ = read_http_message(tls.recv)
            if not head:
                tls.close()
                return
            with self._lock:
                self.requests += 1
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            os.close(tls.detach())
        except (OSError, ValueError):
            conn.close()


# --------------------------------------------------------------------------------------------------
# A disk that fills up
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs_at(mount_point: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted at `mount_point` for the test (root only: skipped where mounting is not
    permitted), unmounted afterwards."""
    mount_point.mkdir(mode=0o700)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount_point)],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs to fill (F5 needs root or CAP_SYS_ADMIN): {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (F5 needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=10).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=10)


def fill(directory: Path) -> Path:
    """Fill the file system holding `directory` until it refuses one more byte."""
    filler = directory / "filler.bin"
    block = b"\0" * (64 * 1024)
    with filler.open("wb", buffering=0) as fh:
        for _ in range(100_000):  # bounded: 6 GiB at most
            try:
                fh.write(block)
            except OSError:
                break
        for _ in range(64 * 1024):
            try:
                fh.write(b"\0")
            except OSError:
                break
    assert os.statvfs(directory).f_bavail == 0
    return filler


class StreamCall:
    """One streamed call on its own thread: what the client received, how it ended and when."""

    def __init__(self, meter: MeterProcess, fake: FakeProvider, timeout: float = 30.0,
                 read_for: float | None = None, model: str = "claude-sonnet-4-5") -> None:
        self.meter, self.fake, self.timeout, self.read_for, self.model = meter, fake, timeout, read_for, model
        self.status: int | None = None
        self.body = bytearray()
        self.error: str | None = None
        self.ended: float | None = None
        self.closed_early = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> StreamCall:
        self._thread.start()
        return self

    def _run(self) -> None:
        began = time.monotonic()
        try:
            with one_shot_client(self.meter, self.fake.ca_pem, timeout=self.timeout) as client:
                with client.stream("POST", MESSAGES, json=request_json(True, self.model), headers=HEADERS) as response:
                    self.status = response.status_code
                    for chunk in response.iter_raw():
                        self.body += chunk
                        if self.read_for is not None and time.monotonic() - began >= self.read_for:
                            self.closed_early = True
                            break  # leaving the block closes the response (and the connection) early
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended = time.monotonic()

    def join(self, timeout: float) -> StreamCall:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the client hung for more than {timeout} s"
        return self


GATED_EVENTS = bodies.anthropic_stream_events(input_tokens=700, output_tokens=90)
"""The stream `gated_stream` answers with: three events, then the gate, then the rest."""


def gated_stream(fake: FakeProvider, gate: Gate) -> list[bytes]:
    """Streamed messages answer with GATED_EVENTS held at `gate` after the third event; others with JSON."""
    fake.add("POST", "/v1/messages", lambda received: Reply(
        pieces=[*GATED_EVENTS[:3], gate, *GATED_EVENTS[3:]], sse=True) if received.json().get("stream")
        else Reply(body=bodies.anthropic_message(input_tokens=5, output_tokens=2)))
    return GATED_EVENTS
