"""Helpers for the meter's child processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

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
