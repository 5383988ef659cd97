"""What the core knows about one client connection (the edge's tunnel to it), and the edge's headers that
name the client: its address, the address it connected to, and a project from the proxy URL."""

from __future__ import annotations

import time
import urllib.parse
from concurrent.futures import Future
from dataclasses import dataclass, field

from mitmproxy import http

from halton_meter.attribution.service import Resolution


@dataclass
class ConnectionInfo:
    target: tuple[str, int] | None = None
    attribution: Future[Resolution] | None = None
    peer: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    proxy_project: str | None = None
    opened: float = field(default_factory=time.monotonic)
    requested: bool = False
    connected: bool = False
    """Came in through an (authorised) CONNECT: its requests go to `target` only."""


def peers(flow: http.HTTPFlow, peer_header: str | None,
          proxy_header: str | None) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(client address, the address it connected to): from the edge's headers, else this connection's."""
    peer = parse_peer(peer_header)
    if peer is not None:
        return peer, parse_peer(proxy_header)
    sock = flow.client_conn.sockname
    return peer_of(flow), ((str(sock[0]), int(sock[1])) if sock else None)


def peer_of(flow: http.HTTPFlow) -> tuple[str, int] | None:
    peer = flow.client_conn.peername
    return (str(peer[0]), int(peer[1])) if peer else None


def parse_project(value: str | None) -> str | None:
    if not value:
        return None
    project = urllib.parse.unquote(value).strip()
    return project[:100] or None


def parse_peer(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)
