"""The routing table: (host, port) → provider. Built once per process from the provider registry."""

from __future__ import annotations

from collections.abc import Iterable

from halton_meter.errors import PluginError
from halton_meter.types import Provider


def parse_host_pattern(pattern: str) -> tuple[str, int]:
    """`api.example.com`, `api.example.com:8443`, `*.example.com` → (host pattern, port); 443 by default."""
    pattern = pattern.strip().lower()
    host, sep, port = pattern.rpartition(":")
    if sep and port.isdigit() and "]" not in port:
        return host.strip("[]"), int(port)
    return pattern.strip("[]"), 443


class RoutingTable:
    """Which provider (if any) claims a host. Exact names win over `*.suffix` wildcards."""

    def __init__(self, providers: Iterable[Provider]) -> None:
        self._exact: dict[tuple[str, int], Provider] = {}
        self._wildcards: list[tuple[str, int, Provider]] = []
        for provider in providers:
            for pattern in provider.hosts:
                host, port = parse_host_pattern(pattern)
                if host.startswith("*."):
                    suffix = host[1:]  # ".example.com"
                    for other_suffix, other_port, other in self._wildcards:
                        if other_suffix == suffix and other_port == port:
                            raise PluginError(f"{provider.id} and {other.id} both claim {pattern}")
                    self._wildcards.append((suffix, port, provider))
                else:
                    claimed = self._exact.get((host, port))
                    if claimed is not None:
                        raise PluginError(f"{provider.id} and {claimed.id} both claim {host}:{port}")
                    self._exact[(host, port)] = provider
        # Longest suffix first, so `*.eu.example.com` beats `*.example.com`.
        self._wildcards.sort(key=lambda item: -len(item[0]))

    def lookup(self, host: str, port: int) -> Provider | None:
        host = host.lower().rstrip(".")
        provider = self._exact.get((host, port))
        if provider is not None:
            return provider
        for suffix, wildcard_port, candidate in self._wildcards:
            if port == wildcard_port and host.endswith(suffix) and len(host) > len(suffix):
                return candidate
        return None

    def claims(self, host: str, port: int) -> bool:
        return self.lookup(host, port) is not None

    def patterns(self) -> list[str]:
        exact = [f"{h}:{p}" for h, p in self._exact]
        return sorted(exact + [f"*{s}:{p}" for s, p, _ in self._wildcards])
