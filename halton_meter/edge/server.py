"""The edge: a small asyncio proxy front on the user-visible port (default 127.0.0.1:8081).

* CONNECT to a host a provider claims → handed to a core (mitmproxy), with the client's address so the
  core can attribute the call. With several cores, the up core with the fewest tunnels open takes it; one
  that does not answer is marked down and the next is tried. If every core is down and one is restarting,
  the CONNECT waits a short grace for it; otherwise the edge tunnels directly instead and records the
  tunnel as a gap: traffic never stops because the meter is down. Such a pass-through tunnel is closed at
  its first idle moment once a core answers again (`passthrough.py`), so the client's next request is
  metered.
* CONNECT to any other host → a direct TCP tunnel. Its TLS is never terminated; we never see inside.
* Plain-HTTP absolute-form requests → routed one request at a time (h11 frames them): a claimed host's
  request goes to a core, any other host's straight to the origin, and every request on a kept-alive
  connection is checked against the target policy again.
* Never a relay to local services: targets on this machine, link-local and cloud metadata addresses are
  refused, before and after DNS, here and again in the core.
* Only the edge may use a core: every request it sends there carries that core's per-start secret.

Only the standard library, h11 (mitmproxy's own HTTP/1 framing library) and the routing table; the edge
must stay small and start fast. The pieces: `corelink` (where each core is, whether it answers), `pool`
(which core takes a call), `gaps` (the gap log), `splice` (copying a tunnel both ways), `http1` (headers and short
answers), `plainhttp` (plain-HTTP requests), `passthrough` (closing pass-through tunnels once a core is
back), `limits`, `counters`; the target policy is `halton_meter.targets`, shared with the core; `main` is
the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from halton_meter.edge.corelink import CORE_CONNECT_REPLY_TIMEOUT, CORE_TIMEOUT, CoreHealth, CoreLocator
from halton_meter.edge.counters import EdgeStats, Slot
from halton_meter.edge.gaps import GapRecorder
from halton_meter.edge.http1 import answer, format_host, meter_headers, proxy_project, reply
from halton_meter.edge.limits import (
    CONNECT_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    HEAD_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
    REAP_INTERVAL,
)
from halton_meter.edge.passthrough import MAX_SECONDS, QUIET_SECONDS, STREAM_QUIET_SECONDS, PassThrough
from halton_meter.edge.pool import CoreLease, CorePool, locator_name
from halton_meter.edge.splice import splice
from halton_meter.protocol import HEALTH_PATH
from halton_meter.serve.process import QuietLoopErrors, install_stop_handlers, watch_parent, watch_stdin
from halton_meter.targets import Refused, check_target, ip_of, parse_authority, refuse_address

log = structlog.get_logger("halton_meter.edge")


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
    cores: list[CoreLocator] = field(default_factory=list)
    """Every core metered calls are balanced over, `core` first; empty: `core` alone."""

    def __post_init__(self) -> None:
        if self.health is None:
            self.health = CoreHealth(self.core, self.stats, locator_name(self.core))
        others = [locator for locator in self.cores if locator is not self.core]
        self.pool = CorePool([self.health, *(CoreHealth(locator, self.stats, locator_name(locator))
                                             for locator in others)], self.stats)
        self.pool.on_up = self._wake_reaper
        self._passthrough: dict[PassThrough, Callable[[], None]] = {}
        self._reaper: asyncio.Task[None] | None = None

    # ---- policy ------------------------------------------------------------------------------------

    def check_target(self, host: str, port: int) -> None:
        check_target(host, port, self.resolve, self.own_ports | self.pool.ports())

    def upstream_address(self, host: str, port: int) -> tuple[str, int]:
        return self.resolve.get((host, port), (host, port))

    # ---- connection handling -----------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self.stats.active += 1
        peer = writer.get_extra_info("peername")
        slot = Slot(self.stats)
        try:
            if self.stats.active > self.max_connections:
                raise Refused(503, f"too many connections ({self.max_connections}); try again shortly")
            await self._handle(reader, writer, peer, slot)
        except Refused as exc:
            self.stats.refused += 1
            await reply(writer, exc.status, exc.reason)
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
                      slot: Slot) -> None:
        head = await self._read_head(reader, HEAD_TIMEOUT)
        if head is None:
            return
        request_line, _, header_block = head.partition(b"\r\n")
        method_bytes, target_bytes, _ = request_line.split(b" ")
        method, target = method_bytes.decode("latin-1"), target_bytes.decode("latin-1")
        if method == "GET" and target == HEALTH_PATH:  # `status` and `doctor`: is the edge's loop answering?
            return await answer(writer, 200, "OK", b"ok\n")
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
        slot: Slot, project: str | None = None,
    ) -> None:
        if self.claims(host, port):
            upstream = await self._open_core_tunnel(host, port, peer, project, writer.get_extra_info("sockname"))
            if upstream is not None:
                lease, reply = upstream
                try:
                    self.stats.metered += 1
                    writer.write(reply)
                    await writer.drain()
                    await self._splice(reader, writer, lease.reader, lease.writer, metered=True, slot=slot)
                finally:
                    lease.release()
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
        def abort_both() -> None:
            writer.transport.abort()
            up_writer.transport.abort()

        self._watch_passthrough(tunnel, abort_both)
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._splice(reader, writer, up_reader, up_writer, observer=tunnel)
        finally:
            self._passthrough.pop(tunnel, None)
            self.stats.passthrough_open = len(self._passthrough)
            await self.gaps.closed(gap, tunnel.bytes_up, tunnel.bytes_down, tunnel.calls_estimated)

    def _note_passthrough(self, host: str) -> str:
        reason = self.pool.down_reason() or "core unavailable"
        self.stats.passthrough += 1
        self.stats.last_gap_reason = reason
        log.warning("passing a metered host through unmetered", host=host, reason=reason)
        return reason

    async def _open_direct(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        address = self.upstream_address(host, port)
        try:
            if (host, port) not in self.resolve and ip_of(host) is None:
                # Resolve here, so a name that points at this machine or at cloud metadata is refused too.
                infos = await asyncio.wait_for(
                    asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), CONNECT_TIMEOUT
                )
                for info in infos:
                    refuse_address(ip_of(str(info[4][0])))
                address = (str(infos[0][4][0]), port)
            return await asyncio.wait_for(asyncio.open_connection(*address), CONNECT_TIMEOUT)
        except TimeoutError:
            raise Refused(504, f"connecting to {host}:{port} timed out") from None
        except socket.gaierror:
            raise Refused(502, f"cannot resolve {host}") from None
        except OSError as exc:
            raise Refused(502, f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None

    async def core_connection(self) -> CoreLease | None:
        """A fresh connection to a core that answers (waiting out a restart's grace when every core is
        down), or None: go direct. The caller releases it when its call ends."""
        return await self.pool.connection()

    async def _open_core_tunnel(
        self, host: str, port: int, peer: object, project: str | None = None, server: object = None
    ) -> tuple[CoreLease, bytes] | None:
        """CONNECT through a core; None (the call then goes direct, as a gap) when no core is up, or none of
        those tried answered within CORE_TIMEOUT. A core that fails mid-CONNECT is marked down and the next
        up core is tried (without a restart wait: that is for finding every core down before asking)."""
        search = self.pool.search()
        lease = await search.next()
        while lease is not None:
            opened = await self._core_connect(lease, host, port, peer, project, server)
            if opened is not None:
                return lease, opened
            lease = await search.next(wait=False)
        return None

    async def _core_connect(self, lease: CoreLease, host: str, port: int, peer: object, project: str | None,
                            server: object) -> bytes | None:
        """Ask the leased core for the tunnel: its `200` answer, or None (released, the core marked down)
        when it did not answer; a refusal is the client's answer."""
        health, locator = lease.health, lease.core.locator
        core_reader, core_writer = lease.reader, lease.writer
        authority = f"{format_host(host)}:{port}"
        extra = b"".join(line + b"\r\n" for line in meter_headers(peer, project, server, lease.secret()))
        core_writer.write(f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n".encode() + extra + b"\r\n")
        try:
            await core_writer.drain()
            reply_task = asyncio.ensure_future(core_reader.readuntil(b"\r\n\r\n"))
            done, _ = await asyncio.wait({reply_task}, timeout=0.05)
            if not done:
                # A slow answer is normal (the core connects upstream first), so ask the canary at the same
                # time: a core that does not even answer that is wedged, and this call goes elsewhere (or
                # direct), having waited at most one probe timeout.
                probe_task = asyncio.ensure_future(health.answers_or_busy(timeout=CORE_TIMEOUT - 0.05))
                waiting: set[asyncio.Future[Any]] = {reply_task, probe_task}
                finished, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if reply_task not in finished and not probe_task.result():
                    reply_task.cancel()
                    raise TimeoutError("core wedged")
                if not probe_task.done():
                    probe_task.cancel()
            reply = await asyncio.wait_for(reply_task, CORE_CONNECT_REPLY_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            lease.release()
            health.mark_down(f"core did not answer ({type(exc).__name__})",
                             restarting=not locator.alive() and not locator.failing())
            return None
        except BaseException:
            lease.release()
            raise
        if not reply.startswith(b"HTTP/1.1 200"):
            # The core refused (its own policy) or could not reach the provider: the client gets that answer.
            status = reply.split(b" ", 2)[1:2]
            lease.release()
            raise Refused(int(status[0]) if status and status[0].isdigit() else 502,
                          "the meter's core refused or could not open this tunnel")
        return reply

    # ---- pass-through tunnels: closed at their first idle moment once a core is back ----------------

    def _watch_passthrough(self, tunnel: PassThrough, close: Callable[[], None]) -> None:
        self._passthrough[tunnel] = close
        self.stats.passthrough_open = len(self._passthrough)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    def _wake_reaper(self) -> None:
        if self._passthrough and (self._reaper is None or self._reaper.done()):
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        """While pass-through tunnels exist: close those that may be closed (a core back, or at their maximum
        age) at their first idle moment. Bounded: it ends when the last one is gone."""
        while self._passthrough:
            await asyncio.sleep(REAP_INTERVAL)
            now = time.monotonic()
            core_up = self.pool.any_up
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

    async def _splice(self, a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                      b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter, metered: bool = False,
                      slot: Slot | None = None, observer: PassThrough | None = None) -> tuple[int, int]:
        """`splice.splice` with this edge's counters and timeouts: (bytes up, bytes down)."""
        return await splice(a_reader, a_writer, b_reader, b_writer, self.stats, self.idle_timeout,
                            self.handshake_timeout, metered, slot, observer)


async def run_edge(edge: Edge, sock: socket.socket, grace: float, stats_path: Path | None = None,
                   watcher: Any = None) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(QuietLoopErrors(log))
    server = await asyncio.start_server(edge.handle, sock=sock, limit=MAX_HEAD_BYTES, backlog=1024)
    stop = asyncio.Event()
    install_stop_handlers(loop, stop.set)
    watch_stdin(loop, stop.set)  # the portable stop: the supervisor closes our stdin
    orphan_watch = loop.create_task(watch_parent(stop.set))
    publisher = None
    if stats_path is not None:
        from dataclasses import asdict

        from halton_meter.serve.stats import Publisher

        publisher = Publisher(stats_path, lambda: {
            **asdict(edge.stats), "max_connections": edge.max_connections, "core_pool": edge.pool.snapshot(),
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
