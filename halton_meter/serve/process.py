"""Helpers for the meter's child processes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

PARENT_PID_ENV = "HALTON_METER_PARENT_PID"


async def watch_parent(on_orphaned: Callable[[], None], interval: float = 1.0) -> None:
    """Call `on_orphaned` once if the supervisor that started us disappears (even by SIGKILL), so no
    orphaned edge or core keeps holding ports after `serve` is gone."""
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected or not expected.isdigit():
        return
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
