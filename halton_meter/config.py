"""`$HALTON_METER_HOME/config.toml`, read strictly.

A syntax error, an unknown key or a wrong type stops every command with one line
(`config.toml:LINE:COL: message`, or the key path) and exit code 2. Nothing silently falls back to a
default: a typo in a privacy or security setting must never weaken it.

Why this module is long: it is the whole config.toml schema in one place — every section's typed values,
their defaults and the strict check of each key with its one-line error — so a key and its check cannot
drift apart; the parts are small and independent, read top to bottom.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from halton_meter.budget_config import Budget, parse_budgets
from halton_meter.errors import ConfigError
from halton_meter.paths import Paths
from halton_meter.sync_config import SyncSettings, parse_sync

DEFAULT_EDGE_PORT = 8081
DEFAULT_API_PORT = 8765
DEFAULT_SHUTDOWN_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class ResolveRule:
    """`host:port:address:port` — connect to address:port for host:port, keeping Host and SNI."""

    host: str
    port: int
    address: str
    address_port: int

    @classmethod
    def parse(cls, text: str, where: str) -> ResolveRule:
        match = re.fullmatch(r"([^:\s\[\]]+):(\d+):(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+)(?::(\d+))?", text)
        if not match:
            raise ConfigError(
                f"{where}: {text!r} is not HOST:PORT:ADDRESS:PORT "
                "(example: \"api.anthropic.com:443:127.0.0.1:8443\")"
            )
        host, port, address, address_port = match.groups()
        address = address.strip("[]")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"{where}: {address!r} in {text!r} must be an IP address") from None
        ports = (int(port), int(address_port or port))
        if not all(0 < p < 65536 for p in ports):
            raise ConfigError(f"{where}: ports in {text!r} must be between 1 and 65535")
        return cls(host.lower(), ports[0], address, ports[1])


PRICE_KEYS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """Local prices for one (provider, model), USD per million tokens. Missing cache prices fall back:
    cache_read and cache_write to input, cache_write_1h to cache_write."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    where: str = ""
    """The config key it came from, e.g. `prices.anthropic."claude-sonnet-4-5"` (shown as price source)."""


@dataclass(frozen=True, slots=True)
class CompatibleEndpoint:
    """A user-declared host speaking a known wire format (`[[compatible]]`)."""

    name: str
    hosts: tuple[str, ...]
    format: str
    path_prefix: str = "/v1"
    price_as: str | None = None
    billing: str = "api"


@dataclass(frozen=True, slots=True)
class ProjectRule:
    """`[projects]` entry: a directory glob (`~/work/acme`, `~/clients/*`, `~/src/**/infra`) and the project
    for calls made from that directory or anywhere below it."""

    pattern: str
    project: str
    regex: re.Pattern[str]

    def matches(self, directory: str) -> bool:
        path = directory.rstrip("/") or "/"
        while True:
            if self.regex.fullmatch(path):
                return True
            parent = path.rsplit("/", 1)[0] or "/"
            if parent == path:
                return False
            path = parent


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: `*` and `?` stay within one directory name, `**` spans any depth."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("/**", i):
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


@dataclass(frozen=True)
class Config:
    paths: Paths
    edge_port: int = DEFAULT_EDGE_PORT
    edge_idle_timeout_seconds: float = 900.0
    """Per-read idle limit on tunnels: a thinking pause longer than this ends the connection."""
    edge_max_connections: int = 2048
    """Lowered at start to what the open-file limit can hold (two descriptors a tunnel)."""
    edge_passthrough_quiet_seconds: float = 2.0
    """A pass-through tunnel to a metered host (the core was down) closes after this much quiet once the
    core is back, so the next call is metered (never while a request waits for its answer)."""
    edge_passthrough_max_seconds: float = 600.0
    """…and after this age even while the core is still down, at its first idle moment."""
    api_port: int = DEFAULT_API_PORT
    api_metrics_labels: tuple[str, ...] = ("provider", "model", "project", "client")
    """`[api] metrics_labels`: the labels of `/metrics` series (docs/metrics.md)."""
    api_metrics_max_series: int = 500
    """`[api] metrics_max_series`: label combinations `/metrics` shows; the smallest beyond it read "other"."""
    api_metrics_without_token: bool = False
    """`[api] metrics_without_token`: `/metrics` answers a loopback scraper without the API token."""
    upstream_ca_bundle: Path | None = None
    upstream_resolve: tuple[ResolveRule, ...] = ()
    shutdown_grace_seconds: float = DEFAULT_SHUTDOWN_GRACE_SECONDS
    core_workers: int | None = None
    """`[core] workers`: how many core processes read metered traffic; None ("auto"): one per CPU, up to
    MAX_AUTO_WORKERS (`workers()` says how many a start uses)."""
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    prices: Mapping[tuple[str, str], PriceOverride] = field(default_factory=dict)
    """Local price overrides keyed by (provider, model); model `*` covers every model of a provider."""
    compatible: tuple[CompatibleEndpoint, ...] = ()
    capture_projects: tuple[str, ...] = ()
    """Projects whose request and response bodies are stored (redacted). Empty: nothing is ever stored."""
    capture_max_bytes: int = 256 * 1024
    project_rules: tuple[ProjectRule, ...] = ()
    """`[projects]`: directory globs to project names, first match wins (in file order)."""
    key_names: Mapping[str, str] = field(default_factory=dict)
    """`[keys]`: credential fingerprint (or a unique prefix of one) to a name shown in reports."""
    budgets: tuple[Budget, ...] = ()
    """`[[budgets]]`: spend caps (halton_meter.budget_config)."""
    sync: tuple[SyncSettings, ...] = ()
    """`[[sync]]`: where rows are pushed (halton_meter.sync_config)."""
    source: Path | None = None
    """The file this came from, or None when no config.toml exists (all defaults)."""

    def workers(self) -> int:
        """The number of core processes `serve` starts: `HALTON_METER_WORKERS` when set, else `[core]
        workers`, else one per CPU up to MAX_AUTO_WORKERS. The first core also owns the database; the others
        hand it their records (docs/concepts/proxy.md, "Several cores")."""
        env = os.environ.get(WORKERS_ENV, "").strip()
        if env:
            if env == "auto":
                return auto_workers()
            if not env.isdigit() or not 1 <= int(env) <= MAX_WORKERS:
                raise ConfigError(f'{WORKERS_ENV} must be "auto" or an integer between 1 and {MAX_WORKERS}, '
                                  f"not {env!r}; fix or unset it")
            return int(env)
        return self.core_workers or auto_workers()

    def plugin_config(self, name: str) -> Mapping[str, Any]:
        """The `[plugins.<name>]` block, empty when absent. Plugins validate their own block."""
        return self.plugins.get(name, {})

    def resolve_map(self) -> dict[tuple[str, int], tuple[str, int]]:
        return {(r.host, r.port): (r.address, r.address_port) for r in self.upstream_resolve}


# --------------------------------------------------------------------------------------------------
# Schema: section -> key -> validator(value, key_path, config_dir) -> python value
# --------------------------------------------------------------------------------------------------


def _port(value: Any, key: str, _: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config.toml: {key} must be an integer port (0-65535), not {value!r}")
    if not 0 <= value <= 65535:
        raise ConfigError(f"config.toml: {key} = {value} is out of range (0-65535; 0 picks a free port)")
    return value


def _existing_file(value: Any, key: str, config_dir: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f'config.toml: {key} must be a file path string, not {value!r}')
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = config_dir / path
    if not path.is_file():
        raise ConfigError(f"config.toml: {key} = {value!r}: no such file ({path})")
    return path


def _resolve_rules(value: Any, key: str, _: Path) -> tuple[ResolveRule, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f'config.toml: {key} must be a list of strings like ["api.anthropic.com:443:127.0.0.1:8443"]'
        )
    rules = tuple(ResolveRule.parse(v, f"config.toml: {key}") for v in value)
    seen: set[tuple[str, int]] = set()
    for rule in rules:
        if (rule.host, rule.port) in seen:
            raise ConfigError(f"config.toml: {key} maps {rule.host}:{rule.port} twice")
        seen.add((rule.host, rule.port))
    return rules


def _capture_projects(value: Any, key: str, _: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f'config.toml: {key} must be a list of project names, like ["my-project"]')
    if any(v.strip() in ("*", "all") for v in value):
        raise ConfigError(f"config.toml: {key} names projects one by one: capture is never on for everything")
    return tuple(v.strip() for v in value)


def _capture_bytes(value: Any, key: str, _: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= 16 * 1024 * 1024:
        raise ConfigError(f"config.toml: {key} must be a number of bytes between 1024 and 16777216, not {value!r}")
    return value


def _positive_seconds(value: Any, key: str, _: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value > 3600:
        raise ConfigError(f"config.toml: {key} must be a number of seconds between 0 and 3600, not {value!r}")
    return float(value)


def _idle_seconds(value: Any, key: str, _: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 60 <= value <= 86400:
        raise ConfigError(f"config.toml: {key} must be a number of seconds between 60 and 86400 "
                          f"(long thinking pauses need minutes), not {value!r}")
    return float(value)


def _quiet_seconds(value: Any, key: str, _: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 <= value <= 300:
        raise ConfigError(f"config.toml: {key} must be a number of seconds between 0.5 and 300, not {value!r}")
    return float(value)


def _passthrough_max(value: Any, key: str, _: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 86400:
        raise ConfigError(f"config.toml: {key} must be a number of seconds between 1 and 86400, not {value!r}")
    return float(value)


MAX_WORKERS = 16
MAX_AUTO_WORKERS = 4
WORKERS_ENV = "HALTON_METER_WORKERS"


def auto_workers() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))


def _workers(value: Any, key: str, _: Path) -> int | None:
    """A number of core processes (1–16), or "auto" (None: one per CPU, up to 4)."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise ConfigError(f'config.toml: {key} must be "auto" or an integer between 1 and {MAX_WORKERS}, not {value!r}')
    return value


def _connections(value: Any, key: str, _: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 16 <= value <= 100_000:
        raise ConfigError(f"config.toml: {key} must be an integer between 16 and 100000, not {value!r}")
    return value


METRICS_LABELS = ("provider", "model", "project", "client", "branch", "key")


def _metrics_labels(value: Any, key: str, _: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v in METRICS_LABELS for v in value) \
            or len(set(value)) != len(value):
        raise ConfigError(f"config.toml: {key} must be a list of distinct labels among "
                          f"{', '.join(METRICS_LABELS)} (like [\"provider\", \"model\"]), not {value!r}")
    return tuple(value)


def _metrics_series(value: Any, key: str, _: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise ConfigError(f"config.toml: {key} must be an integer between 1 and 100000, not {value!r}")
    return value


def _flag(value: Any, key: str, _: Path) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"config.toml: {key} must be true or false, not {value!r}")
    return value


_SCHEMA: dict[str, dict[str, tuple[str, Any]]] = {
    # section: {key: (Config field, validator)}
    "edge": {
        "port": ("edge_port", _port),
        "idle_timeout_seconds": ("edge_idle_timeout_seconds", _idle_seconds),
        "max_connections": ("edge_max_connections", _connections),
        "passthrough_quiet_seconds": ("edge_passthrough_quiet_seconds", _quiet_seconds),
        "passthrough_max_seconds": ("edge_passthrough_max_seconds", _passthrough_max),
    },
    "api": {
        "port": ("api_port", _port),
        "metrics_labels": ("api_metrics_labels", _metrics_labels),
        "metrics_max_series": ("api_metrics_max_series", _metrics_series),
        "metrics_without_token": ("api_metrics_without_token", _flag),
    },
    "upstream": {
        "ca_bundle": ("upstream_ca_bundle", _existing_file),
        "resolve": ("upstream_resolve", _resolve_rules),
    },
    "core": {"shutdown_grace_seconds": ("shutdown_grace_seconds", _positive_seconds),
             "workers": ("core_workers", _workers)},
    "capture": {
        "projects": ("capture_projects", _capture_projects),
        "max_bytes": ("capture_max_bytes", _capture_bytes),
    },
}


def _syntax_error(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    message = str(exc)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match:
        line, col = int(match.group(1)), int(match.group(2))
        message = message[: match.start()]
    else:
        message = re.sub(r"\s*\(at end of document\)$", " at end of file", message)
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    return ConfigError(f"{path}:{line}:{col}: {message[:1].lower()}{message[1:]}")


def load_config(paths: Paths | None = None) -> Config:
    """Read and validate config.toml. Missing file: defaults. Anything invalid: ConfigError (exit 2)."""
    paths = paths or Paths.from_env()
    path = paths.config
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return Config(paths=paths)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror}); check its permissions") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(path, text, exc) from None

    values: dict[str, Any] = {}
    plugins: dict[str, Mapping[str, Any]] = {}
    budgets_body: Any = None
    for section, body in data.items():
        if section == "prices":
            values["prices"] = _price_overrides(body)
            continue
        if section == "compatible":
            values["compatible"] = _compatible_endpoints(body)
            continue
        if section == "projects":
            values["project_rules"] = _project_rules(body, path.parent)
            continue
        if section == "keys":
            values["key_names"] = _key_names(body)
            continue
        if section == "budgets":
            budgets_body = body  # read last: a budget's key scope may name a [keys] entry
            continue
        if section == "sync":
            values["sync"] = parse_sync(body)
            continue
        if section == "plugins":
            if not isinstance(body, dict) or not all(isinstance(v, dict) for v in body.values()):
                raise ConfigError("config.toml: [plugins] holds one table per plugin, like [plugins.NAME]")
            plugins = body
            continue
        known = _SCHEMA.get(section)
        if known is None:
            raise ConfigError(
                f"config.toml: unknown section [{section}] "
                f"(known: {', '.join(sorted([*_SCHEMA, 'budgets', 'compatible', 'keys', 'plugins', 'prices', 'projects', 'sync']))})"
            )
        if not isinstance(body, dict):
            raise ConfigError(f"config.toml: {section} must be a table ([{section}])")
        for key, value in body.items():
            if key not in known:
                raise ConfigError(
                    f"config.toml: unknown key {section}.{key} (known in [{section}]: {', '.join(sorted(known))})"
                )
            field_name, validate = known[key]
            values[field_name] = validate(value, f"{section}.{key}", path.parent)
    if budgets_body is not None:
        values["budgets"] = parse_budgets(budgets_body, values.get("key_names", {}))
    return Config(paths=paths, plugins=plugins, source=path, **values)


def _price(value: Any, key: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"config.toml: {key} must be a price in USD per million tokens, not {value!r}")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"config.toml: {key} must be a price in USD per million tokens, not {value!r}") from None
    if not price.is_finite() or price < 0:
        raise ConfigError(f"config.toml: {key} must be a non-negative price in USD per million tokens")
    return price


def _price_overrides(body: Any) -> dict[tuple[str, str], PriceOverride]:
    """`[prices.PROVIDER."MODEL"]` tables: input and output required, cache prices optional."""
    example = '[prices.anthropic."claude-sonnet-4-5"] with input = 3.0 and output = 15.0'
    if not isinstance(body, dict):
        raise ConfigError(f"config.toml: [prices] holds one table per provider and model, like {example}")
    overrides: dict[tuple[str, str], PriceOverride] = {}
    for provider, models in body.items():
        if not isinstance(models, dict) or not all(isinstance(m, dict) for m in models.values()):
            raise ConfigError(f"config.toml: [prices.{provider}] must hold one table per model, like {example}")
        for model, prices in models.items():
            where = f'prices.{provider}."{model}"'
            unknown = sorted(set(prices) - set(PRICE_KEYS))
            if unknown:
                raise ConfigError(
                    f"config.toml: unknown key {where}.{unknown[0]} (known: {', '.join(PRICE_KEYS)}; USD per million tokens)"
                )
            missing = [k for k in ("input", "output") if k not in prices]
            if missing:
                raise ConfigError(f"config.toml: {where} needs {' and '.join(missing)} (USD per million tokens)")
            parsed = {k: _price(v, f"{where}.{k}") for k, v in prices.items()}
            overrides[(provider.lower(), model.lower())] = PriceOverride(where=where, **parsed)
    return overrides


_ENDPOINT_KEYS = {"name", "hosts", "format", "path_prefix", "price_as", "billing"}
ENDPOINT_FORMATS = ("openai", "anthropic")


def _compatible_endpoints(body: Any) -> tuple[CompatibleEndpoint, ...]:
    """`[[compatible]]` tables: a name, the hosts, and the wire format they speak."""
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise ConfigError(
            'config.toml: compatible endpoints are [[compatible]] tables with name, hosts and format '
            '(e.g. name = "corp-gateway", hosts = ["llm.corp.example"], format = "openai")'
        )
    endpoints = []
    for index, item in enumerate(body):
        where = f"compatible[{index}]"
        unknown = sorted(set(item) - _ENDPOINT_KEYS)
        if unknown:
            raise ConfigError(f"config.toml: unknown key {where}.{unknown[0]} (known: {', '.join(sorted(_ENDPOINT_KEYS))})")
        name = item.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
            raise ConfigError(f"config.toml: {where}.name must be a lowercase name like \"corp-gateway\"")
        hosts = item.get("hosts")
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h.strip() for h in hosts):
            raise ConfigError(f'config.toml: {where}.hosts must be a non-empty list like ["llm.corp.example"]')
        fmt = item.get("format")
        if fmt not in ENDPOINT_FORMATS:
            raise ConfigError(f"config.toml: {where}.format must be one of {', '.join(ENDPOINT_FORMATS)}, not {fmt!r}")
        prefix = item.get("path_prefix", "/v1")
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ConfigError(f'config.toml: {where}.path_prefix must be a path like "/v1"')
        price_as = item.get("price_as")
        if price_as is not None and not isinstance(price_as, str):
            raise ConfigError(f"config.toml: {where}.price_as must be a price-list provider id like \"openai\"")
        billing = item.get("billing", "api")
        if billing not in ("api", "subscription"):
            raise ConfigError(f"config.toml: {where}.billing must be api or subscription, not {billing!r}")
        endpoints.append(CompatibleEndpoint(name, tuple(h.strip().lower() for h in hosts), fmt, prefix, price_as, billing))
    names = [e.name for e in endpoints]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"config.toml: two [[compatible]] endpoints are named {name!r}")
    return tuple(endpoints)


PROJECT_NAME = re.compile(r"[^\x00-\x1f\x7f/\\]{1,100}")


def valid_project_name(name: str) -> bool:
    """1-100 characters, no control characters or slashes, not blank."""
    return bool(PROJECT_NAME.fullmatch(name)) and bool(name.strip()) and name == name.strip()


def _project_rules(body: Any, config_dir: Path) -> tuple[ProjectRule, ...]:
    example = '[projects] with lines like "~/work/acme" = "acme" or "~/clients/*" = "clients"'
    if not isinstance(body, dict):
        raise ConfigError(f"config.toml: [projects] maps directory globs to project names: {example}")
    rules = []
    for pattern, project in body.items():
        if isinstance(project, dict):
            raise ConfigError(f'config.toml: [projects] maps a directory glob to a name; quote paths with dots: {example}')
        if not isinstance(project, str) or not valid_project_name(project):
            raise ConfigError(f"config.toml: projects.{pattern!r} must be a project name (1-100 characters, no "
                              f"slashes), not {project!r}")
        expanded = str(Path(pattern).expanduser()) if pattern.startswith("~") else pattern
        if not expanded.startswith("/"):
            raise ConfigError(f"config.toml: projects.{pattern!r} must be an absolute path or start with ~ "
                              f"(it is matched against the client's working directory)")
        expanded = expanded.rstrip("/") or "/"
        rules.append(ProjectRule(pattern, project, glob_regex(expanded)))
    return tuple(rules)


def _key_names(body: Any) -> dict[str, str]:
    if not isinstance(body, dict):
        raise ConfigError('config.toml: [keys] maps key fingerprints to names, like "3f9a1c2e" = "team key" '
                          "(see `halton-meter report --by key`)")
    names: dict[str, str] = {}
    for fingerprint, name in body.items():
        if not re.fullmatch(r"[0-9a-f]{4,16}", fingerprint):
            raise ConfigError(f"config.toml: keys.{fingerprint!r} is not a key fingerprint (4-16 lowercase hex "
                              "characters, as `halton-meter report --by key` shows them)")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise ConfigError(f"config.toml: keys.{fingerprint} must be a name (1-100 characters), not {name!r}")
        names[fingerprint] = name.strip()
    prefixes = sorted(names)
    for a, b in zip(prefixes, prefixes[1:], strict=False):
        if b.startswith(a):
            raise ConfigError(f"config.toml: [keys] names {a!r} and {b!r}, and one is a prefix of the other")
    return names
