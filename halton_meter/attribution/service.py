"""Who is calling: the client process behind a proxied connection, and the project it belongs to.

Looked up once per connection, from the client's loopback address (the edge passes it to the core), on a
worker thread: psutil's socket scan and /proc reads must never run on the proxy's event loop. Attributor
plugins then run in their declared order; the first answer wins.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import structlog

from halton_meter.attribution.client_family import tool_from_process
from halton_meter.attribution.workspace import git_info
from halton_meter.types import Attribution, Attributor, ClientInfo

log = structlog.get_logger("halton_meter.attribution")

UNATTRIBUTED = Attribution("unattributed", "none")
ENV_PREFIX = "HALTON_METER_"
_RECENT_PROCESSES = 8
"""Processes whose sockets are checked first, before a scan of every socket on the machine."""
_MAX_FDS = 4096
Address = tuple[str, int]
_PROC_NET = Path("/proc/net")


@dataclass(frozen=True, slots=True)
class Resolution:
    """Who is behind a connection, and what the call belongs to."""

    client: ClientInfo = field(default_factory=ClientInfo)
    attribution: Attribution = UNATTRIBUTED
    resolved_at: float = 0.0
    """time.monotonic() of the lookup (a long-lived connection is looked up again when this gets old)."""

    @property
    def repo(self) -> str | None:
        return self.client.git.repo if self.client.git is not None else None

    @property
    def branch(self) -> str | None:
        return self.client.git.branch if self.client.git is not None else None


def attribute(attributors: Sequence[Attributor], client: ClientInfo) -> Attribution:
    """The first answer of `attributors` (already in order) for `client`, else `unattributed`."""
    for attributor in attributors:
        try:
            answer = attributor.resolve(client)
        except Exception as exc:  # one broken attributor must not unattribute every call
            log.warning("attributor failed", attributor=attributor.id, error=f"{type(exc).__name__}: {exc}")
            continue
        if answer is not None:
            return answer
    return UNATTRIBUTED


class ProcessFinder:
    """Maps a client socket address to its process.

    On Linux the socket's inode is read from /proc/net/tcp and the process holding it is searched for
    directly, recent clients first, stopping at the first match (see `_from_proc`): fast enough to find a
    short-lived client before it exits. Elsewhere (or when that finds nothing) psutil scans every socket;
    a lookup is only answered from a scan that started after it was asked for (a connection made 1 ms after
    a scan began is not in it), and one scan answers every lookup that was waiting for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: dict[tuple[Address, Address | None], int] = {}
        self._scan_started = -1.0
        self._recent: dict[int, float] = {}

    def _scan(self) -> None:
        started = time.monotonic()
        table: dict[tuple[Address, Address | None], int] = {}

        def add(conn: Any, pid: int | None) -> None:
            if pid and conn.laddr:
                local = _plain((conn.laddr.ip, conn.laddr.port))
                remote = _plain((conn.raddr.ip, conn.raddr.port)) if conn.raddr else None
                table[(local, remote)] = pid
                table.setdefault((local, None), pid)

        try:
            for conn in psutil.net_connections(kind="tcp"):
                add(conn, conn.pid)
        except psutil.AccessDenied:
            # macOS lets only root list every process's sockets; a user may list their own processes' sockets.
            for proc in psutil.process_iter():
                try:
                    for conn in proc.net_connections(kind="tcp"):
                        add(conn, proc.pid)
                except (psutil.Error, OSError):
                    continue
        except (psutil.Error, OSError) as exc:
            log.warning("socket table scan failed", error=str(exc))
        self._table, self._scan_started = table, started

    def _from_proc(self, address: Address, server: Address | None) -> int | None:
        """Linux: the socket's inode from /proc/net/tcp{,6}, then the first process holding it: those that made
        calls recently first, then the others newest first. Stops at the first match, so a new client is
        usually found within milliseconds."""
        inode = _socket_inode(address, server)
        if inode is None:
            return None
        target = f"socket:[{inode}]"
        recent = sorted(self._recent, key=self._recent.__getitem__, reverse=True)[:_RECENT_PROCESSES]
        try:
            others = sorted((int(p) for p in os.listdir("/proc") if p.isdigit()), reverse=True)
        except OSError:
            others = []
        own = os.getpid()
        seen: set[int] = set()
        for pid in [*recent, *others]:
            if pid in seen or pid == own:
                continue
            seen.add(pid)
            fd_dir = f"/proc/{pid}/fd"
            try:
                names = os.listdir(fd_dir)
            except OSError:  # gone, or not ours
                self._recent.pop(pid, None)
                continue
            for name in names[:_MAX_FDS]:
                try:
                    if os.readlink(f"{fd_dir}/{name}") == target:
                        return pid
                except OSError:
                    continue
        return None

    def pid_for(self, address: Address, asked_at: float | None = None, server: Address | None = None) -> int | None:
        """The pid owning the client socket `address` (connected to `server`, the proxy's listening address,
        when known: a local port is only unique together with the address it is connected to), or None
        (gone, or another user's process)."""
        asked_at = time.monotonic() if asked_at is None else asked_at
        address = _plain(address)
        server = _plain(server) if server is not None else None
        with self._lock:
            if self._scan_started >= asked_at:  # a scan since the connection existed: it knows, or none will
                pid = self._table.get((address, server))
            else:
                pid = self._from_proc(address, server) if _PROC_NET.exists() else None
                if pid is None:  # macOS, Windows, or an address /proc did not explain: psutil's full scan
                    self._scan()
                    pid = self._table.get((address, server))
            if pid is not None:
                self._recent[pid] = time.monotonic()
                if len(self._recent) > 4 * _RECENT_PROCESSES:
                    for old in sorted(self._recent, key=self._recent.__getitem__)[:_RECENT_PROCESSES]:
                        del self._recent[old]
            return pid


def _plain(address: Address) -> Address:
    """`::ffff:127.0.0.1` (an IPv4 client as a dual-stack listener reports it) → `127.0.0.1`."""
    ip, port = str(address[0]), int(address[1])
    if ip.lower().startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip, port


def _proc_net_address(address: Address) -> tuple[str, str] | None:
    """`address` as /proc/net/tcp{,6} spells it (each 32-bit word little-endian, hex), and which table."""
    ip, port = address
    try:
        if ":" in ip:
            raw = socket.inet_pton(socket.AF_INET6, ip.split("%")[0])
            table = "tcp6"
        else:
            raw = socket.inet_aton(ip)
            table = "tcp"
    except OSError:
        return None
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return table, f"{words.hex().upper()}:{port:04X}"


def _socket_inode(address: Address, server: Address | None) -> str | None:
    spelled = _proc_net_address(address)
    if spelled is None:
        return None
    table, local = spelled
    remote = _proc_net_address(server) if server is not None else None
    if remote is not None and remote[0] != table:
        remote = None
    try:
        with open(_PROC_NET / table, encoding="ascii", errors="replace") as fh:
            next(fh, None)
            for line in fh:
                if local not in line:
                    continue
                fields = line.split()
                if len(fields) > 9 and fields[1] == local and fields[9] != "0" and (
                        remote is None or fields[2] == remote[1]):
                    return fields[9]
    except OSError:
        return None
    return None


def describe_process(pid: int) -> ClientInfo:
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return ClientInfo(pid=pid)
    name = cwd = None
    environ: dict[str, str] = {}
    cmdline: list[str] = []
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
    try:
        cmdline = proc.cmdline()[:2]  # program and script only, to name the tool; never kept
    except psutil.Error:
        pass
    return ClientInfo(pid=pid, process_name=name, cwd=cwd, environ=environ, tool=tool_from_process(name, cmdline))


class AttributionService:
    """Resolves (client process, project, repository, branch) for a connection on a small thread pool."""

    def __init__(self, attributors: Sequence[Attributor], workers: int = 2) -> None:
        self._attributors = list(attributors)
        self._finder = ProcessFinder()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="halton-meter-attrib")

    def set_attributors(self, attributors: Sequence[Attributor]) -> None:
        """A reloaded config's chain (new `[projects]` rules): lookups from now on use it."""
        self._attributors = list(attributors)

    def lookup(self, address: Address | None, proxy_project: str | None = None,
               server: Address | None = None) -> Future[Resolution]:
        """Resolve the client connected from `address` to `server` (the proxy's listening address)."""
        return self._pool.submit(self._resolve, address, proxy_project, time.monotonic(), server)

    def refresh(self, previous: Resolution) -> Future[Resolution]:
        """Look again at a known process (its working directory or branch may have changed); the socket
        table is not scanned. Falls back to `previous` when the process is gone."""
        return self._pool.submit(self._refresh, previous)

    def _resolve(self, address: Address | None, proxy_project: str | None, asked_at: float,
                 server: Address | None = None) -> Resolution:
        client = ClientInfo(proxy_project=proxy_project)
        if address is not None:
            pid = self._finder.pid_for(address, asked_at, server)
            if pid is not None:
                client = describe_process(pid)
            else:
                log.info("no process found for a client connection", address=f"{address[0]}:{address[1]}")
        return self._complete(client, proxy_project)

    def _refresh(self, previous: Resolution) -> Resolution:
        pid = previous.client.pid
        if pid is None or not psutil.pid_exists(pid):
            return replace(previous, resolved_at=time.monotonic())
        client = describe_process(pid)
        if client.cwd is None:
            return replace(previous, resolved_at=time.monotonic())
        return self._complete(client, previous.client.proxy_project)

    def _complete(self, client: ClientInfo, proxy_project: str | None) -> Resolution:
        git = None
        if client.cwd:
            try:
                git = git_info(client.cwd)
            except (OSError, ValueError):
                git = None
        client = replace(client, proxy_project=proxy_project, git=git)
        return Resolution(client, self.attribute(client), time.monotonic())

    def attribute(self, client: ClientInfo) -> Attribution:
        return attribute(self._attributors, client)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
