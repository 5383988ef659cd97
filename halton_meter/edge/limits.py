"""The edge's limits: timeouts, connection and drain bounds, read sizes, and the connection cap the
open-file limit allows."""

from __future__ import annotations

import contextlib

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT = 10.0
"""A client has this long to send its request head (slowloris)."""
HANDSHAKE_TIMEOUT = 10.0
"""After `200 Connection established`, a client has this long to send its first byte (its TLS hello): a
tunnel nobody uses is not allowed to hold a connection slot for the whole idle timeout."""
CONNECT_TIMEOUT = 10.0
IDLE_TIMEOUT = 15 * 60.0
"""Per-read idle limit on tunnels: long enough for a model's longest thinking pause."""
MAX_CONNECTIONS = 2048
FDS_PER_CONNECTION = 2
"""A tunnel holds two descriptors in the edge (client, upstream): the cap never promises more."""
FD_RESERVE = 64
DRAIN_QUIET = 3.0
DRAIN_SECONDS = 60.0
DRAIN_BYTES = 16 * 1024 * 1024
MAX_DRAINS = 256
"""Tunnels kept open for the meter after their client left; beyond this they close at once."""
READ_SIZE = 64 * 1024
REAP_INTERVAL = 0.25


def connection_cap(configured: int) -> int:
    """The configured connection cap, lowered to what the open-file limit can hold (after raising the soft
    limit to the hard one where the OS lets us)."""
    try:
        import resource
    except ImportError:  # Windows: no per-process descriptor limit of this kind
        return configured
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return max(16, min(configured, (soft - FD_RESERVE) // FDS_PER_CONNECTION))
