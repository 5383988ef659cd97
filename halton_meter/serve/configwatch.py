"""A running meter follows config.toml: edits apply without a restart, and a broken edit changes nothing.

The core and the edge each watch the file (a `stat` every second; no OS-specific notification API, so it
works the same everywhere). When it changes they validate it first, exactly as a start would; an invalid
file is reported (the running process keeps the configuration it has, and publishes the error for `status`
and `doctor`), a valid one is applied at once where it can be — prices, `[projects]` rules, `[keys]`,
capture, `upstream.resolve`, `[[compatible]]` endpoints, plugin settings, edge limits — and the changes that
need a restart (the ports, the upstream CA bundle) are named until one happens. `halton-meter reload` checks
the file and waits until both processes have taken it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from halton_meter.config import Config, load_config
from halton_meter.errors import HaltonError

log = structlog.get_logger("halton_meter.configwatch")

POLL_SECONDS = 1.0
RESTART_FIELDS = {"edge_port": "[edge] port", "api_port": "[api] port",
                  "upstream_ca_bundle": "[upstream] ca_bundle", "shutdown_grace_seconds": "[core] shutdown_grace_seconds",
                  "sync": "[[sync]]", "core_workers": "[core] workers"}
"""What a running meter cannot take without a restart (its ports, its TLS trust, its own shutdown, how many
core processes it runs)."""
FIELD_NAMES = {
    "edge_idle_timeout_seconds": "[edge] idle_timeout_seconds", "edge_max_connections": "[edge] max_connections",
    "edge_passthrough_quiet_seconds": "[edge] passthrough_quiet_seconds",
    "edge_passthrough_max_seconds": "[edge] passthrough_max_seconds", "upstream_resolve": "[upstream] resolve",
    "plugins": "[plugins]", "prices": "[prices]", "compatible": "[[compatible]]", "capture_projects": "[capture] projects",
    "capture_max_bytes": "[capture] max_bytes", "project_rules": "[projects]", "key_names": "[keys]",
    "budgets": "[[budgets]]", "api_metrics_labels": "[api] metrics_labels",
    "api_metrics_max_series": "[api] metrics_max_series", "api_metrics_without_token": "[api] metrics_without_token",
    **RESTART_FIELDS,
}


def file_stamp(config: Config) -> tuple[int, int, int] | None:
    try:
        st = config.paths.config.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def changed_fields(old: Config, new: Config) -> list[str]:
    return [f.name for f in dataclasses.fields(Config)
            if f.name not in ("paths", "source") and getattr(old, f.name) != getattr(new, f.name)]


@dataclass
class ConfigState:
    """What a process publishes about its configuration (in its counters file)."""

    stamp: list[int] | None = None
    """The (mtime_ns, size, inode) of config.toml the process last looked at; None: no file."""
    loaded_at: float = field(default_factory=time.time)
    error: str | None = None
    """The file changed and is invalid: the process keeps the configuration it had."""
    applied: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)
    """Changed settings that take effect only after `halton-meter restart`."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigWatcher:
    """Polls config.toml; calls `apply(new_config)` with every valid change (off the caller's thread when
    used through `poll` in an executor). `apply` raising keeps the old configuration, reported as an error."""

    def __init__(self, config: Config, apply: Callable[[Config], None]) -> None:
        self.config = config
        self._started = config
        self._apply = apply
        self.state = ConfigState(stamp=self._stamp())

    def _stamp(self) -> list[int] | None:
        stamp = file_stamp(self.config)
        return list(stamp) if stamp else None

    def changed(self) -> bool:
        """Whether config.toml's stamp differs from the one last seen: one stat, cheap enough for an event
        loop (an idle meter then never hops to a thread just to find nothing changed)."""
        return self._stamp() != self.state.stamp

    def poll(self) -> bool:
        """Look once; True when something changed (applied or refused)."""
        stamp = self._stamp()
        if stamp == self.state.stamp:
            return False
        self.state.stamp = stamp
        try:
            new = load_config(self.config.paths)
        except HaltonError as exc:
            self.state.error = exc.message
            log.error("config.toml changed but is invalid: keeping the configuration in use", error=exc.message)
            return True
        changed = changed_fields(self.config, new)
        try:
            self._apply(new)
        except Exception as exc:  # a plugin refusing its new block, say: keep what runs
            self.state.error = f"{type(exc).__name__}: {exc}"
            log.error("config.toml changed but could not be applied: keeping the configuration in use",
                      error=self.state.error)
            return True
        self.config = new
        self.state.error = None
        self.state.loaded_at = time.time()
        self.state.applied = [FIELD_NAMES.get(f, f) for f in changed if f not in RESTART_FIELDS]
        self.state.restart_needed = [RESTART_FIELDS[f] for f in changed_fields(self._started, new)
                                     if f in RESTART_FIELDS]
        if changed:
            log.info("config.toml applied", applied=self.state.applied or None,
                     restart_needed=self.state.restart_needed or None)
        return True


async def watch(watcher: ConfigWatcher, interval: float = POLL_SECONDS) -> None:
    """Run `watcher.poll` every `interval` on a worker thread, forever (cancel to stop)."""
    import asyncio

    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        try:
            if watcher.changed():
                await loop.run_in_executor(None, watcher.poll)
        except Exception as exc:  # never let the watch stop the process
            log.error("config watch failed", error=f"{type(exc).__name__}: {exc}")
