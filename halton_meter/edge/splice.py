"""Splicing a tunnel: copying bytes both ways between a client and its upstream (the core, or the origin).

Once the tunnel is open, both sockets leave asyncio's streams: each transport gets a small protocol whose
`data_received` writes straight into the other transport. No task wakes up, no future is made and no
timer moves per read (the timeouts are checked by one timer per tunnel that re-arms itself from the time
of the last byte), so the edge hop costs little more CPU than the kernel's own copy. Flow control is the
transports' own: a side whose write buffer is full pauses reading on the other side until it drains.

Whatever the streams had already read (bytes that came with the CONNECT, an end of file) is taken over
first, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

from halton_meter.edge.counters import EdgeStats, Slot
from halton_meter.edge.limits import DRAIN_BYTES, DRAIN_QUIET, DRAIN_SECONDS, MAX_DRAINS
from halton_meter.edge.passthrough import PassThrough


async def splice(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
    stats: EdgeStats,
    idle_timeout: float,
    handshake_timeout: float,
    metered: bool = False,
    slot: Slot | None = None,
    observer: PassThrough | None = None,
) -> tuple[int, int]:
    """Copy both ways (a is the client, b its upstream) until both directions finish; returns (bytes up,
    bytes down).

    Direct tunnels propagate half-closes. A metered tunnel does not pass the client's going away on to
    the core: it keeps reading the core's answer (discarding it) until the core goes quiet, stops, or a
    bound is hit, so the provider's final usage event reaches the meter and the call is recorded whole
    even when the client aborted mid-stream. The client's first byte must come within the handshake
    timeout; after that, the idle timeout applies to each direction.
    """
    tunnel = Tunnel(stats, idle_timeout, handshake_timeout, metered, slot, observer)
    try:
        return await tunnel.run(a_reader, a_writer, b_reader, b_writer)
    finally:
        tunnel.stop_timer()
        with contextlib.suppress(Exception):
            b_writer.close()


class _Side(asyncio.Protocol):
    """One socket of the tunnel: the client's (`up`: what it reads goes up) or the upstream's."""

    __slots__ = ("tunnel", "up")

    def __init__(self, tunnel: Tunnel, up: bool) -> None:
        self.tunnel = tunnel
        self.up = up

    def data_received(self, data: bytes) -> None:
        if self.up:
            self.tunnel.from_client(data)
        else:
            self.tunnel.from_upstream(data)

    def eof_received(self) -> bool:
        if self.up:
            self.tunnel.client_eof()
        else:
            self.tunnel.upstream_eof()
        return True  # keep the socket open for the other direction

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up:
            self.tunnel.client_lost()
        else:
            self.tunnel.upstream_lost(exc)

    def pause_writing(self) -> None:
        self.tunnel.pause_reading(client=not self.up)

    def resume_writing(self) -> None:
        self.tunnel.resume_reading(client=not self.up)


class Tunnel:
    """Both directions of one tunnel, their timeouts and the drain that follows a client leaving."""

    def __init__(self, stats: EdgeStats, idle: float, handshake: float, metered: bool, slot: Slot | None,
                 observer: PassThrough | None) -> None:
        self.stats = stats
        self.idle = idle
        self.handshake = handshake
        self.metered = metered
        self.slot = slot
        self.observer = observer
        self.loop = asyncio.get_running_loop()
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.up_bytes = self.down_bytes = self.drained = 0
        self.up_done = self.down_done = False
        self.client_gone = self.upstream_gone = False  # the socket itself is lost
        self.gone = False  # metered: the client left; the answer is read on for the meter only
        self.drain_until: float | None = None  # loop time the drain must end by (None: no drain allowed)
        now = self.loop.time()
        self.started = now
        self.last_up: float | None = None  # the client's last byte (None: none yet)
        self.last_down = now
        self.timer: asyncio.TimerHandle | None = None
        self.done: asyncio.Future[None] = self.loop.create_future()

    async def run(self, a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                  b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> tuple[int, int]:
        client, upstream = cast(asyncio.Transport, a_writer.transport), cast(asyncio.Transport, b_writer.transport)
        self.client, self.upstream = client, upstream
        self.client_gone, self.upstream_gone = client.is_closing(), upstream.is_closing()
        client.set_protocol(_Side(self, True))
        upstream.set_protocol(_Side(self, False))
        for transport in (client, upstream):
            with contextlib.suppress(Exception):
                transport.resume_reading()  # a stream may have paused it at its buffer limit
        # What the streams read before the handover goes first: buffered bytes, then an end of file.
        self._take_over(a_reader, up=True)
        self._take_over(b_reader, up=False)
        if self.client_gone and not self.up_done:
            self.client_lost()
        if self.upstream_gone and not self.down_done:
            self.upstream_lost(None)
        self._arm()
        await self.done
        return self.up_bytes, self.down_bytes

    def _take_over(self, reader: asyncio.StreamReader, up: bool) -> None:
        # The stream's unread bytes and the end of file it already saw: asyncio has no public way to take
        # them over, so this reads its two attributes (present in every CPython asyncio since 3.4).
        state = vars(reader)
        buffered = bytes(state["_buffer"])
        state["_buffer"].clear()
        if buffered:
            (self.from_client if up else self.from_upstream)(buffered)
        if state["_eof"]:
            (self.client_eof if up else self.upstream_eof)()
        if reader.exception() is not None:
            if up:
                self.client_lost()
            else:
                self.upstream_lost(reader.exception())

    # ---- data -------------------------------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        if self.up_done:
            return
        self.last_up = self.loop.time()
        self.up_bytes += len(data)
        if self.observer is not None:
            self.observer.up(data)
        if self.upstream_gone or self.upstream is None or self.upstream.is_closing():
            self._up_failed()
            return
        self.upstream.write(data)

    def from_upstream(self, data: bytes) -> None:
        if self.down_done:
            return
        self.down_bytes += len(data)
        if self.observer is not None:
            self.observer.down(data)
        self.last_down = self.loop.time()
        if self.gone:
            if not self.drained:  # the client left while its answer was still coming
                self.stats.drains += 1
            self.drained += len(data)
            if self.drained > DRAIN_BYTES:
                self._end_down()
            return
        if self.client_gone or self.client is None or self.client.is_closing():
            if not self.metered:
                self._abort_client()
                self._end_down()
                return
            self.client_left()  # the client left mid-response: drain the rest
            return
        self.client.write(data)

    # ---- ends -------------------------------------------------------------------------------------

    def client_eof(self) -> None:
        if self.up_done:
            return
        self._end_up()
        if self.metered:
            self.client_left()
        elif not self.upstream_gone and self.upstream is not None and self.upstream.can_write_eof():
            with contextlib.suppress(Exception):
                self.upstream.write_eof()

    def client_lost(self) -> None:
        self.client_gone = True
        if not self.up_done:
            self._up_failed()
        if not self.down_done and not self.gone and not self.metered:
            self._end_down()

    def _up_failed(self) -> None:
        """Reading the client or writing upstream failed."""
        if self.up_done:
            return
        self._end_up()
        if self.metered:
            self.client_left()
        else:
            self._abort_upstream()

    def upstream_eof(self) -> None:
        if self.down_done:
            return
        if not self.gone and not self.client_gone and self.client is not None:
            with contextlib.suppress(Exception):
                if self.client.can_write_eof():
                    self.client.write_eof()
        self._end_down()

    def upstream_lost(self, exc: Exception | None) -> None:
        self.upstream_gone = True
        if self.down_done:
            return
        if exc is None:
            self.upstream_eof()  # closed (by us, after the other direction failed): as an end of file
        else:
            self._abort_client()
            self._end_down()

    def client_left(self) -> None:
        """Metered tunnels only: keep reading the answer for the meter, within the drain bounds (or stop at
        once when too many tunnels are draining already)."""
        if self.gone:
            return
        self.gone = True
        if self.slot is not None and self.stats.draining < MAX_DRAINS:
            self.drain_until = self.loop.time() + DRAIN_SECONDS
            self.slot.start_draining()
        self.last_down = self.loop.time()
        if self.drain_until is None:
            self._end_down()
            return
        self.resume_reading(client=False)  # nothing is written to the client any more
        self._arm()

    def _end_up(self) -> None:
        self.up_done = True
        self._check_done()

    def _end_down(self) -> None:
        self.down_done = True
        self._check_done()

    def _check_done(self) -> None:
        if self.up_done and self.down_done and not self.done.done():
            self.done.set_result(None)

    def _abort_client(self) -> None:
        if self.client is not None:
            self.client.abort()

    def _abort_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.abort()

    # ---- flow control -----------------------------------------------------------------------------

    def pause_reading(self, client: bool) -> None:
        transport = self.client if client else self.upstream
        if transport is not None and (client or not self.gone):  # a drain reads on whatever the client does
            with contextlib.suppress(Exception):
                transport.pause_reading()

    def resume_reading(self, client: bool) -> None:
        transport = self.client if client else self.upstream
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.resume_reading()

    # ---- timeouts: one timer per tunnel, re-armed from the last byte when it fires -----------------

    def _up_due(self) -> float:
        """When the client's silence ends the tunnel: the handshake timeout before its first byte, then idle."""
        if self.up_done:
            return float("inf")
        if self.last_up is None:
            return self.started + min(self.idle, self.handshake)
        return self.last_up + self.idle

    def _down_due(self) -> float:
        """When the answer's silence ends its direction: idle, or while draining the quiet time or the drain's
        end, whichever comes first."""
        if self.down_done:
            return float("inf")
        if self.gone:
            return min(self.last_down + DRAIN_QUIET, self.drain_until or 0.0)
        return self.last_down + self.idle

    def _arm(self) -> None:
        if self.done.done():
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(min(self._up_due(), self._down_due()), self._tick)

    def _tick(self) -> None:
        self.timer = None
        now = self.loop.time()
        if now >= self._up_due():  # the client sent nothing in time (or went idle too long): end the whole tunnel
            self.up_done = True
            self._abort_upstream()
            self._abort_client()
            self._end_down()
            return
        if now >= self._down_due():
            if not self.gone:
                self._abort_client()  # idle too long (a drain just ends: its time is up, or it went quiet)
            self._end_down()
        self._arm()

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
