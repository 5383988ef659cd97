"""The edge balancing metered connections over several cores (`CorePool`, halton_meter/edge/pool.py).

Each fake core is a real asyncio server on a loopback ephemeral port that publishes its port, pid and secret
the way a core does (`run/core.json`, `run/core-worker-K.json`), answers a CONNECT only when it carries its
own secret, and then echoes with its name. A real `Edge` on port 0 and a real client between them. A fake
core "restarting" publishes no pid (its process is gone); an alive one publishes the pid of an idle sleeping
process, so a silent core is judged wedged, not busy.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from halton_meter.edge.corelink import CORE_TIMEOUT, RESTART_GRACE, CoreLocator
from halton_meter.edge.gaps import GapRecorder
from halton_meter.edge.server import Edge
from halton_meter.protocol import AUTH_HEADER_B, CANARY_HOST
from halton_meter.targets import Refused

METERED = "metered.test"
SCENARIO_TIMEOUT = 40.0


@pytest.fixture(scope="module")
def idle_pid() -> Iterator[int]:
    """An alive, idle process to stand for a core that is running (so a silent one is wedged, not gone)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(10)


class FakeCore:
    """A core as the edge sees it: a state file, the canary, CONNECTs checked against its own secret."""

    def __init__(self, name: str, path: Path, pid: int | None) -> None:
        self.name = name
        self.path = path
        self.pid = pid
        self.secret = secrets.token_hex(8)
        self.wedged = False
        """Accept connections, read the head, never answer (a stopped or hung core)."""
        self.port = 0
        self.tunnels = 0
        self.requests = 0
        self.seen: list[bytes] = []
        """The secret every CONNECT and request carried."""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, new_secret: bool = False) -> FakeCore:
        if new_secret:
            self.secret = secrets.token_hex(8)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.publish()
        return self

    def publish(self, pid: Any = "same") -> None:
        """Write the state file (a fresh inode, as the core's atomic write makes)."""
        if pid != "same":
            self.pid = pid
        state = {"port": self.port, "pid": self.pid, "secret": self.secret}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)

    async def stop(self) -> None:
        """The process is gone: its port refuses, its connections are cut."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if self.wedged:
                while await reader.read(1024):
                    pass
                return
            request_line, *lines = head.split(b"\r\n")
            secret = next((line.partition(b":")[2].strip() for line in lines
                           if line.partition(b":")[0].strip().lower() == AUTH_HEADER_B), b"")
            if secret != self.secret.encode():
                writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                return
            if CANARY_HOST.encode() in request_line:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                return
            self.seen.append(secret)
            if request_line.startswith(b"CONNECT "):
                self.tunnels += 1
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                while data := await reader.read(1024):
                    writer.write(self.name.encode() + b":" + data)
                    await writer.drain()
                    if data.endswith(b"bye"):
                        break
            else:  # a plain-HTTP request routed to the core
                self.requests += 1
                body = self.name.encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: " + str(len(body)).encode()
                             + b"\r\nconnection: close\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


class Setup:
    def __init__(self, edge: Edge, port: int, cores: list[FakeCore], spool: Path) -> None:
        self.edge = edge
        self.port = port
        self.cores = cores
        self.spool = spool

    def health(self, index: int) -> Any:
        return self.edge.pool.cores[index].health

    async def settled(self, held: int = 0) -> None:
        """Until the edge has no tunnel open to any core but the `held` ones (so the next pick sees only
        those)."""
        deadline = time.monotonic() + 10
        while sum(core.open for core in self.edge.pool.cores) > held:
            assert time.monotonic() < deadline, [core.open for core in self.edge.pool.cores]
            await asyncio.sleep(0.01)

    async def call(self, payload: bytes = b"hello") -> tuple[str, float]:
        """One metered CONNECT, one exchange, closed: who answered ("direct" when passed through) and how
        long it took."""
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(f"CONNECT {METERED}:443 HTTP/1.1\r\nhost: {METERED}:443\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
            assert head.startswith(b"HTTP/1.1 200"), head
            writer.write(payload + b" bye")
            answer = await asyncio.wait_for(reader.readuntil(b"bye"), 15)
        finally:
            writer.close()
        name, _, echoed = answer.partition(b":")
        assert echoed == payload + b" bye"
        return name.decode(), time.monotonic() - started

    async def calls(self, count: int, held: int = 0) -> list[str]:
        """`count` calls one after the other, each begun once the one before has left the core's count."""
        names = []
        for _ in range(count):
            name, _ = await self.call()
            names.append(name)
            await self.settled(held)
        return names

    async def hold(self) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
        """A metered tunnel kept open (a long streaming call): who carries it, and its client end."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"CONNECT {METERED}:443 HTTP/1.1\r\nhost: {METERED}:443\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
        assert head.startswith(b"HTTP/1.1 200"), head
        writer.write(b"ping")
        answer = await asyncio.wait_for(reader.readuntil(b"ping"), 15)
        return answer.partition(b":")[0].decode(), reader, writer

    def gap_lines(self) -> list[dict[str, Any]]:
        path = self.spool / "gaps.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def _direct_echo() -> asyncio.Server:
    """The provider itself, reached only by a pass-through: echoes as `direct`."""
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1024):
                writer.write(b"direct:" + data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


def run_pool(tmp_path: Path, idle_pid: int, count: int, scenario: Callable[[Setup], Awaitable[None]]) -> None:
    """Start `count` fake cores (up, alive), an edge balancing over them, and run the scenario, bounded."""
    run = tmp_path / "run"
    run.mkdir()
    paths = [run / "core.json", *(run / f"core-worker-{i}.json" for i in range(1, count))]

    async def main() -> None:
        cores = [await FakeCore(chr(ord("A") + i), path, idle_pid).start() for i, path in enumerate(paths)]
        direct = await _direct_echo()
        locators = [CoreLocator(path) for path in paths]
        spool = tmp_path / "spool"
        edge = Edge(claims=lambda host, port: host == METERED, core=locators[0], cores=locators,
                    resolve={(METERED, 443): ("127.0.0.1", direct.sockets[0].getsockname()[1])},
                    gaps=GapRecorder(spool))
        server = await asyncio.start_server(edge.handle, "127.0.0.1", 0, limit=16 * 1024)
        edge.own_ports.add(server.sockets[0].getsockname()[1])
        try:
            await asyncio.wait_for(scenario(Setup(edge, server.sockets[0].getsockname()[1], cores, spool)),
                                   SCENARIO_TIMEOUT)
        finally:
            server.close()
            direct.close()
            for core in cores:
                await core.stop()

    asyncio.run(main())


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# ---- spreading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3])
def test_connections_are_spread_over_every_core(tmp_path: Path, idle_pid: int, count: int) -> None:
    async def scenario(s: Setup) -> None:
        names = await s.calls(3 * count)
        assert {name: names.count(name) for name in set(names)} == {core.name: 3 for core in s.cores}
        held = await asyncio.gather(*(s.hold() for _ in range(2 * count)))  # arriving together
        carried = [name for name, _, _ in held]
        assert {name: carried.count(name) for name in set(carried)} == {core.name: 2 for core in s.cores}
        assert [core.open for core in s.edge.pool.cores] == [2] * count
        assert s.edge.stats.metered == 5 * count and s.edge.stats.passthrough == 0
        for _, _, writer in held:
            writer.write(b" bye")
            writer.close()

    run_pool(tmp_path, idle_pid, count, scenario)


@pytest.mark.parametrize("count", [2, 3])
def test_the_core_with_fewest_open_tunnels_takes_the_next_connection(tmp_path: Path, idle_pid: int,
                                                                     count: int) -> None:
    """Turns alone would give the busy cores every other call; counting open tunnels sends each new call to
    the idle core while the others carry long streams."""
    async def scenario(s: Setup) -> None:
        held = [await s.hold() for _ in range(count - 1)]
        busy = {name for name, _, _ in held}
        [idle] = [core.name for core in s.cores if core.name not in busy]
        assert await s.calls(2 * count, held=count - 1) == [idle] * (2 * count)
        for _, _, writer in held:
            writer.write(b" bye")
            writer.close()

    run_pool(tmp_path, idle_pid, count, scenario)


def test_each_core_gets_its_own_secret(tmp_path: Path, idle_pid: int) -> None:
    """A fake core refuses (403) a CONNECT or request without its own secret, so every call answered proves
    it; and each saw only its own."""
    async def scenario(s: Setup) -> None:
        assert len({core.secret for core in s.cores}) == 3
        await s.calls(6)
        for _ in range(6):  # plain-HTTP requests routed to the cores, one connection each
            reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
            writer.write(f"GET http://{METERED}/v1/models HTTP/1.1\r\nhost: {METERED}\r\n\r\n".encode())
            answer = await asyncio.wait_for(reader.read(65536), 15)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith((b"A", b"B", b"C")), answer
            await s.settled()
        for core in s.cores:
            assert core.tunnels == 2 and core.requests == 2, (core.name, core.tunnels, core.requests)
            assert core.seen == [core.secret.encode()] * 4
        assert s.edge.stats.passthrough == 0

    run_pool(tmp_path, idle_pid, 3, scenario)


# ---- one core down -------------------------------------------------------------------------------


def test_a_core_whose_port_refuses_is_skipped_with_no_gap_and_no_wait(tmp_path: Path, idle_pid: int) -> None:
    """A worker restarting (port refuses, process gone): the others take its calls at once — no restart
    grace while other cores are up — and its successor is used again as soon as it answers."""
    async def scenario(s: Setup) -> None:
        await s.calls(3)  # every core vouched for by a fresh probe
        b = s.cores[1]
        await b.stop()
        b.publish(pid=None)
        started = time.monotonic()
        names = await s.calls(6)
        took = time.monotonic() - started
        assert "B" not in names and set(names) == {"A", "C"}
        assert took < RESTART_GRACE / 4, took
        assert not s.health(1).up and s.health(1).restarting  # down, and its grace is running
        assert s.health(0).up and s.health(2).up
        assert s.edge.stats.passthrough == 0 and s.edge.stats.restart_waits == 0 and not s.gap_lines()
        assert s.edge.stats.core_down_since is None  # metering is not down: two cores meter

        await b.start(new_secret=True)  # its successor: a new port, pid and secret
        b.publish(pid=idle_pid)
        await _until(lambda: s.health(1).up, 5, "the edge seeing core B answer again")
        assert (await s.calls(6)).count("B") == 2
        assert b.seen[-1] == b.secret.encode()

    run_pool(tmp_path, idle_pid, 3, scenario)


def test_a_wedged_core_is_marked_down_and_the_others_serve(tmp_path: Path, idle_pid: int) -> None:
    """Accepts but never answers: the first call sent its way costs one probe timeout, then it gets no
    calls; it is used again once its background probe finds it answering."""
    async def scenario(s: Setup) -> None:
        b = s.cores[1]
        b.wedged = True
        results = [await s.call() for _ in range(4)]
        assert [name for name, _ in results] == ["A"] * 4
        assert max(took for _, took in results) < CORE_TIMEOUT + 1.0, results
        assert sorted(took for _, took in results)[-2] < CORE_TIMEOUT, results  # only one paid the probe
        assert s.health(1).down_reason == "core did not answer the probe"
        assert not s.health(1).restarting and s.edge.stats.passthrough == 0
        b.wedged = False
        await _until(lambda: s.health(1).up, 5, "the background probe finding core B answering")
        await s.settled()
        assert set(await s.calls(4)) == {"A", "B"}

    run_pool(tmp_path, idle_pid, 2, scenario)


def test_a_core_that_wedges_mid_connect_is_marked_down_and_the_call_goes_to_another(
        tmp_path: Path, idle_pid: int) -> None:
    """Vouched for by a fresh probe, then silent: the CONNECT sent to it gets no answer, the canary asked
    alongside gets none either, and the same client call is handed to the next core."""
    async def scenario(s: Setup) -> None:
        assert await s.calls(2) == ["A", "B"]
        s.cores[1].wedged = True
        results = [await s.call() for _ in range(2)]  # the second is B's turn
        assert [name for name, _ in results] == ["A", "A"]
        assert max(took for _, took in results) < CORE_TIMEOUT + 1.0, results
        assert s.health(1).down_reason == "core did not answer (TimeoutError)" and s.health(0).up
        assert s.edge.stats.passthrough == 0 and not s.gap_lines()

    run_pool(tmp_path, idle_pid, 2, scenario)


# ---- every core down -----------------------------------------------------------------------------


def test_every_core_down_passes_through_as_a_gap(tmp_path: Path, idle_pid: int) -> None:
    async def scenario(s: Setup) -> None:
        for core in s.cores:
            core.wedged = True  # alive and silent: no restart grace
        name, took = await s.call()
        assert name == "direct" and took < 2 * CORE_TIMEOUT + 1.0
        name, took = await s.call()  # every core known down: straight through, no probe
        assert name == "direct" and took < CORE_TIMEOUT
        assert all(not core.health.up for core in s.edge.pool.cores)
        assert s.edge.stats.passthrough == 2 and s.edge.stats.metered == 0 and s.edge.stats.restart_waits == 0
        assert s.edge.stats.last_gap_reason == "core did not answer the probe"
        assert s.edge.stats.core_down_since is not None
        await _until(lambda: len(s.gap_lines()) == 4, 5, "two gaps, opened and closed")
        assert {(g["kind"], g["host"], g["reason"]) for g in s.gap_lines()} == {
            ("tunnel", METERED, "core did not answer the probe")}
        s.cores[1].wedged = False
        await _until(lambda: s.edge.stats.core_down_since is None, 5, "metering resumed on core B")
        assert await s.calls(2) == ["B", "B"]

    run_pool(tmp_path, idle_pid, 2, scenario)


def test_every_core_down_and_one_restarting_waits_for_its_successor(tmp_path: Path, idle_pid: int) -> None:
    async def scenario(s: Setup) -> None:
        for core in s.edge.pool.cores:
            core.health.restart_grace = 3.0
        a, b = s.cores
        await a.stop()
        a.publish(pid=None)  # restarting
        b.wedged = True  # wedged: no grace of its own

        async def successor() -> None:
            await asyncio.sleep(CORE_TIMEOUT * 2 + 0.3)
            await a.start(new_secret=True)
            a.publish(pid=idle_pid)

        back = asyncio.ensure_future(successor())
        name, took = await s.call()
        await back
        assert name == "A" and took < 3.0, took
        assert s.edge.stats.restart_waits == 1 and s.edge.stats.passthrough == 0

    run_pool(tmp_path, idle_pid, 2, scenario)


def test_every_core_down_and_the_grace_runs_out_passes_through(tmp_path: Path, idle_pid: int) -> None:
    async def scenario(s: Setup) -> None:
        for core in s.edge.pool.cores:
            core.health.restart_grace = 0.8
        for core in s.cores:
            await core.stop()
            core.publish(pid=None)
        name, took = await s.call()
        assert name == "direct" and 0.7 < took < 3.0, took
        assert s.edge.stats.restart_waits == 1 and s.edge.stats.passthrough == 1
        assert s.edge.stats.last_gap_reason == "core restarting"

    run_pool(tmp_path, idle_pid, 2, scenario)


def test_a_pass_through_tunnel_is_closed_once_any_core_is_back(tmp_path: Path, idle_pid: int) -> None:
    async def scenario(s: Setup) -> None:
        s.edge.passthrough_quiet, s.edge.passthrough_stream_quiet = 0.2, 0.3
        for core in s.cores:
            core.wedged = True
        name, reader, writer = await s.hold()
        assert name == "direct" and s.edge.stats.passthrough_open == 1
        await asyncio.sleep(0.6)
        assert s.edge.stats.passthrough_open == 1  # no core back: it stays open
        s.cores[1].wedged = False  # a worker, not the first core, comes back
        try:
            assert await asyncio.wait_for(reader.read(1024), 5) == b""
        except ConnectionError:
            pass
        writer.close()
        assert s.edge.stats.passthrough_closed_idle == 1 and not s.health(0).up and s.health(1).up

    run_pool(tmp_path, idle_pid, 2, scenario)


# ---- policy --------------------------------------------------------------------------------------


def test_check_target_refuses_every_cores_port(tmp_path: Path, idle_pid: int) -> None:
    async def scenario(s: Setup) -> None:
        for core in s.cores:
            with pytest.raises(Refused) as info:
                s.edge.check_target("127.0.0.1", core.port)
            assert info.value.status == 403 and "own ports" in info.value.reason
            reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
            writer.write(f"CONNECT 127.0.0.1:{core.port} HTTP/1.1\r\n\r\n".encode())
            answer = await asyncio.wait_for(reader.read(65536), 5)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 403") and b"own ports" in answer, answer
            assert core.tunnels == 0

    run_pool(tmp_path, idle_pid, 3, scenario)
