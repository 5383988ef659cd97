"""The contract between the edge and the core (and whoever checks on them): header names, the health path
and the self-test host.

The names are defined once, as text; the edge writes raw HTTP/1 heads and uses the `*_B` bytes forms,
derived here from the same text, so the two processes can never disagree on a name.
"""

from __future__ import annotations

AUTH_HEADER = "x-halton-meter-auth"
"""Set by the edge on everything it sends the core: the core's per-start secret (from `run/core.json`,
0600). Only the edge may use the core; anything else that connects to its port is refused."""
PEER_HEADER = "x-halton-meter-peer"
"""Set by the edge on what it sends the core: the client's address as the edge saw it."""
PROJECT_HEADER = "x-halton-meter-project"
"""Set by the edge: the project from the client's proxy URL credentials, percent-encoded."""
PROXY_HEADER = "x-halton-meter-proxy"
"""Set by the edge: its own address the client connected to (the other end of the client's socket)."""
METER_HEADER_PREFIX = "x-halton-meter-"
"""Every header the meter itself sets starts with this; the edge drops such headers from what clients send."""

AUTH_HEADER_B = AUTH_HEADER.encode("ascii")
PEER_HEADER_B = PEER_HEADER.encode("ascii")
PROJECT_HEADER_B = PROJECT_HEADER.encode("ascii")
PROXY_HEADER_B = PROXY_HEADER.encode("ascii")
METER_HEADER_PREFIX_B = METER_HEADER_PREFIX.encode("ascii")

HEALTH_PATH = "/halton-meter/edge-health"
"""Answered by the edge itself (`200 ok`): liveness of its event loop, not just a listening socket."""
CANARY_HOST = "selftest.halton-meter.invalid"
"""The self-test host: the core answers a CONNECT (and a request) to it itself, with no upstream involved."""
