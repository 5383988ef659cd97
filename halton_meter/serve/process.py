"""Helpers for the meter's child processes, and what makes them portable.

POSIX and Windows differ in three things `serve` needs (docs/testing.md, "Other platforms"):

* **Stopping a child.** POSIX has SIGTERM; Windows has no signal a process can send another that the
  receiver can handle. So the supervisor starts every child with a pipe on its stdin (`CONTROL_ENV`) and
  closing that pipe is the portable stop: the child sees end-of-file and stops gracefully, exactly as on
  SIGTERM. The same end-of-file comes when the supervisor dies, even by SIGKILL, so an orphan stops too.
  On POSIX the supervisor also sends SIGTERM, as before.
* **Signals in the child.** asyncio's `add_signal_handler` exists only on POSIX event loops; elsewhere Ctrl-C
  (SIGINT, and SIGBREAK for Ctrl-Break) is caught with `signal.signal` (`install_stop_handlers`).
* **The proxy port.** On POSIX the supervisor binds it and passes the socket to the edge by descriptor, so it
  never closes while `serve` lives. Windows cannot inherit a listening socket that way, so there the edge
  binds the port itself, exclusively (`SO_EXCLUSIVEADDRUSE`: no other process can bind it while it is held),
  at the port the supervisor chose (`bind_own_port`). The cost: while the edge restarts (about a second
  after it crashed) nothing listens, so a client connecting then is refused and retries, where on POSIX it
  would wait in the supervisor's socket.

`HALTON_METER_PORTABLE=1` makes `serve` take the Windows path on POSIX as well, so CI runs it on Linux.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PARENT_PID_ENV = "HALTON_METER_PARENT_PID"
CONTROL_ENV = "HALTON_METER_CONTROL"
"""Set to `stdin` by the supervisor: end-of-file on stdin means stop."""
PORTABLE_ENV = "HALTON_METER_PORTABLE"


def portable() -> bool:
    """Whether `serve` runs its children the Windows way: the edge binds its own port, children are stopped
    by closing their stdin only. Always on Windows; on POSIX only with HALTON_METER_PORTABLE=1 (tests)."""
    return os.name != "posix" or os.environ.get(PORTABLE_ENV) == "1"


def install_stop_handlers(loop: asyncio.AbstractEventLoop, on_stop: Callable[[], None]) -> None:
    """Ctrl-C and SIGTERM (POSIX) or Ctrl-C and Ctrl-Break (Windows) call `on_stop` on the event loop."""
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop)
        return
    except (NotImplementedError, RuntimeError, AttributeError):  # not a POSIX event loop
        pass
    for name in ("SIGINT", "SIGBREAK", "SIGTERM"):
        number = getattr(signal, name, None)
        if number is not None:
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                signal.signal(number, lambda *_: loop.call_soon_threadsafe(on_stop))


def watch_stdin(loop: asyncio.AbstractEventLoop, on_stop: Callable[[], None]) -> threading.Thread | None:
    """When the supervisor asked for it (CONTROL_ENV), call `on_stop` on the loop once stdin reaches
    end-of-file: the supervisor closed the pipe (a stop) or is gone. A thread, because reading a pipe
    without blocking the loop is not portable (Windows' proactor loop cannot watch a pipe on stdin)."""
    if os.environ.get(CONTROL_ENV) != "stdin":
        return None
    stream = sys.stdin.buffer if sys.stdin is not None else None
    if stream is None:
        return None

    def wait() -> None:
        with contextlib.suppress(Exception):
            while stream.read(4096):
                pass
        with contextlib.suppress(RuntimeError):  # the loop already closed: the process is ending anyway
            loop.call_soon_threadsafe(_stop_requested, on_stop)

    thread = threading.Thread(target=wait, name="halton-meter-control", daemon=True)
    thread.start()
    return thread


def _stop_requested(on_stop: Callable[[], None]) -> None:
    import structlog

    structlog.get_logger("halton_meter.process").info("stop requested: the supervisor closed our control pipe")
    on_stop()


def bind_own_port(port: int) -> socket.socket:
    """The edge's listening socket on 127.0.0.1:`port`, bound by the edge itself (the portable path):
    exclusively on Windows, with SO_REUSEADDR on POSIX so a restart is not refused by connections of the
    previous edge still in TIME_WAIT."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)
        if exclusive is not None:
            sock.setsockopt(socket.SOL_SOCKET, exclusive, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


async def watch_parent(on_orphaned: Callable[[], None], interval: float = 1.0) -> None:
    """Call `on_orphaned` once if the supervisor that started us disappears (even by SIGKILL), so no
    orphaned edge or core keeps holding ports after `serve` is gone."""
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected or not expected.isdigit() or os.environ.get(CONTROL_ENV) == "stdin":
        return  # with a control pipe, the supervisor's death is its end-of-file: no need to poll (`watch_stdin`)
    while True:
        await asyncio.sleep(interval)
        if os.getppid() != int(expected):
            on_orphaned()
            return


class QuietLoopErrors:
    """An event loop's exception handler for the meter's processes: an error the loop reports (an accept
    that fails for want of descriptors under a flood of idle connections, say) is one warning line every
    EVERY seconds per kind, never a traceback per occurrence; a task cancelled at shutdown is no error."""

    EVERY = 10.0

    def __init__(self, log: Any) -> None:
        self._log = log
        self._last: dict[str, float] = {}
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, asyncio.CancelledError):
            return
        message = str(context.get("message") or "event loop error")
        key = f"{message}:{type(exc).__name__ if exc else ''}"
        now = time.monotonic()
        if now - self._last.get(key, -self.EVERY) < self.EVERY:
            self.suppressed += 1
            return
        self._last[key] = now
        self._log.warning(message, error=f"{type(exc).__name__}: {exc}" if exc else None,
                          similar_suppressed=self.suppressed)
        self.suppressed = 0
