"""Plain-HTTP proxying at the edge, one request at a time.

A client may send absolute-form requests (`POST http://host/path HTTP/1.1`) on a kept-alive connection,
each to a different host. Handing the whole connection to whoever got the first request would let the
second one go anywhere — through the core, an unrestricted proxy, to this machine's services or cloud
metadata. So every request is framed on its own (h11, mitmproxy's HTTP/1 library, does the framing), checked
against the target policy, and routed on its own: a claimed host's request to a core (the one the core
pool picks, with that core's secret and the client's address), any other host's straight to the origin,
each on a fresh upstream connection asked to close after the answer. Bodies stream both ways as they
arrive; nothing is buffered. A metered host's request that no core can take is passed through and written
to the gap log as exactly one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import h11

from halton_meter.edge.counters import Slot
from halton_meter.edge.http1 import HOP_BY_HOP, meter_headers, proxy_project, reply
from halton_meter.edge.limits import DRAIN_BYTES, DRAIN_SECONDS, HEAD_TIMEOUT, MAX_HEAD_BYTES, READ_SIZE
from halton_meter.protocol import METER_HEADER_PREFIX_B
from halton_meter.targets import Refused, parse_authority

if TYPE_CHECKING:
    from halton_meter.edge.server import Edge

KEEPALIVE_IDLE = 120.0
"""How long a kept-alive plain-HTTP client connection may sit idle between requests."""


class _Closed(Exception):
    """The client went away (or sent something unframeable): end the connection without an answer."""


class PlainHttp:
    def __init__(self, edge: Edge, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object,
                 slot: Slot) -> None:
        self.edge = edge
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.slot = slot
        self.client = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)

    async def serve(self, first_head: bytes) -> None:
        """Serve requests until the client or a response ends the connection."""
        self.client.receive_data(first_head)
        first = True
        while True:
            try:
                event = await self._client_event(HEAD_TIMEOUT if first else KEEPALIVE_IDLE)
            except h11.RemoteProtocolError as exc:
                await self._error(400, f"malformed request ({exc})")
                return
            except _Closed:
                return
            first = False
            if not isinstance(event, h11.Request):
                return
            try:
                keep = await self._one(event)
            except Refused as exc:
                self.edge.stats.refused += 1
                await self._error(exc.status, exc.reason)
                return
            except (h11.ProtocolError, _Closed, ConnectionError, OSError, TimeoutError):
                return
            if not keep or self.client.our_state is not h11.DONE or self.client.their_state is not h11.DONE:
                return
            self.client.start_next_cycle()

    # ---- one request -------------------------------------------------------------------------------

    async def _one(self, request: h11.Request) -> bool:
        target = request.target.decode("latin-1")
        if not target.startswith("http://"):
            raise Refused(400, "this is a proxy: send an absolute http:// URL (or CONNECT host:port)")
        authority, _, rest = target[len("http://"):].partition("/")
        authority = authority.rpartition("@")[2]
        host, port = parse_authority(authority if ":" in authority.rpartition("]")[2] else authority + ":80")
        names = {name for name, _ in request.headers}
        if b"transfer-encoding" in names and b"content-length" in names:
            raise Refused(400, "a request may not carry both Content-Length and Transfer-Encoding")
        self.edge.check_target(host, port)
        project = proxy_project(b"\r\n".join(n + b": " + v for n, v in request.headers.raw_items()))
        display = host if port == 80 else f"{host}:{port}"
        to_core = gap = None
        metered_host = self.edge.claims(host, port)
        if metered_host:
            to_core = await self.edge.core_connection()
        headers = [(n, v) for n, v in request.headers.raw_items()
                   if n.lower() not in HOP_BY_HOP and not n.lower().startswith(METER_HEADER_PREFIX_B)]
        headers.append((b"connection", b"close"))
        if to_core is not None:
            self.edge.stats.metered += 1
            up_reader, up_writer = to_core.reader, to_core.writer
            sockname = self.writer.get_extra_info("sockname")
            for line in meter_headers(self.peer, project, sockname, to_core.secret()):
                name, _, value = line.partition(b": ")
                headers.append((name, value))
            upstream_target = request.target
        else:
            up_reader, up_writer = await self.edge._open_direct(host, port)
            upstream_target = b"/" + rest.encode("latin-1")
            if metered_host:  # it reaches the provider unmetered: exactly one call, in the gap log
                reason = self.edge._note_passthrough(host)
                gap = await self.edge.gaps.opened("request", display, reason, self.peer, project,
                                                  self.writer.get_extra_info("sockname"))
            else:
                self.edge.stats.tunnelled += 1
        upstream = h11.Connection(h11.CLIENT)
        moved = [0, 0]
        try:
            up_writer.write(upstream.send(h11.Request(method=request.method, target=upstream_target,
                                                      headers=headers, http_version=b"1.1")))
            await asyncio.gather(self._upload(upstream, up_writer, moved),
                                 self._download(upstream, up_reader, metered=to_core is not None, moved=moved))
        finally:
            with contextlib.suppress(Exception):
                up_writer.close()
            if to_core is not None:
                to_core.release()
            if gap is not None:
                await self.edge.gaps.closed(gap, moved[0], moved[1])
        return True

    async def _upload(self, upstream: h11.Connection, up_writer: asyncio.StreamWriter, moved: list[int]) -> None:
        """The request body, client → upstream, as it arrives."""
        while True:
            event = await self._client_event(self.edge.idle_timeout)
            if isinstance(event, h11.Data):
                moved[0] += len(event.data)
                up_writer.write(upstream.send(h11.Data(data=event.data)))
                await up_writer.drain()
            elif isinstance(event, h11.EndOfMessage):
                up_writer.write(upstream.send(h11.EndOfMessage()))
                await up_writer.drain()
                return
            else:
                raise _Closed()

    async def _download(self, upstream: h11.Connection, up_reader: asyncio.StreamReader, metered: bool,
                        moved: list[int]) -> None:
        """The response, upstream → client, as it arrives. If the client leaves mid-answer on a metered call,
        the rest is still read (bounded) so the core sees the provider's final usage."""
        client_gone = False
        drain_until = 0.0
        drained = 0
        while True:
            event = upstream.next_event()
            if event is h11.NEED_DATA:
                timeout = self.edge.idle_timeout if not client_gone else max(0.0, drain_until - time.monotonic())
                try:
                    data = await asyncio.wait_for(up_reader.read(READ_SIZE), timeout)
                except TimeoutError:
                    if client_gone:
                        return
                    raise
                upstream.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise _Closed()  # the answer ended unframed: the client cannot be told where it stops
            if client_gone:
                if isinstance(event, h11.Data):
                    drained += len(event.data)
                    if drained > DRAIN_BYTES:
                        return
                if isinstance(event, h11.EndOfMessage):
                    return
                continue
            try:
                out = self._response_bytes(event)
                if isinstance(event, h11.Data):
                    moved[1] += len(event.data)
                if out:
                    self.writer.write(out)
                    await self.writer.drain()
            except (ConnectionError, OSError):
                if not metered:
                    raise
                client_gone, drain_until = True, time.monotonic() + DRAIN_SECONDS
                self.slot.start_draining()
                continue
            if isinstance(event, h11.EndOfMessage):
                return

    def _response_bytes(self, event: Any) -> bytes:
        if isinstance(event, h11.InformationalResponse | h11.Response):
            headers = [(n, v) for n, v in event.headers.raw_items() if n.lower() not in HOP_BY_HOP]
            cls = type(event)
            return self.client.send(cls(status_code=event.status_code, headers=headers, reason=event.reason))
        if isinstance(event, h11.Data):
            return self.client.send(h11.Data(data=event.data)) or b""
        if isinstance(event, h11.EndOfMessage):
            return self.client.send(h11.EndOfMessage()) or b""
        return b""

    # ---- client side -------------------------------------------------------------------------------

    async def _client_event(self, timeout: float) -> Any:
        """The client's next h11 event, reading as needed (each read bounded by `timeout`)."""
        while True:
            event = self.client.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
            except TimeoutError:
                raise _Closed() from None
            self.client.receive_data(data)

    async def _error(self, status: int, reason: str) -> None:
        """Answer a refused or malformed request (when no answer has started yet); the connection ends."""
        if self.client.our_state not in (h11.IDLE, h11.SEND_RESPONSE, h11.ERROR):
            return
        await reply(self.writer, status, reason)
