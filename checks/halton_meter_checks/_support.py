"""What several check modules need: the running meter's ports, the init mode, proxy URLs, durations.

Not a plugin (it registers nothing); every function here is read-only.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from halton_meter import plugin
from halton_meter.plugin import CheckContext, read_runtime

LOOPBACK = ("127.0.0.1", "localhost", "::1")
HTTPS_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
"""The variables that send HTTPS through a proxy (LLM APIs are HTTPS-only, so HTTP_PROXY does not matter)."""
CA_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")


def runtime(ctx: CheckContext) -> dict[str, Any] | None:
    """`runtime.json` of the meter serving this home, or None when none has written one."""
    return read_runtime(ctx.paths)


def init_mode(ctx: CheckContext) -> str:
    """`env` (the default: nothing persisted, `halton-meter run` wraps tools), `apps` or `full`."""
    mode = getattr(ctx.state, "mode", None)
    return mode if mode in ("env", "apps", "full") else "env"


@dataclass(frozen=True)
class MeterPorts:
    running: int | None
    """The edge port of the running meter (runtime.json), if one runs."""
    configured: int | None
    """`edge.port` from config.toml (what apps mode persists), when the config loaded."""

    def ours(self, port: int | None) -> bool:
        return port is not None and port in (self.running, self.configured)

    def describe(self) -> str:
        if self.running is not None:
            return f"127.0.0.1:{self.running}"
        if self.configured is not None:
            return f"127.0.0.1:{self.configured} (configured; not running)"
        return "unknown"


def meter_ports(ctx: CheckContext) -> MeterPorts:
    data = runtime(ctx)
    running = data["edge_port"] if data else None
    configured = getattr(ctx.config, "edge_port", None) or None
    return MeterPorts(running, configured)


@dataclass(frozen=True)
class ProxyTarget:
    host: str
    port: int | None

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK


def parse_proxy(value: str) -> ProxyTarget | None:
    """Host and port of a proxy URL (`http://127.0.0.1:8081`, `127.0.0.1:8081`); None when unparseable."""
    text = value.strip()
    if not text:
        return None
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme)
    return ProxyTarget(parts.hostname.lower(), port)


def redact_proxy(value: str) -> str:
    """A proxy URL safe to print: user and password removed."""
    text = value.strip()
    probe = text if "://" in text else "http://" + text
    try:
        parts = urllib.parse.urlsplit(probe)
    except ValueError:
        return "<unparseable>"
    if parts.username is None and parts.password is None:
        return text
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def effective_https_proxy(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable, value) an HTTPS client would use, in the usual precedence; None when none is set."""
    for name in HTTPS_PROXY_VARS:
        value = environ.get(name)
        if value and value.strip():
            return name, value
    return None


def ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def since(timestamp: float | None) -> float | None:
    return None if timestamp is None else time.time() - float(timestamp)


def provider_hosts(ctx: CheckContext) -> dict[str, tuple[str, ...]]:
    """Provider name -> hosts it claims (built-in, third-party and `[[compatible]]` endpoints).

    CheckContext carries plugin facts but not the registries, so the host builds a registry of its own
    (module imports are cached; nothing is started)."""
    return plugin.provider_hosts(ctx.config)
