"""The edge's link to a core: where it listens and the secret it wants (`CoreLocator`), and whether calls
should go to it at all (`CoreHealth`). Which core takes the next metered call is `pool.py`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from halton_meter.edge.counters import EdgeStats
from halton_meter.protocol import AUTH_HEADER_B, CANARY_HOST

log = structlog.get_logger("halton_meter.edge")

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
RESTART_GRACE = 8.0
"""When the core's process is gone (restarting after a crash, an upgrade, a `restart`), a metered CONNECT
waits up to this long for the new core before passing through: the supervisor has one up in about two
seconds, but a loaded machine can take three times that, and a routine restart should cost a little latency,
not unmetered calls. The wait ends early when the new core reports it cannot start (`core-error.json`). A
wedged core (alive, silent) gets no grace: calls go direct after one probe timeout."""
RESTART_POLL = 0.1


class CoreLocator:
    """Where a core listens and the secret it wants, from its state file (`run/core.json` for the first
    core, `run/core-worker-N.json` for the others); re-read only when it changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._port: int | None = None
        self._pid: int | None = None
        self._secret: bytes = b""

    @property
    def path(self) -> Path:
        return self._path

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
    process is gone rather than wedged, its successor gets RESTART_GRACE (`restarting`): the pool
    (`pool.py`) holds calls that long when no other core answers.
    """

    def __init__(self, locator: CoreLocator, stats: EdgeStats, name: str = "core") -> None:
        self.locator = locator
        self.stats = stats
        self.name = name
        self.down_reason: str | None = None
        self.down_since: float | None = None
        self._probe: asyncio.Task[None] | None = None
        self._fresh_until = 0.0
        self._busy_since: float | None = None
        self._proc: Any = None
        self._restart_until = 0.0
        self.on_change: Callable[[CoreHealth], None] | None = None
        """Set by a `CorePool`: told when this core goes down, comes back, or stops being worth waiting for.
        The pool then publishes whether metering is down; a core on its own publishes that itself."""
        self.alone = True
        """The only core: while it is down, metered hosts pass through (with others, the others take them)."""
        self.restart_grace = RESTART_GRACE

    @property
    def up(self) -> bool:
        return self.down_reason is None

    @property
    def restarting(self) -> bool:
        """Down because its process is gone, and still within the grace its successor gets to come up."""
        return self.down_reason is not None and time.monotonic() < self._restart_until

    @property
    def restart_until(self) -> float:
        return self._restart_until

    async def ready(self) -> bool:
        """Up and vouched for: by a recent probe, or by one now. A core that does not answer it is marked
        down here; this never waits for a restart (the caller decides whether another core can take the
        call instead)."""
        if self.down_reason is not None:
            return False
        if time.monotonic() < self._fresh_until:
            return True
        if await self.answers_or_busy():
            self._fresh_until = time.monotonic() + PROBE_FRESH
            return True
        alive = self.locator.alive()
        restarting = not alive and not self.locator.failing()
        self.mark_down("core did not answer the probe" if alive else
                       "core restarting" if restarting else "core cannot start", restarting=restarting)
        return False

    def mark_down(self, reason: str, restarting: bool = False) -> None:
        transition = self.down_reason is None
        if transition:
            if self.alone:
                log.warning("core unavailable: metered hosts pass through until it answers again",
                            reason=reason)
            else:
                log.warning("core unavailable: its calls go to the other cores until it answers again",
                            core=self.name, reason=reason)
            self.down_since = time.time()
            self._restart_until = time.monotonic() + self.restart_grace if restarting else 0.0
        self.down_reason = reason
        self._fresh_until = 0.0
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._watch())
        if transition:
            self._changed()

    def _mark_up(self) -> None:
        log.info("core answers again: metering resumed" if self.alone else "core answers again",
                 core=self.name)
        self.down_reason = None
        self.down_since = None
        self._fresh_until = time.monotonic() + PROBE_FRESH
        self._restart_until = 0.0
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)
        else:
            self.stats.core_down_since = self.down_since

    async def _watch(self) -> None:
        while self.down_reason is not None:
            restarting = time.monotonic() < self._restart_until
            if restarting and self.locator.failing():  # the successor cannot start: stop holding calls
                self._restart_until, restarting = 0.0, False
                self._changed()
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
                         + AUTH_HEADER_B + b": " + self.locator.secret() + b"\r\n\r\n")
            remaining = max(0.01, deadline - time.monotonic())
            reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), remaining)
            return reply.startswith(b"HTTP/1.1 200")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return False
        finally:
            writer.close()
