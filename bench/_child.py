"""Shared by the benchmark's child processes (fake provider, plain tunnel): stop on SIGTERM/SIGINT, or
when the runner goes away (their stdin, a pipe from the runner, reaches end of file)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading


def stop_event() -> asyncio.Event:
    """An event set on SIGTERM, SIGINT or end of stdin; call from inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin() -> None:
        # os.read on the raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader
        # makes interpreter shutdown wait a second and abort.
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        with contextlib.suppress(RuntimeError):  # the loop already closed
            loop.call_soon_threadsafe(stop.set)

    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd >= 0 and not os.isatty(fd):
        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
    return stop
