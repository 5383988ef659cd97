"""The edge: a small asyncio proxy front on the user-visible port (default 127.0.0.1:8081).

* CONNECT to a host a provider claims → handed to the core (mitmproxy), with the client's address so the
  core can attribute the call. If the core is restarting, the CONNECT waits a short grace for it; if it is
  down or wedged, the edge tunnels directly instead and records the tunnel as a gap: traffic never stops
  because the meter is down. Such a pass-through tunnel is closed at its first idle moment once the core
  answers again (`passthrough.py`), so the client's next request is metered.
* CONNECT to any other host → a direct TCP tunnel. Its TLS is never terminated; we never see inside.
* Plain-HTTP absolute-form requests → routed one request at a time (h11 frames them): a claimed host's
  request goes to the core, any other host's straight to the origin, and every request on a kept-alive
  connection is checked against the target policy again.
* Never a relay to local services: targets on this machine, link-local and cloud metadata addresses are
  refused, before and after DNS, here and again in the core.
* Only the edge may use the core: every request it sends there carries the core's per-start secret.

Only the standard library, h11 (mitmproxy's own HTTP/1 framing library) and the routing table; the edge
must stay small and start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import socket
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from halton_meter.attribution.client_family import client_family
from halton_meter.config import valid_project_name
from halton_meter.lifecycle.selftest import CANARY_HOST
from halton_meter.edge.passthrough import MAX_SECONDS, QUIET_SECONDS, STREAM_QUIET_SECONDS, PassThrough
from halton_meter.serve.process import QuietLoopErrors, watch_parent

log = structlog.get_logger("halton_meter.edge")

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT = 10.0
"""A client has this long to send its request head (slowloris)."""
HANDSHAKE_TIMEOUT = 10.0
"""After `200 Connection established`, a client has this long to send its first byte (its TLS hello): a
tunnel nobody uses is not allowed to hold a connection slot for the whole idle timeout."""
CONNECT_TIMEOUT = 10.0
CORE_TIMEOUT = 0.5
"""The core answers the canary probe at once (no upstream involved): no answer in this long means it is
down or wedged, and calls go direct."""
CORE_CONNECT_REPLY_TIMEOUT = 30.0
"""A real CONNECT's answer waits for the core's upstream connection, so it gets longer."""
PROBE_FRESH = 1.0
"""A successful probe vouches for the core this long; then the next metered CONNECT probes first."""
BUSY_CPU_SHARE = 0.2
"""A core that used at least this share of one CPU while a probe went unanswered is busy, not wedged."""
BUSY_MAX_SECONDS = 10.0
"""…for at most this long: a core spinning without answering anything is wedged too."""
PROBE_INTERVAL = 0.5
RESTART_GRACE = 3.5
"""When the core's process is gone (restarting after a crash, an upgrade, a `restart`), a metered CONNECT
waits this long for the new core before passing through: the supervisor has one up in about two seconds,
so a routine restart costs a little latency instead of unmetered calls. A wedged core (alive, silent) gets
no grace: calls go direct after one probe timeout."""
RESTART_POLL = 0.1
IDLE_TIMEOUT = 15 * 60.0
"""Per-read idle limit on tunnels: long enough for a model's longest thinking pause."""
MAX_CONNECTIONS = 2048
FDS_PER_CONNECTION = 2
"""A tunnel holds two descriptors in the edge (client, upstream): the cap never promises more."""
FD_RESERVE = 64
DRAIN_QUIET = 3.0
DRAIN_SECONDS = 60.0
DRAIN_BYTES = 16 * 1024 * 1024
MAX_DRAINS = 256
"""Tunnels kept open for the meter after their client left; beyond this they close at once."""
READ_SIZE = 64 * 1024
REAP_INTERVAL = 0.25
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "100.100.100.200",  # Alibaba Cloud instance metadata
    "fd00:ec2::254",  # AWS instance metadata over IPv6
    "168.63.129.16",  # Azure wire server
))
"""Cloud metadata endpoints outside the link-local ranges (169.254/16 and fe80::/10 are refused whole)."""
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
_HOP_BY_HOP = frozenset({b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive", b"te",
                         b"trailer", b"upgrade", b"proxy-authenticate"})
HEALTH_PATH = "/halton-meter/edge-health"
"""Answered by the edge itself (`200 ok`): liveness of its event loop, not just a listening socket."""
AUTH_HEADER = b"x-halton-meter-auth"
"""The core's per-start secret (from `run/core.json`, 0600): the core serves no request without it."""


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class EdgeStats:
    connections: int = 0
    active: int = 0
    metered: int = 0
    tunnelled: int = 0
    refused: int = 0
    passthrough: int = 0
    """Tunnels and plain-HTTP requests to metered hosts that went direct, unmetered (each a gap in the log)."""
    passthrough_open: int = 0
    """Pass-through tunnels to metered hosts open right now."""
    passthrough_closed_idle: int = 0
    """…closed by the edge at an idle moment (core back, or the tunnel at its maximum age)."""
    last_gap_reason: str | None = None
    core_down_since: float | None = None
    restart_waits: int = 0
    """Metered CONNECTs that waited for a restarting core instead of passing through."""
    drains: int = 0
    """Metered tunnels whose client left mid-response and whose answer the edge read on for the meter."""
    draining: int = 0
    """Tunnels open right now only for the meter (not counted against the connection cap)."""
    config_error: str | None = None
    """The edge started without a usable config.toml (defaults, traffic passes): why."""


# --------------------------------------------------------------------------------------------------
# The core: where it is, whether it answers
# --------------------------------------------------------------------------------------------------


class CoreLocator:
    """Where the core listens and the secret it wants, from `run/core.json`; re-read only when it changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._port: int | None = None
        self._pid: int | None = None
        self._secret: bytes = b""

    def _load(self) -> None:
        try:
            st = self._path.stat()
        except OSError:
            self._stamp, self._port, self._pid, self._secret = None, None, None, b""
            return
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            try:
                state = json.loads(self._path.read_text())
                self._port = int(state["port"])
                self._pid = int(state["pid"]) if state.get("pid") else None
                self._secret = str(state.get("secret") or "").encode("ascii")
            except (OSError, ValueError, KeyError, TypeError, UnicodeEncodeError):
                self._port, self._pid, self._secret = None, None, b""
            self._stamp = stamp

    def port(self) -> int | None:
        self._load()
        return self._port

    def pid(self) -> int | None:
        self._load()
        return self._pid

    def secret(self) -> bytes:
        self._load()
        return self._secret

    def failing(self) -> bool:
        """The last core that tried to start could not (it left `core-error.json`, removed by the next core
        that starts): not a routine restart, so calls should not wait for one."""
        return (self._path.parent / "core-error.json").exists()

    def alive(self) -> bool:
        """A core process exists (it may be wedged). False when none is published or its process is gone
        or a zombie: the core is restarting (or stopped)."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            import psutil

            return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        except Exception:  # no such process (or not ours to see)
            return False


class CoreHealth:
    """Whether calls should go to the core.

    Before a metered CONNECT, unless a probe succeeded in the last PROBE_FRESH seconds, the edge probes the
    core: a CONNECT to the self-test canary, which the core answers itself with no upstream involved. No
    answer within CORE_TIMEOUT marks the core down; from then on metered hosts go direct at once, with no
    per-call wait, while a background probe marks it up again as soon as it answers. When the core's
    process is gone rather than wedged, calls first wait RESTART_GRACE for its successor.
    """

    def __init__(self, locator: CoreLocator, stats: EdgeStats) -> None:
        self.locator = locator
        self.stats = stats
        self.down_reason: str | None = None
        self._probe: asyncio.Task[None] | None = None
        self._fresh_until = 0.0
        self._busy_since: float | None = None
        self._proc: Any = None
        self._restart_until = 0.0
        self._back: asyncio.Event | None = None
        self.on_up: Callable[[], None] | None = None
        self.restart_grace = RESTART_GRACE

    @property
    def up(self) -> bool:
        return self.down_reason is None

    async def usable(self) -> bool:
        if self.down_reason is None:
            if time.monotonic() < self._fresh_until:
                return True
            if await self.answers_or_busy():
                self._fresh_until = time.monotonic() + PROBE_FRESH
                return True
            alive = self.locator.alive()
            restarting = not alive and not self.locator.failing()
            self.mark_down("core did not answer the probe" if alive else
                           "core restarting" if restarting else "core cannot start", restarting=restarting)
        return await self.wait_for_restart()

    async def wait_for_restart(self) -> bool:
        """Within a restart's grace, wait (bounded) for the new core; True when it answered in time."""
        remaining = self._restart_until - time.monotonic()
        if self.down_reason is None:
            return True
        if remaining <= 0:
            return False
        self.stats.restart_waits += 1
        if self._back is None:
            self._back = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._back.wait(), remaining)
        return self.down_reason is None

    def mark_down(self, reason: str, restarting: bool = False) -> None:
        if self.down_reason is None:
            log.warning("core unavailable: metered hosts pass through until it answers again", reason=reason)
            self.stats.core_down_since = time.time()
            self._restart_until = time.monotonic() + self.restart_grace if restarting else 0.0
            self._back = asyncio.Event()
        self.down_reason = reason
        self._fresh_until = 0.0
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._watch())

    def _mark_up(self) -> None:
        log.info("core answers again: metering resumed")
        self.down_reason = None
        self.stats.core_down_since = None
        self._fresh_until = time.monotonic() + PROBE_FRESH
        self._restart_until = 0.0
        if self._back is not None:
            self._back.set()
        if self.on_up is not None:
            self.on_up()

    async def _watch(self) -> None:
        while self.down_reason is not None:
            restarting = time.monotonic() < self._restart_until
            await asyncio.sleep(RESTART_POLL if restarting else PROBE_INTERVAL)
            if (not restarting or self.locator.alive()) and await self.probe():
                self._mark_up()

    async def answers_or_busy(self, timeout: float = CORE_TIMEOUT) -> bool:
        """The core answered the canary, or it did not but is busy working (a burst on a loaded machine can
        lag its event loop past the probe timeout; sending its calls direct would lose every call on those
        keep-alive tunnels). Stopped, dead or idle-but-silent is wedged; so is busy-but-silent for more than
        BUSY_MAX_SECONDS."""
        before = self._core_cpu()
        if await self.probe(timeout):
            self._busy_since = None
            return True
        after = self._core_cpu()
        if before is None or after is None or after - before < BUSY_CPU_SHARE * timeout:
            return False
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
            log.info("core slow to answer but busy: keep sending calls to it", cpu_s=round(after - before, 3))
        return now - self._busy_since < BUSY_MAX_SECONDS

    def _core_cpu(self) -> float | None:
        """CPU seconds the core has used, or None if it is not running (or stopped, or a zombie)."""
        pid = self.locator.pid()
        if pid is None:
            return None
        try:
            import psutil

            if self._proc is None or self._proc.pid != pid:
                self._proc = psutil.Process(pid)
            if self._proc.status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD,
                                       getattr(psutil, "STATUS_TRACING_STOP", "tracing-stop")):
                return None
            times = self._proc.cpu_times()
            return float(times.user + times.system)
        except Exception:  # gone, not ours, or an unsupported platform: no evidence it is busy
            self._proc = None
            return None

    async def probe(self, timeout: float = CORE_TIMEOUT) -> bool:
        port = self.locator.port()
        if port is None:
            return False
        deadline = time.monotonic() + timeout
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(f"CONNECT {CANARY_HOST}:443 HTTP/1.1\r\nhost: {CANARY_HOST}:443\r\n".encode()
                         + AUTH_HEADER + b": " + self.locator.secret() + b"\r\n\r\n")
            remaining = max(0.01, deadline - time.monotonic())
            reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), remaining)
            return reply.startswith(b"HTTP/1.1 200")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False
        finally:
            writer.close()


# --------------------------------------------------------------------------------------------------
# Gaps
# --------------------------------------------------------------------------------------------------


def utc_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class GapRecorder:
    """Writes the gap log (`store/gaps.py`) for traffic that passed the meter by: a line when it starts, so
    a crash cannot lose it, and a self-contained line when it ends with what it covered. File I/O runs off
    the event loop; a line that cannot be written is logged (the edge's counters still show it)."""

    def __init__(self, directory: Path | None, attribution: Any = None) -> None:
        self.directory = directory
        self.attribution = attribution

    def _append(self, line: dict[str, Any]) -> None:
        if self.directory is None:
            return
        from halton_meter.store.gaps import append_line

        try:
            append_line(self.directory, line)
        except OSError as exc:
            log.error("could not record a gap durably", error=str(exc))

    async def opened(self, kind: str, host: str, reason: str, peer: object, project: str | None = None,
                     server: object = None) -> Gap:
        gap = Gap(id=str(uuid.uuid4()), at=utc_iso(), kind=kind, host=host, reason=reason)
        if self.attribution is not None and isinstance(peer, tuple) and len(peer) >= 2:
            edge = (str(server[0]), int(server[1])) if isinstance(server, tuple) and len(server) >= 2 else None
            gap.lookup = self.attribution.lookup((str(peer[0]), int(peer[1])), project, edge)
        await asyncio.get_running_loop().run_in_executor(None, self._append, gap.line())
        return gap

    async def closed(self, gap: Gap, up: int, down: int, calls_estimated: int | None = None) -> None:
        line = gap.line()
        line.update(bytes_up=up, bytes_down=down, ended_at=utc_iso(),
                    duration_ms=round((time.monotonic() - gap.started) * 1000, 1))
        if gap.kind == "tunnel":
            line["calls_estimated"] = calls_estimated
        if gap.lookup is not None:
            with contextlib.suppress(Exception):
                resolution = await asyncio.wait_for(asyncio.wrap_future(gap.lookup), 2.0)
                line.update(project=resolution.attribution.project,
                            client=client_family(None, resolution.client.tool, resolution.client.process_name))
        await asyncio.get_running_loop().run_in_executor(None, self._append, line)


@dataclass
class Gap:
    id: str
    at: str
    kind: str
    host: str
    reason: str
    started: float = field(default_factory=time.monotonic)
    lookup: Any = None

    def line(self) -> dict[str, Any]:
        line: dict[str, Any] = {"id": self.id, "at": self.at, "kind": self.kind, "host": self.host,
                                "reason": self.reason}
        line.update({"connections": 1} if self.kind == "tunnel" else {"calls": 1})
        return line


class _Slot:
    """One client connection's place in the counts: `active` while its client is there, `draining` while
    only the meter still reads its tunnel (draining tunnels do not count against the connection cap)."""

    def __init__(self, stats: EdgeStats) -> None:
        self.stats = stats
        self.state = "active"

    def start_draining(self) -> None:
        if self.state == "active":
            self.stats.active -= 1
            self.stats.draining += 1
            self.state = "draining"

    def release(self) -> None:
        if self.state == "active":
            self.stats.active -= 1
        elif self.state == "draining":
            self.stats.draining -= 1
        self.state = "released"


# --------------------------------------------------------------------------------------------------
# Target policy
# --------------------------------------------------------------------------------------------------


def parse_authority(authority: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port). Raises Refused(400) for anything else."""
    if authority.startswith("["):
        host, sep, rest = authority[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise Refused(400, "CONNECT target must be host:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = authority.rpartition(":")
        if not sep or not host or ":" in host:
            raise Refused(400, "CONNECT target must be host:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise Refused(400, f"invalid port in {authority!r}")
    return host.lower().rstrip("."), int(port_text)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host literal names, with IPv4 embedded in IPv6 unwrapped — IPv4-mapped
    (`::ffff:127.0.0.1`), IPv4-compatible (`::127.0.0.1`) and NAT64 (`64:ff9b::7f00:1`): Python does not call
    those loopback or link-local, but they reach exactly the same places."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        packed = ip.packed
        if packed[:12] == bytes(12) and int.from_bytes(packed[12:], "big") > 1:  # ::a.b.c.d, not :: or ::1
            return ipaddress.IPv4Address(packed[12:])
        if ip in NAT64_PREFIX:
            return ipaddress.IPv4Address(packed[12:])
    return ip


def refuse_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> None:
    """Refused(403) for addresses a proxy must never relay to: this machine, link-local (cloud metadata),
    other metadata endpoints, unspecified and multicast."""
    if ip is None:
        return
    if ip.is_loopback:
        raise Refused(403, "refusing to proxy to local services (loopback)")
    if ip.is_link_local or ip in METADATA_ADDRESSES:
        raise Refused(403, "refusing to proxy to link-local or cloud metadata addresses")
    if ip.is_unspecified or ip.is_multicast:
        raise Refused(403, "refusing to proxy to an unspecified or multicast address")


def check_target(host: str, port: int, resolve: dict[tuple[str, int], tuple[str, int]],
                 own_ports: set[int] | frozenset[int] = frozenset()) -> None:
    """Never a relay to this machine's services or to cloud metadata: loopback, link-local, metadata,
    unspecified and multicast targets are refused, unless `upstream.resolve` names them explicitly.
    Shared by the edge and the core."""
    if (host, port) in resolve:
        return
    ip = _ip(host)
    if host in LOOPBACK_NAMES or host.endswith(".localhost") or (ip is not None and ip.is_loopback):
        if port in own_ports:
            raise Refused(403, "refusing to proxy to Halton Meter's own ports")
        raise Refused(403, "refusing to proxy to local services (loopback)")
    refuse_address(ip)


def connection_cap(configured: int) -> int:
    """The configured connection cap, lowered to what the open-file limit can hold (after raising the soft
    limit to the hard one where the OS lets us)."""
    try:
        import resource
    except ImportError:  # Windows: no per-process descriptor limit of this kind
        return configured
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return max(16, min(configured, (soft - FD_RESERVE) // FDS_PER_CONNECTION))


# --------------------------------------------------------------------------------------------------
# The edge
# --------------------------------------------------------------------------------------------------


@dataclass
class Edge:
    claims: Callable[[str, int], bool]
    core: CoreLocator
    resolve: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    own_ports: set[int] = field(default_factory=set)
    stats: EdgeStats = field(default_factory=EdgeStats)
    idle_timeout: float = IDLE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    gaps: GapRecorder = field(default_factory=lambda: GapRecorder(None))
    health: CoreHealth | None = None
    passthrough_quiet: float = QUIET_SECONDS
    passthrough_stream_quiet: float = STREAM_QUIET_SECONDS
    passthrough_max_seconds: float = MAX_SECONDS
    handshake_timeout: float = HANDSHAKE_TIMEOUT

    def __post_init__(self) -> None:
        if self.health is None:
            self.health = CoreHealth(self.core, self.stats)
        self.health.on_up = self._wake_reaper
        self._passthrough: dict[PassThrough, Callable[[], None]] = {}
        self._reaper: asyncio.Task[None] | None = None

    # ---- policy ------------------------------------------------------------------------------------

    def check_target(self, host: str, port: int) -> None:
        core_port = self.core.port()
        check_target(host, port, self.resolve, self.own_ports | ({core_port} if core_port else set()))

    def upstream_address(self, host: str, port: int) -> tuple[str, int]:
        return self.resolve.get((host, port), (host, port))

    # ---- connection handling -----------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self.stats.active += 1
        peer = writer.get_extra_info("peername")
        slot = _Slot(self.stats)
        try:
            if self.stats.active > self.max_connections:
                raise Refused(503, f"too many connections ({self.max_connections}); try again shortly")
            await self._handle(reader, writer, peer, slot)
        except Refused as exc:
            self.stats.refused += 1
            await _reply(writer, exc.status, exc.reason)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception as exc:  # a bug must cost one connection, never the edge
            log.error("edge connection failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            slot.release()
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_head(self, reader: asyncio.StreamReader, timeout: float) -> bytes | None:
        """One request head (validated), or None when the client closed before sending one."""
        try:
            first = await asyncio.wait_for(reader.readexactly(1), timeout)
        except asyncio.IncompleteReadError:
            return None
        if not first.isalpha():
            # A TLS ClientHello (0x16) or other binary: someone used https:// for the proxy URL. Say so now
            # instead of waiting for a header end that never comes.
            raise Refused(400, "this is an HTTP proxy: use http://127.0.0.1:PORT as the proxy URL, not https://")
        try:
            head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            raise Refused(431, "request header too large") from None
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise Refused(400, "incomplete request header") from None
            return None
        request_line, _, header_block = head.partition(b"\r\n")
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise Refused(400, "not an HTTP/1.x proxy request")
        for line in header_block.split(b"\r\n"):
            if not line:
                continue
            name, colon, _ = line.partition(b":")
            if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
                raise Refused(400, "malformed header line (no colon, whitespace before it, or obsolete folding)")
        return head

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object,
                      slot: _Slot) -> None:
        head = await self._read_head(reader, HEAD_TIMEOUT)
        if head is None:
            return
        request_line, _, header_block = head.partition(b"\r\n")
        method_bytes, target_bytes, _ = request_line.split(b" ")
        method, target = method_bytes.decode("latin-1"), target_bytes.decode("latin-1")
        if method == "GET" and target == HEALTH_PATH:  # `status` and `doctor`: is the edge's loop answering?
            return await _answer(writer, 200, "OK", b"ok\n")
        if method == "CONNECT":
            host, port = parse_authority(target)
            self.check_target(host, port)
            await self._connect(reader, writer, host, port, peer, slot, proxy_project(header_block))
        elif target.startswith("http://"):
            from halton_meter.edge.plainhttp import PlainHttp

            await PlainHttp(self, reader, writer, peer, slot).serve(head)
        else:
            raise Refused(400, "this is a proxy: send CONNECT host:port or an absolute http:// URL")

    async def _connect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int, peer: object,
        slot: _Slot, project: str | None = None,
    ) -> None:
        if self.claims(host, port):
            upstream = await self._open_core_tunnel(host, port, peer, project, writer.get_extra_info("sockname"))
            if upstream is not None:
                self.stats.metered += 1
                core_reader, core_writer, reply = upstream
                writer.write(reply)
                await writer.drain()
                await self._splice(reader, writer, core_reader, core_writer, metered=True, slot=slot)
                return
            await self._pass_through(reader, writer, host, port, peer, project)
            return
        self.stats.tunnelled += 1
        up_reader, up_writer = await self._open_direct(host, port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await self._splice(reader, writer, up_reader, up_writer)

    async def _pass_through(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str,
                            port: int, peer: object, project: str | None) -> None:
        """A metered host's tunnel, direct while the core cannot take it: a gap from first to last byte,
        watched so it can be closed at its first idle moment once the core is back."""
        up_reader, up_writer = await self._open_direct(host, port)
        reason = self._note_passthrough(host)
        gap = await self.gaps.opened("tunnel", f"{host}:{port}" if port != 443 else host, reason, peer, project,
                                     writer.get_extra_info("sockname"))
        tunnel = PassThrough(host)
        self._watch_passthrough(tunnel, lambda: (writer.transport.abort(), up_writer.transport.abort()))
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._splice(reader, writer, up_reader, up_writer, observer=tunnel)
        finally:
            self._passthrough.pop(tunnel, None)
            self.stats.passthrough_open = len(self._passthrough)
            await self.gaps.closed(gap, tunnel.bytes_up, tunnel.bytes_down, tunnel.calls_estimated)

    def _note_passthrough(self, host: str) -> str:
        reason = self.health.down_reason or "core unavailable"  # type: ignore[union-attr]
        self.stats.passthrough += 1
        self.stats.last_gap_reason = reason
        log.warning("passing a metered host through unmetered", host=host, reason=reason)
        return reason

    async def _open_direct(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        address = self.upstream_address(host, port)
        try:
            if (host, port) not in self.resolve and _ip(host) is None:
                # Resolve here, so a name that points at this machine or at cloud metadata is refused too.
                infos = await asyncio.wait_for(
                    asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), CONNECT_TIMEOUT
                )
                for info in infos:
                    refuse_address(_ip(info[4][0]))
                address = (infos[0][4][0], port)
            return await asyncio.wait_for(asyncio.open_connection(*address), CONNECT_TIMEOUT)
        except TimeoutError:
            raise Refused(504, f"connecting to {host}:{port} timed out") from None
        except socket.gaierror:
            raise Refused(502, f"cannot resolve {host}") from None
        except OSError as exc:
            raise Refused(502, f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None

    async def core_connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A fresh connection to a core that answers (waiting out a restart's grace), or None: go direct."""
        health = self.health
        assert health is not None
        for _ in range(2):  # a core found gone on connecting gets one wait for its successor
            if not await health.usable():
                return None
            core_port = self.core.port()
            if core_port is None:
                health.mark_down("core not running", restarting=not self.core.failing())
                continue
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", core_port, limit=MAX_HEAD_BYTES * 4), CORE_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                health.mark_down(f"core unreachable ({type(exc).__name__})",
                                 restarting=not self.core.alive() and not self.core.failing())
        return None

    async def _open_core_tunnel(
        self, host: str, port: int, peer: object, project: str | None = None, server: object = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes] | None:
        """CONNECT through the core; None (the call then goes direct, as a gap) when the core is down or
        does not answer within CORE_TIMEOUT."""
        health = self.health
        assert health is not None
        opened = await self.core_connection()
        if opened is None:
            return None
        core_reader, core_writer = opened
        authority = f"{_format_host(host)}:{port}"
        extra = b"".join(line + b"\r\n" for line in _meter_headers(peer, project, server, self.core.secret()))
        core_writer.write(f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n".encode() + extra + b"\r\n")
        try:
            await core_writer.drain()
            reply_task = asyncio.ensure_future(core_reader.readuntil(b"\r\n\r\n"))
            done, _ = await asyncio.wait({reply_task}, timeout=0.05)
            if not done:
                # A slow answer is normal (the core connects upstream first), so ask the canary at the same
                # time: a core that does not even answer that is wedged, and this call goes direct, having
                # waited at most one probe timeout.
                probe_task = asyncio.ensure_future(health.answers_or_busy(timeout=CORE_TIMEOUT - 0.05))
                done, _ = await asyncio.wait({reply_task, probe_task}, return_when=asyncio.FIRST_COMPLETED)
                if reply_task not in done and not probe_task.result():
                    reply_task.cancel()
                    raise TimeoutError("core wedged")
                if not probe_task.done():
                    probe_task.cancel()
            reply = await asyncio.wait_for(reply_task, CORE_CONNECT_REPLY_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            core_writer.close()
            health.mark_down(f"core did not answer ({type(exc).__name__})",
                             restarting=not self.core.alive() and not self.core.failing())
            return None
        if not reply.startswith(b"HTTP/1.1 200"):
            # The core refused (its own policy) or could not reach the provider: the client gets that answer.
            status = reply.split(b" ", 2)[1:2]
            core_writer.close()
            raise Refused(int(status[0]) if status and status[0].isdigit() else 502,
                          "the meter's core refused or could not open this tunnel")
        return core_reader, core_writer, reply

    # ---- pass-through tunnels: closed at their first idle moment once the core is back ---------------

    def _watch_passthrough(self, tunnel: PassThrough, close: Callable[[], None]) -> None:
        self._passthrough[tunnel] = close
        self.stats.passthrough_open = len(self._passthrough)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    def _wake_reaper(self) -> None:
        if self._passthrough and (self._reaper is None or self._reaper.done()):
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        """While pass-through tunnels exist: close those that may be closed (core back, or at their maximum
        age) at their first idle moment. Bounded: it ends when the last one is gone."""
        while self._passthrough:
            await asyncio.sleep(REAP_INTERVAL)
            now = time.monotonic()
            core_up = self.health is not None and self.health.up
            for tunnel, close in list(self._passthrough.items()):
                if not core_up and now - tunnel.opened < self.passthrough_max_seconds:
                    continue
                if tunnel.closable(now, self.passthrough_quiet, self.passthrough_stream_quiet):
                    self._passthrough.pop(tunnel, None)
                    self.stats.passthrough_closed_idle += 1
                    log.info("closing an idle pass-through tunnel so the next call is metered", host=tunnel.host,
                             age_s=round(now - tunnel.opened, 1), calls_estimated=tunnel.calls_estimated)
                    close()
            self.stats.passthrough_open = len(self._passthrough)

    # ---- splicing ----------------------------------------------------------------------------------

    async def _splice(
        self,
        a_reader: asyncio.StreamReader,
        a_writer: asyncio.StreamWriter,
        b_reader: asyncio.StreamReader,
        b_writer: asyncio.StreamWriter,
        metered: bool = False,
        slot: _Slot | None = None,
        observer: PassThrough | None = None,
    ) -> tuple[int, int]:
        """Copy both ways until both sides finish; returns (bytes up, bytes down).

        Direct tunnels propagate half-closes. A metered tunnel does not pass the client's going away on to
        the core: it keeps reading the core's answer (discarding it) until the core goes quiet, stops, or a
        bound is hit, so the provider's final usage event reaches the meter and the call is recorded whole
        even when the client aborted mid-stream. The client's first byte must come within the handshake
        timeout; after that, the idle timeout applies.
        """
        state = _Splice(metered, slot, self.stats)
        try:
            up, down = await asyncio.gather(
                self._pipe_up(a_reader, b_writer, state, observer),
                self._pipe_down(b_reader, a_writer, state, observer),
            )
        finally:
            with contextlib.suppress(Exception):
                b_writer.close()
        return up, down

    # Both pipes read with a plain `await reader.read()` under one `asyncio.timeout` each, pushed forward
    # after every read (`reschedule` moves a timer): no task, future or wait set per read — the edge hop
    # costs little more CPU than a bare tunnel.

    async def _pipe_up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Splice,
                       observer: PassThrough | None = None) -> int:
        moved = 0
        loop = asyncio.get_running_loop()
        idle = self.idle_timeout
        try:
            async with asyncio.timeout_at(loop.time() + min(idle, self.handshake_timeout)) as window:
                while True:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        break
                    moved += len(data)
                    if observer is not None:
                        observer.up(data)
                    writer.write(data)
                    await writer.drain()
                    window.reschedule(loop.time() + idle)
        except TimeoutError:
            writer.transport.abort()
            state.abort_client()
            return moved
        except (ConnectionError, OSError):
            if not state.metered:
                writer.transport.abort()
                return moved
        if state.metered:
            state.client_left()
        else:
            with contextlib.suppress(Exception):
                if writer.can_write_eof():
                    writer.write_eof()
        return moved

    async def _pipe_down(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Splice,
                         observer: PassThrough | None = None) -> int:
        moved = drained = 0
        counted = False
        loop = asyncio.get_running_loop()
        idle = self.idle_timeout
        state.client_writer = writer
        try:
            async with asyncio.timeout_at(loop.time() + idle) as window:
                state.down_window = window
                while True:
                    if state.gone:
                        remaining = state.drain_remaining()
                        if remaining <= 0:
                            break  # too many drains already, or the drain's time is up
                        window.reschedule(loop.time() + min(DRAIN_QUIET, remaining))
                    data = await reader.read(READ_SIZE)
                    if not data:
                        if not state.gone:
                            with contextlib.suppress(Exception):
                                if writer.can_write_eof():
                                    writer.write_eof()
                        break
                    moved += len(data)
                    if observer is not None:
                        observer.down(data)
                    if state.gone:
                        drained += len(data)
                        if not counted:  # the client left while its answer was still coming
                            self.stats.drains += 1
                            counted = True
                        if drained > DRAIN_BYTES:
                            break
                        continue
                    try:
                        writer.write(data)
                        await writer.drain()
                    except (ConnectionError, OSError):
                        if not state.metered:
                            raise
                        state.client_left()  # the client left mid-response: drain the rest
                        continue
                    window.reschedule(loop.time() + idle)
        except TimeoutError:  # idle too long, or the drain went quiet: done either way
            if not state.gone:
                writer.transport.abort()
        except (ConnectionError, OSError):
            writer.transport.abort()
        finally:
            state.down_window = None
        return moved


class _Splice:
    """What the two pipes of one tunnel share: whether the client left, and the drain that follows."""

    __slots__ = ("metered", "slot", "stats", "gone", "deadline", "down_window", "client_writer")

    def __init__(self, metered: bool, slot: _Slot | None, stats: EdgeStats) -> None:
        self.metered = metered
        self.slot = slot
        self.stats = stats
        self.gone = False
        self.deadline = 0.0
        self.down_window: asyncio.Timeout | None = None
        self.client_writer: asyncio.StreamWriter | None = None

    def client_left(self) -> None:
        """Metered tunnels only: keep reading the answer for the meter, within the drain bounds (or stop at
        once when too many tunnels are draining already)."""
        if self.gone:
            return
        self.gone = True
        if self.slot is not None and self.stats.draining < MAX_DRAINS:
            self.deadline = time.monotonic() + DRAIN_SECONDS
            self.slot.start_draining()
        window = self.down_window
        if window is not None:  # wake the reading side's timer into drain mode
            loop = asyncio.get_running_loop()
            window.reschedule(loop.time() + (DRAIN_QUIET if self.deadline else 0))

    def abort_client(self) -> None:
        """The client sent nothing in time (or went idle too long): end the whole tunnel now."""
        if self.client_writer is not None:
            self.client_writer.transport.abort()
        window = self.down_window
        if window is not None:
            window.reschedule(asyncio.get_running_loop().time())

    def drain_remaining(self) -> float:
        return self.deadline - time.monotonic() if self.deadline else 0.0


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


PEER_HEADER = b"x-halton-meter-peer"
PROJECT_HEADER = b"x-halton-meter-project"
PROXY_HEADER = b"x-halton-meter-proxy"


def proxy_project(header_block: bytes) -> str | None:
    """The project in `Proxy-Authorization: Basic base64(project:NAME)` — what a client sends for a proxy
    URL `http://project:NAME@127.0.0.1:PORT` (`halton-meter run --project`). Any other credentials are
    ignored: the edge asks for none."""
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"proxy-authorization":
            continue
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        project = urllib.parse.unquote(password).strip()
        return project if user == "project" and valid_project_name(project) else None
    return None


def _meter_headers(peer: object, project: str | None, server: object = None, secret: bytes = b"") -> list[bytes]:
    """What the edge tells the core about a client: its address and the edge address it connected to (for
    the process lookup: a local port is only unique together with its remote end), the project from its
    proxy URL, percent-encoded so any name fits in a header line, and the core's secret."""
    out = [AUTH_HEADER + b": " + secret]
    if isinstance(peer, tuple) and len(peer) >= 2:
        out.append(PEER_HEADER + f": {_format_host(str(peer[0]))}:{peer[1]}".encode())
        if isinstance(server, tuple) and len(server) >= 2:
            out.append(PROXY_HEADER + f": {_format_host(str(server[0]))}:{server[1]}".encode())
    if project:
        out.append(PROJECT_HEADER + b": " + urllib.parse.quote(project, safe="").encode("ascii"))
    return out


async def _answer(writer: asyncio.StreamWriter, status: int, phrase: str, body: bytes) -> None:
    with contextlib.suppress(Exception):
        writer.write(f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n"
                     "connection: close\r\n\r\n".encode() + body)
        await asyncio.wait_for(writer.drain(), 5)


async def _reply(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    phrases = {400: "Bad Request", 403: "Forbidden", 421: "Misdirected Request", 431: "Request Header Fields Too Large",
               502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
    body = f"halton-meter edge: {reason}\n".encode()
    with contextlib.suppress(Exception):
        writer.write(
            f"HTTP/1.1 {status} {phrases.get(status, 'Error')}\r\ncontent-type: text/plain\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await asyncio.wait_for(writer.drain(), 5)


# --------------------------------------------------------------------------------------------------
# Process entry point
# --------------------------------------------------------------------------------------------------


async def run_edge(edge: Edge, sock: socket.socket, grace: float, stats_path: Path | None = None,
                   watcher: Any = None) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(QuietLoopErrors(log))
    server = await asyncio.start_server(edge.handle, sock=sock, limit=MAX_HEAD_BYTES, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    orphan_watch = loop.create_task(watch_parent(stop.set))
    publisher = None
    if stats_path is not None:
        from dataclasses import asdict

        from halton_meter.serve.stats import Publisher

        publisher = Publisher(stats_path, lambda: {
            **asdict(edge.stats), "max_connections": edge.max_connections,
            "config": watcher.state.to_json() if watcher is not None else None}).start()
    config_watch = None
    if watcher is not None:
        from halton_meter.serve.configwatch import watch

        config_watch = loop.create_task(watch(watcher))
    print("READY", flush=True)
    log.info("edge listening", port=sock.getsockname()[1], max_connections=edge.max_connections)
    await stop.wait()
    server.close()  # stop accepting; tunnels in progress continue until they finish or the grace ends
    deadline = time.monotonic() + grace
    while edge.stats.active and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    orphan_watch.cancel()
    if config_watch is not None:
        config_watch.cancel()
    if publisher is not None:
        publisher.stop()


def _routing_and_config() -> tuple[Any, Any, Callable[[str, int], bool], str | None]:
    """The config and the routing table the edge runs on. The edge always starts: with a config.toml it
    cannot use, it runs on the defaults (built-in providers; traffic flows, metered hosts go to a core that
    still runs or pass through as counted gaps) and says why; with a plugin that breaks the host, on the
    built-in plugins alone."""
    from halton_meter.config import Config, load_config
    from halton_meter.core.routing import RoutingTable
    from halton_meter.errors import HaltonError
    from halton_meter.host import PluginHost
    from halton_meter.paths import Paths

    problem = None
    try:
        config = load_config()
    except HaltonError as exc:
        problem = exc.message
        print(f"halton-meter edge: {problem}; passing traffic through with the defaults until it is fixed",
              file=sys.stderr, flush=True)
        config = Config(paths=Paths.from_env())
    try:
        host = PluginHost(config).load().validate_config()
        routing = RoutingTable(host.registries.providers)
    except HaltonError as exc:  # a [prices] provider that does not exist: the same as any config error
        problem = exc.message
        print(f"halton-meter edge: {problem}; passing traffic through with the defaults until it is fixed",
              file=sys.stderr, flush=True)
        config = Config(paths=Paths.from_env())
        host = PluginHost(config).load()
        routing = RoutingTable(host.registries.providers)
    except Exception as exc:  # a third-party plugin that breaks the host must not stop traffic
        log.error("plugin host failed; routing with the built-in providers only",
                  error=f"{type(exc).__name__}: {exc}")
        host = PluginHost(config).load(entry_points=False)
        routing = RoutingTable(host.registries.providers)
    return config, host, routing.claims, problem


def main(argv: list[str] | None = None) -> int:
    from halton_meter.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m halton_meter.edge")
    parser.add_argument("--listen-fd", type=int, help="an already-bound listening socket (from the supervisor)")
    parser.add_argument("--port", type=int, help="bind 127.0.0.1:PORT instead of --listen-fd")
    parser.add_argument("--api-port", type=int, default=None)
    args = parser.parse_args(argv)
    configure_logging("edge")
    config, host, claims, problem = _routing_and_config()
    if args.listen_fd is not None:
        sock = socket.socket(fileno=args.listen_fd)
    else:
        sock = socket.create_server(("127.0.0.1", args.port if args.port is not None else config.edge_port))
    own = {sock.getsockname()[1]}
    if args.api_port:
        own.add(args.api_port)
    from halton_meter.attribution.service import AttributionService

    attribution = AttributionService(host.registries.attributors.ordered(), workers=1)
    edge = Edge(claims=claims, core=CoreLocator(config.paths.core_state), resolve=config.resolve_map(),
                own_ports=own, idle_timeout=config.edge_idle_timeout_seconds,
                max_connections=connection_cap(config.edge_max_connections),
                gaps=GapRecorder(config.paths.spool, attribution),
                passthrough_quiet=config.edge_passthrough_quiet_seconds,
                passthrough_max_seconds=config.edge_passthrough_max_seconds)
    edge.stats.config_error = problem
    from halton_meter.serve.configwatch import ConfigWatcher
    from halton_meter.core.routing import RoutingTable
    from halton_meter.host import PluginHost
    from halton_meter.paths import ensure_private_dir

    def apply_config(new: Any) -> None:
        claims = RoutingTable(PluginHost(new).load().validate_config().registries.providers).claims
        edge.claims, edge.resolve = claims, new.resolve_map()
        edge.idle_timeout = new.edge_idle_timeout_seconds
        edge.max_connections = connection_cap(new.edge_max_connections)
        edge.passthrough_quiet = new.edge_passthrough_quiet_seconds
        edge.passthrough_max_seconds = new.edge_passthrough_max_seconds
        edge.stats.config_error = None

    watcher = ConfigWatcher(config, apply_config)
    from halton_meter.serve.stats import EDGE_STATS

    with contextlib.suppress(OSError):  # counters are informational; traffic does not wait for them
        ensure_private_dir(config.paths.run_dir)
    asyncio.run(run_edge(edge, sock, config.shutdown_grace_seconds, config.paths.run_dir / EDGE_STATS, watcher))
    return 0

