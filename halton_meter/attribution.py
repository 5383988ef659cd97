"""Who is calling: the client process behind a proxied connection, and the project it belongs to.

Looked up once per connection, from the client's loopback address (the edge passes it to the core), on a
worker thread: psutil's socket scan and /proc reads must never run on the proxy's event loop. Attributor
plugins then run in their declared order; the first answer wins.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import psutil
import structlog

from halton_meter.types import Attribution, Attributor, ClientInfo

log = structlog.get_logger("halton_meter.attribution")

UNATTRIBUTED = Attribution("unattributed", "none")
ENV_PREFIX = "HALTON_METER_"
_SCAN_REUSE_SECONDS = 0.05


def client_name(user_agent: str | None) -> str | None:
    """The product part of a User-Agent without versions: `Anthropic/Python 0.40.0` → `Anthropic/Python`."""
    if not user_agent:
        return None
    match = re.match(r"\s*([A-Za-z][\w.+-]*)(?:/([A-Za-z][\w.+-]*))?", user_agent)
    if not match:
        return None
    return match.group(0).strip()


class ProcessFinder:
    """Maps a client socket address to its process, scanning the socket table at most every 50 ms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: dict[tuple[str, int], int] = {}
        self._scanned_at = 0.0

    def _scan(self) -> None:
        table: dict[tuple[str, int], int] = {}
        try:
            for conn in psutil.net_connections(kind="tcp"):
                if conn.pid and conn.laddr:
                    table[(conn.laddr.ip, conn.laddr.port)] = conn.pid
        except (psutil.Error, OSError) as exc:
            log.warning("socket table scan failed", error=str(exc))
        self._table, self._scanned_at = table, time.monotonic()

    def pid_for(self, address: tuple[str, int]) -> int | None:
        with self._lock:
            pid = self._table.get(address)
            if pid is None and time.monotonic() - self._scanned_at > _SCAN_REUSE_SECONDS:
                self._scan()
                pid = self._table.get(address)
            return pid


def describe_process(pid: int) -> ClientInfo:
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return ClientInfo(pid=pid)
    name = cwd = None
    environ: dict[str, str] = {}
    try:
        name = proc.name()
    except psutil.Error:
        pass
    try:
        cwd = proc.cwd()
    except psutil.Error:
        pass
    try:
        environ = {k: v for k, v in proc.environ().items() if k.startswith(ENV_PREFIX)}
    except psutil.Error:
        pass
    return ClientInfo(pid=pid, process_name=name, cwd=cwd, environ=environ)


class AttributionService:
    """Resolves (client process, project) for a connection on a small thread pool."""

    def __init__(self, attributors: Sequence[Attributor], workers: int = 2) -> None:
        self._attributors = list(attributors)
        self._finder = ProcessFinder()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="halton-meter-attrib")

    def lookup(self, address: tuple[str, int] | None) -> Future[tuple[ClientInfo, Attribution]]:
        return self._pool.submit(self._resolve, address)

    def _resolve(self, address: tuple[str, int] | None) -> tuple[ClientInfo, Attribution]:
        client = ClientInfo()
        if address is not None:
            pid = self._finder.pid_for(address)
            if pid is not None:
                client = describe_process(pid)
        return client, self.attribute(client)

    def attribute(self, client: ClientInfo) -> Attribution:
        for attributor in self._attributors:
            try:
                answer = attributor.resolve(client)
            except Exception as exc:  # one broken attributor must not unattribute every call
                log.warning("attributor failed", attributor=attributor.id, error=f"{type(exc).__name__}: {exc}")
                continue
            if answer is not None:
                return answer
        return UNATTRIBUTED

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
