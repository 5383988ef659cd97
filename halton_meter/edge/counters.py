"""The edge's counters (published to `run/edge-stats.json` for `status` and `doctor`) and each client
connection's place in them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EdgeStats:
    connections: int = 0
    active: int = 0
    metered: int = 0
    tunnelled: int = 0
    refused: int = 0
    passthrough: int = 0
    """Tunnels and plain-HTTP requests to metered hosts that went direct, unmetered (each a gap in the log)."""
    passthrough_open: int = 0
    """Pass-through tunnels to metered hosts open right now."""
    passthrough_closed_idle: int = 0
    """…closed by the edge at an idle moment (core back, or the tunnel at its maximum age)."""
    last_gap_reason: str | None = None
    core_down_since: float | None = None
    restart_waits: int = 0
    """Metered CONNECTs that waited for a restarting core instead of passing through."""
    drains: int = 0
    """Metered tunnels whose client left mid-response and whose answer the edge read on for the meter."""
    draining: int = 0
    """Tunnels open right now only for the meter (not counted against the connection cap)."""
    config_error: str | None = None
    """The edge started without a usable config.toml (defaults, traffic passes): why."""


class Slot:
    """One client connection's place in the counts: `active` while its client is there, `draining` while
    only the meter still reads its tunnel (draining tunnels do not count against the connection cap)."""

    def __init__(self, stats: EdgeStats) -> None:
        self.stats = stats
        self.state = "active"

    def start_draining(self) -> None:
        if self.state == "active":
            self.stats.active -= 1
            self.stats.draining += 1
            self.state = "draining"

    def release(self) -> None:
        if self.state == "active":
            self.stats.active -= 1
        elif self.state == "draining":
            self.stats.draining -= 1
        self.state = "released"
