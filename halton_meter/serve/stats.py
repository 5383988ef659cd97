"""Small JSON files in `run/` where the edge and the core publish their counters (every two seconds when they change, every four when not), so
`status` and `doctor` can report pending writes, the last write error and pass-through gaps without any
IPC. Each file is replaced atomically; a stale `updated_at` means the process is gone or wedged."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from halton_meter.paths import write_atomic

INTERVAL = 2.0
REFRESH = 4.0
"""Unchanged counters are rewritten this often, so their `updated_at` shows the process is alive (`doctor`
calls counters older than 10 s stale)."""
SLOT = 16 * 1024
"""Fixed size of a counters file, allocated once so later rewrites need no new disk blocks."""
CORE_STATS = "core-stats.json"
EDGE_STATS = "edge-stats.json"


def read_stats(path: Path) -> dict[str, Any] | None:
    """The published counters, with `age_s` added; None when absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    data["age_s"] = max(0.0, time.time() - float(data.get("updated_at", 0)))
    return data


class Publisher:
    """Writes `snapshot()` to `path` every INTERVAL seconds on a daemon thread (file I/O never runs on the
    proxy's event loop), and once more on `stop()`."""

    def __init__(self, path: Path, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._path = path
        self._snapshot = snapshot
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"publish-{path.stem}", daemon=True)
        self._last: dict[str, Any] | None = None
        self._written = 0.0

    def start(self) -> Publisher:
        self._write()  # at once: `status` right after a start must not see "no counters yet"
        self._thread.start()
        return self

    def _write(self, force: bool = True) -> None:
        """Rewrite the file in place, inside blocks it already owns: on a full disk (when `status` matters
        most) a new file could not be written at all. Without `force`, only when the counters changed or
        REFRESH has passed (an idle meter writes nothing new every two seconds)."""
        try:
            snapshot = self._snapshot()
            now = time.monotonic()
            if not force and snapshot == self._last and now - self._written < REFRESH:
                return
            self._last, self._written = snapshot, now
            data = json.dumps({"updated_at": time.time(), "pid": os.getpid(), **snapshot}).encode()
            if len(data) < SLOT and self._path.exists() and self._path.stat().st_size == SLOT:
                fd = os.open(self._path, os.O_WRONLY)
                try:
                    os.pwrite(fd, data.ljust(SLOT), 0)  # trailing spaces: still valid JSON
                finally:
                    os.close(fd)
            else:
                write_atomic(self._path, data.ljust(SLOT) if len(data) < SLOT else data, mode=0o600)
        except Exception:  # counters are informational: never let them disturb the process
            pass

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self._write(force=False)

    def stop(self) -> None:
        self._stop.set()
        self._write()
