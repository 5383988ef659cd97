"""The routing table: (host, port) → provider. Built once per process from the provider registry.

Three kinds of host pattern, tried in this order:

* exact names (`api.anthropic.com`), a dict lookup;
* label patterns, where `*` stands for one DNS label or part of one (`bedrock-runtime.*.amazonaws.com`,
  `*-aiplatform.googleapis.com`): a cloud service whose host names carry a region or a resource name, and
  whose parent domain must stay untouched (the rest of `amazonaws.com` is never decrypted);
* suffix wildcards (`*.example.com`: any name under it, at any depth), longest suffix first.

Answers are remembered per (host, port), so a connection costs one dict lookup after the first.
"""

from __future__ import annotations

import re
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


MEMO_MAX = 4096


def label_pattern(host: str) -> re.Pattern[str] | None:
    """`bedrock-runtime.*.amazonaws.com` → a regex where each `*` matches within one label; None for an exact
    name or a leading `*.` suffix wildcard (which match differently)."""
    if "*" not in host or (host.startswith("*.") and "*" not in host[2:]):
        return None
    return _labels_regex(host)


def _labels_regex(host: str) -> re.Pattern[str]:
    return re.compile("[a-z0-9-]+".join(re.escape(part) for part in host.split("*")))


def pattern_covers(pattern: str, domain: str) -> bool:
    """Whether a label pattern (`bedrock-runtime.*.amazonaws.com`) claims the host `domain` itself: for
    NO_PROXY advice. (A domain above the pattern's hosts, such as `us-east-1.amazonaws.com`, is not
    counted: `*` cannot tell a region from a service there, and `s3.amazonaws.com` must not warn.)"""
    return _labels_regex(pattern).fullmatch(domain) is not None


class RoutingTable:
    """Which provider (if any) claims a host: exact names, then label patterns, then `*.suffix` wildcards."""

    def __init__(self, providers: Iterable[Provider]) -> None:
        self._exact: dict[tuple[str, int], Provider] = {}
        self._wildcards: list[tuple[str, int, Provider]] = []
        self._labels: list[tuple[str, re.Pattern[str], int, Provider]] = []
        self._memo: dict[tuple[str, int], Provider | None] = {}
        for provider in providers:
            for pattern in provider.hosts:
                host, port = parse_host_pattern(pattern)
                compiled = label_pattern(host)
                if compiled is not None:
                    for other_host, _, other_port, other in self._labels:
                        if other_host == host and other_port == port:
                            raise PluginError(f"{provider.id} and {other.id} both claim {pattern}")
                    self._labels.append((host, compiled, port, provider))
                elif host.startswith("*."):
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
        key = (host, port)
        try:
            return self._memo[key]
        except KeyError:
            pass
        found = self._find(host.lower().rstrip("."), port)
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()
        self._memo[key] = found
        return found

    def _find(self, host: str, port: int) -> Provider | None:
        provider = self._exact.get((host, port))
        if provider is not None:
            return provider
        for _, compiled, label_port, candidate in self._labels:
            if port == label_port and compiled.fullmatch(host):
                return candidate
        for suffix, wildcard_port, candidate in self._wildcards:
            if port == wildcard_port and host.endswith(suffix) and len(host) > len(suffix):
                return candidate
        return None

    def claims(self, host: str, port: int) -> bool:
        return self.lookup(host, port) is not None

    def patterns(self) -> list[str]:
        exact = [f"{h}:{p}" for h, p in self._exact]
        labels = [f"{h}:{p}" for h, _, p, _ in self._labels]
        return sorted(exact + labels + [f"*{s}:{p}" for s, p, _ in self._wildcards])
