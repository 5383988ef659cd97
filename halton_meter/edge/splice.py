"""Splicing a tunnel: copying bytes both ways between a client and its upstream (the core, or the origin).

Both pipes read with a plain `await reader.read()` under one `asyncio.timeout` each, pushed forward after
every read (`reschedule` moves a timer): no task, future or wait set per read — the edge hop costs little
more CPU than a bare tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from halton_meter.edge.counters import EdgeStats, Slot
from halton_meter.edge.limits import DRAIN_BYTES, DRAIN_QUIET, DRAIN_SECONDS, MAX_DRAINS, READ_SIZE
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
    """Copy both ways until both sides finish; returns (bytes up, bytes down).

    Direct tunnels propagate half-closes. A metered tunnel does not pass the client's going away on to
    the core: it keeps reading the core's answer (discarding it) until the core goes quiet, stops, or a
    bound is hit, so the provider's final usage event reaches the meter and the call is recorded whole
    even when the client aborted mid-stream. The client's first byte must come within the handshake
    timeout; after that, the idle timeout applies.
    """
    state = Splice(metered, slot, stats)
    try:
        up, down = await asyncio.gather(
            _pipe_up(a_reader, b_writer, state, idle_timeout, handshake_timeout, observer),
            _pipe_down(b_reader, a_writer, state, idle_timeout, observer),
        )
    finally:
        with contextlib.suppress(Exception):
            b_writer.close()
    return up, down

async def _pipe_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Splice, idle: float,
                   handshake_timeout: float, observer: PassThrough | None = None) -> int:
    moved = 0
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + min(idle, handshake_timeout)) as window:
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

async def _pipe_down(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: Splice, idle: float,
                     observer: PassThrough | None = None) -> int:
    moved = drained = 0
    counted = False
    loop = asyncio.get_running_loop()
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
                        state.stats.drains += 1
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


class Splice:
    """What the two pipes of one tunnel share: whether the client left, and the drain that follows."""

    __slots__ = ("metered", "slot", "stats", "gone", "deadline", "down_window", "client_writer")

    def __init__(self, metered: bool, slot: Slot | None, stats: EdgeStats) -> None:
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
