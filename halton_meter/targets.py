"""The target policy the edge and the core both enforce: never a relay to this machine's services, link-local
addresses or cloud metadata, before and after DNS.

Shared by the two processes (each checks every target itself), so it lives outside both of them.
"""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "100.100.100.200",  # Alibaba Cloud instance metadata
    "fd00:ec2::254",  # AWS instance metadata over IPv6
    "168.63.129.16",  # Azure wire server
))
"""Cloud metadata endpoints outside the link-local ranges (169.254/16 and fe80::/10 are refused whole)."""
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """A target or request the meter will not serve: the HTTP status and the reason the client reads."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_authority(authority: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port). Raises Refused(400) for anything else."""
    if authority.startswith("["):
        host, sep, rest = authority[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise Refused(400, "CONNECT target must be host:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = authority.rpartition(":")
        if not sep or not host or ":" in host:
            raise Refused(400, "CONNECT target must be host:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise Refused(400, f"invalid port in {authority!r}")
    return host.lower().rstrip("."), int(port_text)


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host literal names, with IPv4 embedded in IPv6 unwrapped — IPv4-mapped
    (`::ffff:127.0.0.1`), IPv4-compatible (`::127.0.0.1`) and NAT64 (`64:ff9b::7f00:1`): Python does not call
    those loopback or link-local, but they reach exactly the same places."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        packed = ip.packed
        if packed[:12] == bytes(12) and int.from_bytes(packed[12:], "big") > 1:  # ::a.b.c.d, not :: or ::1
            return ipaddress.IPv4Address(packed[12:])
        if ip in NAT64_PREFIX:
            return ipaddress.IPv4Address(packed[12:])
    return ip


def refuse_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> None:
    """Refused(403) for addresses a proxy must never relay to: this machine, link-local (cloud metadata),
    other metadata endpoints, unspecified and multicast."""
    if ip is None:
        return
    if ip.is_loopback:
        raise Refused(403, "refusing to proxy to local services (loopback)")
    if ip.is_link_local or ip in METADATA_ADDRESSES:
        raise Refused(403, "refusing to proxy to link-local or cloud metadata addresses")
    if ip.is_unspecified or ip.is_multicast:
        raise Refused(403, "refusing to proxy to an unspecified or multicast address")


def check_target(host: str, port: int, resolve: dict[tuple[str, int], tuple[str, int]],
                 own_ports: set[int] | frozenset[int] = frozenset()) -> None:
    """Never a relay to this machine's services or to cloud metadata: loopback, link-local, metadata,
    unspecified and multicast targets are refused, unless `upstream.resolve` names them explicitly.
    Shared by the edge and the core."""
    if (host, port) in resolve:
        return
    ip = ip_of(host)
    if host in LOOPBACK_NAMES or host.endswith(".localhost") or (ip is not None and ip.is_loopback):
        if port in own_ports:
            raise Refused(403, "refusing to proxy to Halton Meter's own ports")
        raise Refused(403, "refusing to proxy to local services (loopback)")
    refuse_address(ip)

