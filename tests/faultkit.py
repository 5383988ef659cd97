"""Helpers for the fault and load tests (tests/test_faults.py, tests/test_load.py).

Every call carries the canary credential (and a canary prompt) so the session-wide secrets test can prove
neither reached disk. Every wait is bounded in time; every load loop is bounded in count and time.

The accounting identity every test asserts (RELIABILITY.md §3.6):

    calls sent = rows landed + rows pending + counted gaps

* landed: final rows in `calls` (not the provisional `in_progress` ones);
* pending: records the core has not committed yet (writer queue + spool) plus provisional rows of calls
  still in flight; it must reach 0 once the meter has recovered;
* gaps: rows in the `gaps` table (ingested from the edge's `spool/gaps.jsonl`) — calls that went through
  unmetered. One gap per tunnel, so tests that expect gaps open one connection per call.
"""

from __future__ import annotations

import json
import os
import sqlite3
import ssl
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from halton_meter.stats import CORE_STATS, EDGE_STATS, read_stats
from halton_meter.testing.meter import MeterProcess

ANTHROPIC = "https://api.anthropic.com"
MESSAGES = f"{ANTHROPIC}/v1/messages"
CANARY_KEY = "sk-ant-api03-CANARYKEY-faultkit-not-a-real-key"
HEADERS = {"x-api-key": CANARY_KEY, "anthropic-version": "2023-06-01"}


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
    names = ("id", "at", "host", "reason", "project", "client", "bytes_up", "bytes_down")
    return [dict(zip(names, row, strict=True))
            for row in _query(meter, f"SELECT {', '.join(names)} FROM gaps ORDER BY at, id")]


def in_progress_rows(meter: MeterProcess) -> int:
    return int(_query(meter, "SELECT count(*) FROM calls WHERE incomplete_reason = 'in_progress'")[0][0])


@dataclass(frozen=True)
class Ledger:
    landed: int
    pending: int
    gaps: int

    def total(self) -> int:
        return self.landed + self.pending + self.gaps


def ledger(meter: MeterProcess) -> Ledger:
    """The right-hand side of the accounting identity, right now."""
    writer = core_stats(meter).get("writer", {})
    pending = int(writer.get("pending", 0) or 0) + int(writer.get("spooled", 0) or 0) + in_progress_rows(meter)
    return Ledger(landed=len(meter.rows()), pending=pending, gaps=len(gap_rows(meter)))


def assert_accounting(meter: MeterProcess, sent: int, timeout: float = 15.0, base: Ledger | None = None) -> Ledger:
    """`sent == landed + pending + gaps` with `pending == 0`, waiting (bounded) for recovery to finish.
    With `base` (a ledger taken before the test's calls, on a shared meter) only the change is counted;
    the returned ledger is then that change."""
    start = base or Ledger(0, 0, 0)
    deadline = time.monotonic() + timeout
    while True:
        now = ledger(meter)
        delta = Ledger(now.landed - start.landed, now.pending, now.gaps - start.gaps)
        if delta.pending == 0 and delta.total() == sent:
            return delta
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"accounting identity broken: sent {sent} != landed {delta.landed} + pending {delta.pending} + "
                f"gaps {delta.gaps}\n{meter.log()[-3000:]}")
        time.sleep(0.1)


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
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 1 << 20:
                more = tls.recv(65536)
                if not more:
                    tls.close()
                    return
                data += more
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                more = tls.recv(65536)
                if not more:
                    break
                body += more
            with self._lock:
                self.requests += 1
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            os.close(tls.detach())
        except (OSError, ValueError):
            conn.close()
