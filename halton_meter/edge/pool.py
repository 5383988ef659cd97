"""Which core takes the next metered call (`CorePool`): with several cores (docs/concepts/proxy.md, "Several
cores") the edge leases each new metered connection to the core that answers and has the fewest tunnels open,
skips cores that are down (each judged by its own `CoreHealth`, corelink.py), and waits out a restart's grace
only when every core is down."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from halton_meter.edge.corelink import CORE_TIMEOUT, CoreHealth, CoreLocator
from halton_meter.edge.counters import EdgeStats
from halton_meter.edge.limits import MAX_HEAD_BYTES

log = structlog.get_logger("halton_meter.edge")


class Core:
    """One core in the pool: where it is, whether it answers, and how many tunnels the edge has open to it."""

    __slots__ = ("index", "locator", "health", "open", "tunnels")

    def __init__(self, index: int, health: CoreHealth) -> None:
        self.index = index
        self.locator = health.locator
        self.health = health
        self.open = 0
        """Tunnels (and plain-HTTP requests) the edge has open to this core now: what balancing counts."""
        self.tunnels = 0
        """…and in total since the edge started."""

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.health.name, "up": self.health.up, "down_reason": self.health.down_reason,
                "open": self.open, "tunnels": self.tunnels}


class CoreLease:
    """A connection to the core chosen for one client connection. It counts in that core's open tunnels
    until `release()`, which also closes it (whoever ends the call releases it, however it ended)."""

    __slots__ = ("core", "reader", "writer", "_held")

    def __init__(self, core: Core, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.core = core
        self.reader = reader
        self.writer = writer
        self._held = True

    @property
    def health(self) -> CoreHealth:
        return self.core.health

    def secret(self) -> bytes:
        """This core's secret: each core has its own, and refuses a request that carries another's."""
        return self.core.locator.secret()

    def release(self) -> None:
        if self._held:
            self._held = False
            self.core.open -= 1
        with contextlib.suppress(Exception):
            self.writer.close()


class CorePool:
    """Every core the edge may send metered calls to, and which of them takes the next one.

    Several core processes share the metering work; each publishes its own port, pid and secret and can be
    up, wedged, restarting or failing on its own, so each keeps its own `CoreHealth` (its own probe, its own
    background watch that marks it up again). A new client connection goes to the up core with the fewest
    tunnels open to it right now, ties taken in turn: tunnels are long-lived and uneven (a keep-alive SDK
    connection can carry hundreds of calls), so counting the open ones spreads the load better than turns
    alone. A core that turns out not to answer is marked down and the call tries the next; only when none
    is left does it go direct, as a gap. While other cores are up, nobody waits for a restarting one; when
    every core is down and one of them is restarting, the call waits out that core's restart grace, as it
    would for a single core.
    """

    def __init__(self, healths: Sequence[CoreHealth], stats: EdgeStats) -> None:
        if not healths:
            raise ValueError("a core pool needs at least one core")
        self.cores = [Core(index, health) for index, health in enumerate(healths)]
        self.stats = stats
        self.on_up: Callable[[], None] | None = None
        self._turn = 0
        self._change: asyncio.Event | None = None
        for core in self.cores:
            core.health.alone = len(self.cores) == 1
            core.health.on_change = self._changed

    @property
    def any_up(self) -> bool:
        return any(core.health.up for core in self.cores)

    def ports(self) -> set[int]:
        """Every core's port: none of them is ever a tunnel's target."""
        return {port for core in self.cores if (port := core.locator.port()) is not None}

    def down_reason(self) -> str | None:
        """Why a metered call found no core: the first core's reason when it is down (the same words as
        with a single core), else the first down core's."""
        return next((core.health.down_reason for core in self.cores if core.health.down_reason), None)

    def snapshot(self) -> list[dict[str, Any]]:
        return [core.snapshot() for core in self.cores]

    def search(self) -> CoreSearch:
        return CoreSearch(self)

    async def connection(self) -> CoreLease | None:
        """A connection to a core that answers (waiting out a restart's grace when every core is down), or
        None: go direct."""
        return await self.search().next()

    # ---- choosing ----------------------------------------------------------------------------------

    def _pick(self, tried: set[Core]) -> Core | None:
        """The up core not yet tried with the fewest open tunnels; among equals, the next in turn."""
        best: Core | None = None
        count = len(self.cores)
        for step in range(count):
            core = self.cores[(self._turn + step) % count]
            if core.health.down_reason is not None or core in tried:
                continue
            if best is None or core.open < best.open:
                best = core
        if best is not None:
            self._turn = (best.index + 1) % count
        return best

    async def _open(self, core: Core) -> CoreLease | None:
        """A connection to `core`, or None with the core marked down (it did not answer, or is gone)."""
        core.open += 1  # counted at once, so connections arriving together spread out
        lease = None
        try:
            lease = await self._connect(core)
        finally:
            if lease is None:
                core.open -= 1
        return lease

    async def _connect(self, core: Core) -> CoreLease | None:
        health, locator = core.health, core.locator
        if not await health.ready():
            return None
        port = locator.port()
        if port is None:
            health.mark_down("core not running", restarting=not locator.failing())
            return None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, limit=MAX_HEAD_BYTES * 4), CORE_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            health.mark_down(f"core unreachable ({type(exc).__name__})",
                             restarting=not locator.alive() and not locator.failing())
            return None
        if health.down_reason is not None:  # marked down meanwhile (another call found it wedged)
            writer.close()
            return None
        core.tunnels += 1
        return CoreLease(core, reader, writer)

    # ---- waiting for a restart ----------------------------------------------------------------------

    async def _wait_for_restart(self) -> bool:
        """With every core down: wait (bounded by the latest restart grace still running) until one comes
        back; True when one did. No wait when none is restarting: a wedged or failing core gets no grace."""
        counted = False
        while not self.any_up:
            until = max((core.health.restart_until for core in self.cores if core.health.restarting),
                        default=0.0)
            remaining = until - time.monotonic()
            if remaining <= 0:
                return False
            if not counted:
                self.stats.restart_waits += 1
                counted = True
            if self._change is None:
                self._change = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._change.wait(), remaining)
        return True

    def _changed(self, health: CoreHealth) -> None:
        """A core went down, came back, or its successor cannot start: publish whether metering is down
        (every core down, since when), and wake the calls waiting for a restart to look again."""
        if self.any_up:
            if self.stats.core_down_since is not None and len(self.cores) > 1:
                log.info("a core answers again: metering resumed", core=health.name)
            self.stats.core_down_since = None
        elif self.stats.core_down_since is None:
            self.stats.core_down_since = min(
                (core.health.down_since for core in self.cores if core.health.down_since is not None),
                default=time.time())
            if len(self.cores) > 1:
                log.warning("no core answers: metered hosts pass through until one does",
                            reason=self.down_reason())
        if self._change is not None:
            self._change.set()
            self._change = None
        if health.up and self.on_up is not None:
            self.on_up()


class CoreSearch:
    """One client connection's search for a core. Each core is tried at most once before, and once after,
    a single wait for a restart, so a call costs at most a few probe timeouts however the cores fail."""

    def __init__(self, pool: CorePool) -> None:
        self.pool = pool
        self.tried: set[Core] = set()
        self.waited = False

    async def next(self, wait: bool = True) -> CoreLease | None:
        """A connection to the next core to try, or None: no core is usable (go direct). With `wait` False
        (the call already found a core gone mid-request) it takes only a core that is up now."""
        while True:
            core = self.pool._pick(self.tried)
            if core is None:
                if self.waited or not wait or not await self.pool._wait_for_restart():
                    return None
                self.waited = True
                self.tried.clear()
                continue
            self.tried.add(core)
            lease = await self.pool._open(core)
            if lease is not None:
                return lease


def locator_name(locator: CoreLocator) -> str:
    """A core's name in logs and counters: its state file's name (`core`, `core-worker-1`, …)."""
    return locator.path.stem
