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
import contextlib
import ipaddress
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("halton_meter.edge")

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
CORE_CONNECT_TIMEOUT = 1.0
CORE_REPLY_TIMEOUT = 30.0
IDLE_TIMEOUT = 15 * 60.0
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


class CoreLocator:
    """Where the core listens, from `run/core.json`; re-read only when the file changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._port: int | None = None

    def port(self) -> int | None:
        try:
            st = self._path.stat()
        except OSError:
            self._stamp, self._port = None, None
            return None
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            try:
                self._port = int(json.loads(self._path.read_text())["port"])
            except (OSError, ValueError, KeyError, TypeError):
                self._port = None
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
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass
class Edge:
    claims: Callable[[str, int], bool]
    core: CoreLocator
    resolve: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    own_ports: set[int] = field(default_factory=set)
    stats: EdgeStats = field(default_factory=EdgeStats)
    idle_timeout: float = IDLE_TIMEOUT

    # ---- policy ------------------------------------------------------------------------------------

    def check_target(self, host: str, port: int) -> None:
        ip = _ip(host)
        loopback = host in LOOPBACK_NAMES or (ip is not None and ip.is_loopback)
        if loopback and (port in self.own_ports or port == self.core.port()):
            raise Refused(403, "refusing to proxy to Halton Meter's own ports")
        if ip is not None and ip.is_link_local:
            raise Refused(403, "refusing to proxy to link-local addresses (cloud metadata endpoints)")
        if ip is not None and ip.is_unspecified:
            raise Refused(403, "refusing to proxy to an unspecified address")

    def upstream_address(self, host: str, port: int) -> tuple[str, int]:
        return self.resolve.get((host, port), (host, port))

    # ---- connection handling -----------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self.stats.active += 1
        peer = writer.get_extra_info("peername")
        try:
            await self._handle(reader, writer, peer)
        except Refused as exc:
            self.stats.refused += 1
            await _reply(writer, exc.status, exc.reason)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception as exc:  # a bug must cost one connection, never the edge
            log.error("edge connection failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self.stats.active -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            raise Refused(431, "request header too large") from None
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise Refused(400, "incomplete request header") from None
            return
        request_line, _, _ = head.partition(b"\r\n")
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise Refused(400, "not an HTTP/1.x proxy request")
        method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
        if method == "CONNECT":
            host, port = parse_authority(target)
            self.check_target(host, port)
            await self._connect(reader, writer, host, port, peer)
        elif target.startswith("http://"):
            await self._absolute(reader, writer, head, method, target)
        else:
            raise Refused(400, "this is a proxy: send CONNECT host:port or an absolute http:// URL")

    async def _connect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int, peer: object
    ) -> None:
        if self.claims(host, port):
            upstream = await self._open_core_tunnel(host, port, peer)
            if upstream is not None:
                self.stats.metered += 1
                core_reader, core_writer, reply = upstream
                writer.write(reply)
                await writer.drain()
                await self._splice(reader, writer, core_reader, core_writer)
                return
        else:
            self.stats.tunnelled += 1
        up_reader, up_writer = await self._open_direct(host, port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await self._splice(reader, writer, up_reader, up_writer)

    async def _open_direct(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        address = self.upstream_address(host, port)
        try:
            return await asyncio.wait_for(asyncio.open_connection(*address), CONNECT_TIMEOUT)
        except TimeoutError:
            raise Refused(504, f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise Refused(502, f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None

    async def _open_core_tunnel(
        self, host: str, port: int, peer: object
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes] | None:
        """CONNECT through the core; None (after counting a gap) when the core cannot take the call."""
        core_port = self.core.port()
        if core_port is None:
            self._gap(host, "core not running")
            return None
        try:
            core_reader, core_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", core_port, limit=MAX_HEAD_BYTES * 4), CORE_CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            self._gap(host, f"core unreachable: {type(exc).__name__}")
            return None
        peer_text = ""
        if isinstance(peer, tuple) and len(peer) >= 2:
            peer_text = f"x-halton-meter-peer: {_format_host(str(peer[0]))}:{peer[1]}\r\n"
        authority = f"{_format_host(host)}:{port}"
        core_writer.write(f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n{peer_text}\r\n".encode())
        try:
            await core_writer.drain()
            reply = await asyncio.wait_for(core_reader.readuntil(b"\r\n\r\n"), CORE_REPLY_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            core_writer.close()
            self._gap(host, f"core did not answer: {type(exc).__name__}")
            return None
        return core_reader, core_writer, reply

    def _gap(self, host: str, reason: str) -> None:
        self.stats.gaps += 1
        self.stats.last_gap_reason = reason
        log.warning("passing a metered host through unmetered", host=host, reason=reason)

    async def _absolute(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, method: str, target: str
    ) -> None:
        authority, _, path = target[len("http://") :].partition("/")
        if "@" in authority:
            authority = authority.rpartition("@")[2]
        host, port = parse_authority(authority if (":" in authority.rpartition("]")[2]) else authority + ":80")
        self.check_target(host, port)
        if self.claims(host, port):
            core_port = self.core.port()
            if core_port is not None:
                try:
                    up_reader, up_writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", core_port), CORE_CONNECT_TIMEOUT
                    )
                except (OSError, TimeoutError):
                    self._gap(host, "core unreachable")
                else:
                    self.stats.metered += 1
                    up_writer.write(head)
                    await self._splice(reader, writer, up_reader, up_writer)
                    return
            else:
                self._gap(host, "core not running")
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
    ) -> None:
        """Copy both ways until both sides finish; half-closes propagate; idle sockets time out."""
        try:
            await asyncio.gather(
                self._pipe(a_reader, b_writer),
                self._pipe(b_reader, a_writer),
            )
        finally:
            with contextlib.suppress(Exception):
                b_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await asyncio.wait_for(reader.read(READ_SIZE), self.idle_timeout)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, TimeoutError, OSError):
            writer.transport.abort()
            return
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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
    edge = Edge(claims=routing.claims, core=CoreLocator(config.paths.core_state), resolve=config.resolve_map(),
                own_ports=own)
    from halton_meter.stats import EDGE_STATS

    asyncio.run(run_edge(edge, sock, config.shutdown_grace_seconds, config.paths.run_dir / EDGE_STATS))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
