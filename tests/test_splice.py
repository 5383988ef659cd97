"""The edge's splice on real loopback sockets: bytes the streams had already read, half-closes, the drain a
metered tunnel keeps after its client leaves, timeouts and flow control."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from halton_meter.edge import splice as splice_module
from halton_meter.edge.counters import EdgeStats, Slot
from halton_meter.edge.splice import splice

pytestmark = pytest.mark.timeout(30)

Upstream = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _tunnel(upstream: Upstream, *, metered: bool = False, idle: float = 30.0, handshake: float = 30.0,
                  before: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Task[tuple[int, int]],
                                                EdgeStats]:
    """A client connected through an edge-like server that splices it to `upstream`. `before` is sent by the
    client before the splice starts, so it sits in the edge's stream buffer at the handover."""
    stats = EdgeStats()
    up_server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    up_port = up_server.sockets[0].getsockname()[1]
    result: asyncio.Future[asyncio.Task[tuple[int, int]]] = asyncio.get_running_loop().create_future()

    async def edge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if before:
            await asyncio.sleep(0.2)  # the client's bytes arrive meanwhile, into the stream's buffer
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", up_port)
        stats.active += 1
        task = asyncio.ensure_future(splice(reader, writer, up_reader, up_writer, stats, idle, handshake,
                                            metered=metered, slot=Slot(stats)))
        result.set_result(task)
        try:
            await task
        finally:
            writer.close()

    edge_server = await asyncio.start_server(edge, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge_server.sockets[0].getsockname()[1])
    if before:
        writer.write(before)
    task = await asyncio.wait_for(result, 5)
    return reader, writer, task, stats


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(b"<" + data + b">")
        await writer.drain()
    writer.close()


def test_bytes_go_both_ways_and_what_the_stream_had_read_goes_first() -> None:
    async def scenario() -> None:
        reader, writer, task, _ = await _tunnel(_echo, before=b"early bytes")
        assert await asyncio.wait_for(reader.readexactly(13), 5) == b"<early bytes>"
        writer.write(b"later")
        assert await asyncio.wait_for(reader.readexactly(7), 5) == b"<later>"
        writer.close()
        up, down = await asyncio.wait_for(task, 5)
        assert (up, down) == (16, 20)

    asyncio.run(scenario())


def test_a_direct_tunnel_passes_half_closes_both_ways() -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # until the client's half-close reaches us
        writer.write(b"got " + request)
        await writer.drain()
        writer.write_eof()
        await asyncio.sleep(0.2)
        writer.close()

    async def scenario() -> None:
        reader, writer, task, _ = await _tunnel(upstream)
        writer.write(b"all of it")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"got all of it"  # then the upstream's end of file
        assert await asyncio.wait_for(task, 5) == (9, 13)
        writer.close()

    asyncio.run(scenario())


def test_a_metered_tunnel_reads_the_answer_on_after_its_client_left() -> None:
    finished = asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(3)
        for _ in range(10):  # a stream, still coming when the client has gone
            writer.write(b"event\n")
            await writer.drain()
            await asyncio.sleep(0.05)
        finished.set()
        writer.close()

    async def scenario() -> None:
        reader, writer, task, stats = await _tunnel(upstream, metered=True)
        writer.write(b"req")
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"event\n"
        writer.transport.abort()  # the client goes away mid-stream
        up, down = await asyncio.wait_for(task, 5)
        assert finished.is_set()  # the tunnel stayed until the upstream's last event
        assert (up, down) == (3, 60)
        assert stats.drains == 1 and stats.draining == 1  # its slot moved to draining

    asyncio.run(scenario())


def test_a_direct_tunnel_ends_with_its_client() -> None:
    upstream_closed = asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        upstream_closed.set()
        writer.close()

    async def scenario() -> None:
        reader, writer, task, stats = await _tunnel(upstream)
        writer.write(b"x")
        await asyncio.sleep(0.05)
        writer.transport.abort()
        await asyncio.wait_for(task, 5)
        await asyncio.wait_for(upstream_closed.wait(), 5)
        assert stats.drains == 0

    asyncio.run(scenario())


def test_a_silent_client_is_cut_at_the_handshake_timeout_and_an_idle_one_at_the_idle_timeout() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        reader, writer, task, _ = await _tunnel(_echo, handshake=0.3, idle=30.0)
        started = loop.time()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await asyncio.wait_for(task, 5)
        assert 0.25 < loop.time() - started < 2.0
        writer.close()

        reader, writer, task, _ = await _tunnel(_echo, handshake=0.3, idle=0.8)
        writer.write(b"a")
        assert await asyncio.wait_for(reader.readexactly(3), 5) == b"<a>"
        await asyncio.sleep(0.5)  # past the handshake timeout, within the idle one: still open
        writer.write(b"b")
        assert await asyncio.wait_for(reader.readexactly(3), 5) == b"<b>"
        started = loop.time()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.6 < loop.time() - started < 2.5
        await asyncio.wait_for(task, 5)
        writer.close()

    asyncio.run(scenario())


def test_a_client_that_does_not_read_stops_the_upstream_being_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flow control: the edge buffers a bounded amount for a slow client, then stops reading upstream."""
    sent = 0
    blocked = asyncio.Event()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readexactly(1)
        chunk = b"z" * 65536
        try:
            while sent < 256 * 1024 * 1024:
                writer.write(chunk)
                try:
                    await asyncio.wait_for(writer.drain(), 0.5)
                except TimeoutError:
                    blocked.set()  # the edge stopped reading us
                    await asyncio.sleep(30)
                sent += len(chunk)
        except (ConnectionError, asyncio.CancelledError):
            pass

    async def scenario() -> None:
        reader, writer, task, _ = await _tunnel(upstream)
        writer.write(b"g")
        await asyncio.wait_for(blocked.wait(), 15)
        assert sent < 64 * 1024 * 1024  # far less than it would have pushed without flow control
        got = 0
        while got < sent:  # reading again lets everything through
            got += len(await asyncio.wait_for(reader.read(1 << 20), 5))
        writer.transport.abort()
        task.cancel()

    asyncio.run(scenario())


def test_no_timer_moves_per_read() -> None:
    """The timeouts are one timer per tunnel, re-armed when it fires, not per chunk."""
    arms = 0
    original = splice_module.Tunnel._arm

    def counting(self: splice_module.Tunnel) -> None:
        nonlocal arms
        arms += 1
        original(self)

    async def scenario() -> None:
        reader, writer, task, _ = await _tunnel(_echo)
        for i in range(200):
            writer.write(b"%d" % i)
            await reader.readuntil(b">")
        writer.close()
        await asyncio.wait_for(task, 5)

    splice_module.Tunnel._arm = counting  # type: ignore[method-assign]
    try:
        asyncio.run(scenario())
    finally:
        splice_module.Tunnel._arm = original  # type: ignore[method-assign]
    assert arms <= 3
