"""The edge's side of the gap log (`store/gaps.py`): traffic to a metered host that passed the meter by."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from halton_meter.attribution.client_family import client_family
from halton_meter.clock import utc_stamp

log = structlog.get_logger("halton_meter.edge")


class GapRecorder:
    """Writes the gap log (`store/gaps.py`) for traffic that passed the meter by: a line when it starts, so
    a crash cannot lose it, and a self-contained line when it ends with what it covered. File I/O runs off
    the event loop; a line that cannot be written is logged (the edge's counters still show it)."""

    def __init__(self, directory: Path | None, attribution: Any = None) -> None:
        self.directory = directory
        self.attribution = attribution

    def _append(self, line: dict[str, Any]) -> None:
        if self.directory is None:
            return
        from halton_meter.store.gaps import append_line

        try:
            append_line(self.directory, line)
        except OSError as exc:
            log.error("could not record a gap durably", error=str(exc))

    async def opened(self, kind: str, host: str, reason: str, peer: object, project: str | None = None,
                     server: object = None) -> Gap:
        gap = Gap(id=str(uuid.uuid4()), at=utc_stamp(), kind=kind, host=host, reason=reason)
        if self.attribution is not None and isinstance(peer, tuple) and len(peer) >= 2:
            edge = (str(server[0]), int(server[1])) if isinstance(server, tuple) and len(server) >= 2 else None
            gap.lookup = self.attribution.lookup((str(peer[0]), int(peer[1])), project, edge)
        await asyncio.get_running_loop().run_in_executor(None, self._append, gap.line())
        return gap

    async def closed(self, gap: Gap, up: int, down: int, calls_estimated: int | None = None) -> None:
        line = gap.line()
        line.update(bytes_up=up, bytes_down=down, ended_at=utc_stamp(),
                    duration_ms=round((time.monotonic() - gap.started) * 1000, 1))
        if gap.kind == "tunnel":
            line["calls_estimated"] = calls_estimated
        if gap.lookup is not None:
            with contextlib.suppress(Exception):
                resolution = await asyncio.wait_for(asyncio.wrap_future(gap.lookup), 2.0)
                line.update(project=resolution.attribution.project,
                            client=client_family(None, resolution.client.tool, resolution.client.process_name))
        await asyncio.get_running_loop().run_in_executor(None, self._append, line)


@dataclass
class Gap:
    id: str
    at: str
    kind: str
    host: str
    reason: str
    started: float = field(default_factory=time.monotonic)
    lookup: Any = None

    def line(self) -> dict[str, Any]:
        line: dict[str, Any] = {"id": self.id, "at": self.at, "kind": self.kind, "host": self.host,
                                "reason": self.reason}
        line.update({"connections": 1} if self.kind == "tunnel" else {"calls": 1})
        return line
