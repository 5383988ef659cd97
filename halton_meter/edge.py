"""The edge: a small asyncio proxy front on the user-visible port (default 127.0.0.1:8081).

* CONNECT to a host a provider claims → handed to the core (mitmproxy), with the client's address so the
  core can attribute the call. If the core does not answer, the edge tunnels directly instead and counts
  the call as a gap: traffic never stops because the meter is down.
* CONNECT to any other host → a direct TCP tunnel. Its TLS is never terminated; we never see inside.
* Plain-HTTP absolute-form requests → to the core when claimed, otherwise forwarded untouched (except the
  hop-by-hop proxy headers) to the origin, one request per connection.
* Never a relay to local services: CONNECTs to our own ports or to link-local addresses are refused.

Only the standard library and the routing table; the edge must stay small and start fast.
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

from halton_meter.client_family import client_family
from halton_meter.config import valid_project_name
from halton_meter.lifecycle.selftest import CANARY_HOST

log = structlog.get_logger("halton_meter.edge")

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT = 10.0
"""A client has this long to send its request head (slowloris)."""
CONNECT_TIMEOUT = 10.0
CORE_TIMEOUT = 0.5
"""The core answers the canary probe at once (no upstream involved): no answer in this long means it is
down or wedged, and calls go direct."""
CORE_CONNECT_REPLY_TIMEOUT = 30.0
"""A real CONNECT's answer waits for the core's upstream connection, so it gets longer."""
PROBE_FRESH = 1.0
BUSY_CPU_SHARE = 0.2
"""A core that used at least this share of one CPU while a probe went unanswered is busy, not wedged."""
BUSY_MAX_SECONDS = 10.0
"""…for at most this long: a core spinning without answering anything is wedged too."""
"""A successful probe vouches for the core this long; then the next metered CONNECT probes first."""
PROBE_INTERVAL = 0.5
IDLE_TIMEOUT = 15 * 60.0
"""Per-read idle limit on tunnels: long enough for a model's longest thinking pause."""
MAX_CONNECTIONS = 2048
DRAIN_QUIET = 3.0
DRAIN_SECONDS = 60.0
DRAIN_BYTES = 16 * 1024 * 1024
MAX_DRAINS = 256
"""Tunnels kept open for the meter after their client left; beyond this they close at once."""
READ_SIZE = 64 * 1024
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_HOP_BY_HOP_PROXY_HEADERS = (b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive")


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
    gaps: int = 0
    last_gap_reason: str | None = None
    core_down_since: float | None = None
    drains: int = 0
    """Metered tunnels whose client left mid-response and whose answer the edge read on for the meter."""
    draining: int = 0
    """Tunnels open right now only for the meter (not counted against the connection cap)."""


class CoreHealth:
    """Whether calls should go to the core.

    Before a metered CONNECT, unless a probe succeeded in the last PROBE_FRESH seconds, the edge probes the
    core: a CONNECT to the self-test canary, which the core answers itself with no upstream involved. No
    answer within CORE_TIMEOUT marks the core down (wedged, stopped, restarting); from then on metered
    hosts go direct at once, with no per-call wait, while a background probe every PROBE_INTERVAL marks it
    up again as soon as it answers.
    """

    def __init__(self, locator: CoreLocator, stats: EdgeStats) -> None:
        self.locator = locator
        self.stats = stats
        self.down_reason: str | None = None
        self._probe: asyncio.Task[None] | None = None
        self._fresh_until = 0.0
        self._busy_since: float | None = None
        self._proc: Any = None

    @property
    def up(self) -> bool:
        return self.down_reason is None

    async def usable(self) -> bool:
        if self.down_reason is not None:
            return False
        if time.monotonic() < self._fresh_until:
            return True
        if await self.answers_or_busy():
            self._fresh_until = time.monotonic() + PROBE_FRESH
            return True
        self.mark_down("core not running" if self.locator.port() is None else "core did not answer the probe")
        return False

    def mark_down(self, reason: str) -> None:
        if self.down_reason is None:
            log.warning("core unavailable: metered hosts pass through until it answers again", reason=reason)
            self.stats.core_down_since = time.time()
        self.down_reason = reason
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while self.down_reason is not None:
            await asyncio.sleep(PROBE_INTERVAL)
            if await self.probe():
                log.info("core answers again: metering resumed")
                self.down_reason = None
                self.stats.core_down_since = None

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
            writer.write(f"CONNECT {CANARY_HOST}:443 HTTP/1.1\r\nhost: {CANARY_HOST}:443\r\n\r\n".encode())
            remaining = max(0.01, deadline - time.monotonic())
            reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), remaining)
            return reply.startswith(b"HTTP/1.1 200")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False
        finally:
            writer.close()


class GapRecorder:
    """Appends a line per unmetered pass-through to `spool/gaps.jsonl` (the core ingests it into the
    database): one when the tunnel opens, so a crash cannot lose it, and one when it closes, with the bytes
    and who the client was. File I/O runs off the event loop."""

    def __init__(self, path: Path | None, attribution: Any = None) -> None:
        self.path = path
        self.attribution = attribution

    def _append(self, line: dict[str, Any]) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as fh:
                fh.write(json.dumps(line, separators=(",", ":")) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # counted in the edge's stats either way
            log.error("could not record a gap durably", error=str(exc))

    async def opened(self, host: str, reason: str, peer: object, project: str | None = None,
                     server: object = None) -> tuple[str, Any]:
        gap_id = str(uuid.uuid4())
        at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lookup = None
        if self.attribution is not None and isinstance(peer, tuple) and len(peer) >= 2:
            edge = (str(server[0]), int(server[1])) if isinstance(server, tuple) and len(server) >= 2 else None
            lookup = self.attribution.lookup((str(peer[0]), int(peer[1])), project, edge)
        await asyncio.get_running_loop().run_in_executor(
            None, self._append, {"id": gap_id, "at": at, "host": host, "reason": reason})
        return gap_id, lookup

    async def closed(self, gap_id: str, lookup: Any, up: int, down: int) -> None:
        line: dict[str, Any] = {"id": gap_id, "bytes_up": up, "bytes_down": down}
        if lookup is not None:
            with contextlib.suppress(Exception):
                resolution = await asyncio.wait_for(asyncio.wrap_future(lookup), 2.0)
                line.update(project=resolution.attribution.project,
                            client=client_family(None, resolution.client.tool, resolution.client.process_name))
        await asyncio.get_running_loop().run_in_executor(None, self._append, line)


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


class CoreLocator:
    """Where the core listens, from `run/core.json`; re-read only when the file changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._port: int | None = None
        self._pid: int | None = None

    def pid(self) -> int | None:
        self.port()
        return self._pid

    def port(self) -> int | None:
        try:
            st = self._path.stat()
        except OSError:
            self._stamp, self._port = None, None
            return None
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            try:
                state = json.loads(self._path.read_text())
                self._port = int(state["port"])
                self._pid = int(state["pid"]) if state.get("pid") else None
            except (OSError, ValueError, KeyError, TypeError):
                self._port, self._pid = None, None
            self._stamp = stamp
        return self._port


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
    """The address a host literal names, with IPv4-mapped IPv6 (`::ffff:127.0.0.1`) unwrapped: Python
    does not call those loopback or link-local, but they reach exactly the same places."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _refuse_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> None:
    if ip is None:
        return
    if ip.is_loopback:
        raise Refused(403, "refusing to proxy to local services (loopback)")
    if ip.is_link_local:
        raise Refused(403, "refusing to proxy to link-local addresses (cloud metadata endpoints)")
    if ip.is_unspecified or ip.is_multicast:
        raise Refused(403, "refusing to proxy to an unspecified or multicast address")


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

    def __post_init__(self) -> None:
        if self.health is None:
            self.health = CoreHealth(self.core, self.stats)

    # ---- policy ------------------------------------------------------------------------------------

    def check_target(self, host: str, port: int) -> None:
        """Never a relay to this machine's services or to cloud metadata: loopback, link-local,
        unspecified and multicast targets are refused, unless `upstream.resolve` names them explicitly."""
        if (host, port) in self.resolve:
            return
        ip = _ip(host)
        if host in LOOPBACK_NAMES or (ip is not None and ip.is_loopback):
            if port in self.own_ports or port == self.core.port():
                raise Refused(403, "refusing to proxy to Halton Meter's own ports")
            raise Refused(403, "refusing to proxy to local services (loopback)")
        _refuse_address(ip)

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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object,
                      slot: _Slot) -> None:
        try:
            first = await asyncio.wait_for(reader.readexactly(1), HEAD_TIMEOUT)
        except asyncio.IncompleteReadError:
            return
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
            return
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
        method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
        project = proxy_project(header_block)
        if method == "CONNECT":
            host, port = parse_authority(target)
            self.check_target(host, port)
            await self._connect(reader, writer, host, port, peer, slot, project)
        elif target.startswith("http://"):
            await self._absolute(reader, writer, head, method, target, slot, peer, project)
        else:
            raise Refused(400, "this is a proxy: send CONNECT host:port or an absolute http:// URL")

    async def _connect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int, peer: object,
        slot: _Slot, project: str | None = None,
    ) -> None:
        gap = None
        if self.claims(host, port):
            upstream = await self._open_core_tunnel(host, port, peer, project, writer.get_extra_info("sockname"))
            if upstream is not None:
                self.stats.metered += 1
                core_reader, core_writer, reply = upstream
                writer.write(reply)
                await writer.drain()
                await self._splice(reader, writer, core_reader, core_writer, metered=True, slot=slot)
                return
            gap = await self.gaps.opened(host, self.health.down_reason or "core unavailable", peer,  # type: ignore[union-attr]
                                         project, writer.get_extra_info("sockname"))
        else:
            self.stats.tunnelled += 1
        up_reader, up_writer = await self._open_direct(host, port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        moved = await self._splice(reader, writer, up_reader, up_writer)
        if gap is not None:
            await self.gaps.closed(gap[0], gap[1], *moved)

    async def _open_direct(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        address = self.upstream_address(host, port)
        try:
            if (host, port) not in self.resolve and _ip(host) is None:
                # Resolve here, so a name that points at this machine or at cloud metadata is refused too.
                infos = await asyncio.wait_for(
                    asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), CONNECT_TIMEOUT
                )
                for info in infos:
                    _refuse_address(_ip(info[4][0]))
                address = (infos[0][4][0], port)
            return await asyncio.wait_for(asyncio.open_connection(*address), CONNECT_TIMEOUT)
        except TimeoutError:
            raise Refused(504, f"connecting to {host}:{port} timed out") from None
        except socket.gaierror:
            raise Refused(502, f"cannot resolve {host}") from None
        except OSError as exc:
            raise Refused(502, f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None

    async def _open_core_tunnel(
        self, host: str, port: int, peer: object, project: str | None = None, server: object = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes] | None:
        """CONNECT through the core; None (the call then goes direct, as a gap) when the core is down or
        does not answer within CORE_TIMEOUT."""
        health = self.health
        assert health is not None
        if not await health.usable():
            return self._gap(host, health.down_reason or "core down")
        core_port = self.core.port()
        if core_port is None:
            health.mark_down("core not running")
            return self._gap(host, "core not running")
        try:
            core_reader, core_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", core_port, limit=MAX_HEAD_BYTES * 4), CORE_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            health.mark_down(f"core unreachable ({type(exc).__name__})")
            return self._gap(host, "core unreachable")
        authority = f"{_format_host(host)}:{port}"
        extra = b"".join(line + b"\r\n" for line in _meter_headers(peer, project, server))
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
            health.mark_down(f"core did not answer ({type(exc).__name__})")
            return self._gap(host, "core did not answer")
        return core_reader, core_writer, reply

    def _gap(self, host: str, reason: str) -> None:
        self.stats.gaps += 1
        self.stats.last_gap_reason = reason
        log.warning("passing a metered host through unmetered", host=host, reason=reason)
        return None

    async def _absolute(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, method: str, target: str,
        slot: _Slot, peer: object = None, project: str | None = None,
    ) -> None:
        authority, _, path = target[len("http://") :].partition("/")
        if "@" in authority:
            authority = authority.rpartition("@")[2]
        host, port = parse_authority(authority if (":" in authority.rpartition("]")[2]) else authority + ":80")
        self.check_target(host, port)
        if self.claims(host, port):
            core_port = self.core.port() if self.health.up else None  # type: ignore[union-attr]
            if core_port is not None:
                try:
                    up_reader, up_writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", core_port), CORE_TIMEOUT
                    )
                except (OSError, TimeoutError):
                    self.health.mark_down("core unreachable")  # type: ignore[union-attr]
                    self._gap(host, "core unreachable")
                else:
                    self.stats.metered += 1
                    up_writer.write(_to_core_head(head, peer, project, writer.get_extra_info("sockname")))
                    await self._splice(reader, writer, up_reader, up_writer, metered=True, slot=slot)
                    return
            else:
                self._gap(host, "core unavailable")
        else:
            self.stats.tunnelled += 1
        up_reader, up_writer = await self._open_direct(host, port)
        up_writer.write(_origin_form(head, method, "/" + path))
        await self._splice(reader, writer, up_reader, up_writer)

    async def _splice(
        self,
        a_reader: asyncio.StreamReader,
        a_writer: asyncio.StreamWriter,
        b_reader: asyncio.StreamReader,
        b_writer: asyncio.StreamWriter,
        metered: bool = False,
        slot: _Slot | None = None,
    ) -> tuple[int, int]:
        """Copy both ways until both sides finish; returns (bytes up, bytes down).

        Direct tunnels propagate half-closes. A metered tunnel does not pass the client's going away on to
        the core: it keeps reading the core's answer (discarding it) until the core goes quiet, stops, or a
        bound is hit, so the provider's final usage event reaches the meter and the call is recorded whole
        even when the client aborted mid-stream.
        """
        state = _Splice(metered, slot, self.stats)
        try:
            up, down = await asyncio.gather(
                self._pipe_up(a_reader, b_writer, state),
                self._pipe_down(b_reader, a_writer, state),
            )
        finally:
            with contextlib.suppress(Exception):
                b_writer.close()
        return up, down

    # Both pipes read with a plain `await reader.read()` under one `asyncio.timeout` each, pushed forward
    # after every read (`reschedule` moves a timer): no task, future or wait set per read — the edge hop
    # costs little more CPU than a bare tunnel.

    async def _pipe_up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Splice) -> int:
        moved = 0
        loop = asyncio.get_running_loop()
        idle = self.idle_timeout
        try:
            async with asyncio.timeout(loop.time() + idle) as window:
                while True:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        break
                    moved += len(data)
                    writer.write(data)
                    await writer.drain()
                    window.reschedule(loop.time() + idle)
        except TimeoutError:
            writer.transport.abort()
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

    async def _pipe_down(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Splice) -> int:
        moved = drained = 0
        counted = False
        loop = asyncio.get_running_loop()
        idle = self.idle_timeout
        try:
            async with asyncio.timeout(loop.time() + idle) as window:
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

    __slots__ = ("metered", "slot", "stats", "gone", "deadline", "down_window")

    def __init__(self, metered: bool, slot: _Slot | None, stats: EdgeStats) -> None:
        self.metered = metered
        self.slot = slot
        self.stats = stats
        self.gone = False
        self.deadline = 0.0
        self.down_window: asyncio.Timeout | None = None

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


def _meter_headers(peer: object, project: str | None, server: object = None) -> list[bytes]:
    """What the edge tells the core about a client: its address and the edge address it connected to (for
    the process lookup: a local port is only unique together with its remote end) and the project from its
    proxy URL, percent-encoded so any name fits in a header line."""
    out = []
    if isinstance(peer, tuple) and len(peer) >= 2:
        out.append(PEER_HEADER + f": {_format_host(str(peer[0]))}:{peer[1]}".encode())
        if isinstance(server, tuple) and len(server) >= 2:
            out.append(PROXY_HEADER + f": {_format_host(str(server[0]))}:{server[1]}".encode())
    if project:
        out.append(PROJECT_HEADER + b": " + urllib.parse.quote(project, safe="").encode("ascii"))
    return out


def _to_core_head(head: bytes, peer: object, project: str | None, server: object = None) -> bytes:
    """A plain-HTTP request for the core: the proxy credentials and any client-sent meter headers out,
    ours in."""
    lines = head.split(b"\r\n")
    out = [lines[0]]
    for line in lines[1:]:
        if not line:
            continue
        name = line.split(b":", 1)[0].strip().lower()
        if name == b"proxy-authorization" or name.startswith(b"x-halton-meter-"):
            continue
        out.append(line)
    out.extend(_meter_headers(peer, project, server))
    return b"\r\n".join(out) + b"\r\n\r\n"


def _origin_form(head: bytes, method: str, path: str) -> bytes:
    """Absolute-form → origin-form; drop proxy hop-by-hop headers; one request per upstream connection."""
    lines = head.split(b"\r\n")
    version = lines[0].rsplit(b" ", 1)[1]
    out = [f"{method} {path} ".encode("latin-1") + version]
    for line in lines[1:]:
        if not line:
            continue
        name = line.split(b":", 1)[0].strip().lower()
        if name in _HOP_BY_HOP_PROXY_HEADERS:
            continue
        out.append(line)
    out.append(b"connection: close")
    return b"\r\n".join(out) + b"\r\n\r\n"


async def _reply(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    phrases = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large",
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


async def run_edge(edge: Edge, sock: socket.socket, grace: float, stats_path: Path | None = None) -> None:
    server = await asyncio.start_server(edge.handle, sock=sock, limit=MAX_HEAD_BYTES)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from halton_meter.process import watch_parent

    orphan_watch = loop.create_task(watch_parent(stop.set))
    publisher = None
    if stats_path is not None:
        from dataclasses import asdict

        from halton_meter.stats import Publisher

        publisher = Publisher(stats_path, lambda: asdict(edge.stats)).start()
    print("READY", flush=True)
    log.info("edge listening", port=sock.getsockname()[1])
    await stop.wait()
    server.close()  # stop accepting; tunnels in progress continue until they finish or the grace ends
    deadline = time.monotonic() + grace
    while edge.stats.active and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    orphan_watch.cancel()
    if publisher is not None:
        publisher.stop()


def main(argv: list[str] | None = None) -> int:
    from halton_meter.config import load_config
    from halton_meter.core.routing import RoutingTable
    from halton_meter.errors import HaltonError
    from halton_meter.host import PluginHost
    from halton_meter.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m halton_meter.edge")
    parser.add_argument("--listen-fd", type=int, help="an already-bound listening socket (from the supervisor)")
    parser.add_argument("--port", type=int, help="bind 127.0.0.1:PORT instead of --listen-fd")
    parser.add_argument("--api-port", type=int, default=None)
    args = parser.parse_args(argv)
    configure_logging("edge")
    try:
        config = load_config()
    except HaltonError as exc:
        print(f"halton-meter edge: {exc.message}", file=sys.stderr, flush=True)
        return int(exc.exit_code)
    host = PluginHost(config).load()
    routing = RoutingTable(host.registries.providers)
    if args.listen_fd is not None:
        sock = socket.socket(fileno=args.listen_fd)
    else:
        sock = socket.create_server(("127.0.0.1", args.port if args.port is not None else config.edge_port))
    own = {sock.getsockname()[1]}
    if args.api_port:
        own.add(args.api_port)
    from halton_meter.attribution import AttributionService

    attribution = AttributionService(host.registries.attributors.ordered(), workers=1)
    edge = Edge(claims=routing.claims, core=CoreLocator(config.paths.core_state), resolve=config.resolve_map(),
                own_ports=own, idle_timeout=config.edge_idle_timeout_seconds,
                max_connections=config.edge_max_connections,
                gaps=GapRecorder(config.paths.spool / "gaps.jsonl", attribution))
    from halton_meter.stats import EDGE_STATS

    asyncio.run(run_edge(edge, sock, config.shutdown_grace_seconds, config.paths.run_dir / EDGE_STATS))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
