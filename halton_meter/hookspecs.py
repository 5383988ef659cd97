"""The table of contents: every hook Halton Meter calls, grouped by the phase in which it runs.

A plugin is a module (or object) with functions named after these hooks and marked with
`halton_meter.plugin.hookimpl` (`halton_meter.plugin` holds everything a plugin may import). Built-in
plugins are listed by name in `halton_meter.host.BUILTIN_PLUGINS`; third-party plugins are found through
the `halton_meter` entry-point group::

    [project.entry-points.halton_meter]
    my_provider = "halton_meter_provider_x.plugin"

How the host calls them:

* `register_*` hooks receive a `register` callback and call it once per item. Items are keyed by a
  stable, dotted, lowercase id (`provider.anthropic`, `check.config`); registering an id twice is an
  error naming both plugins. Each plugin's registration runs on its own, so one failing plugin is
  reported as an error and the others still load.
* Where items must run in an order (init steps, attributors, checks), each declares the ids it
  `requires`; the host sorts them topologically and refuses cycles and unknown ids. Registration order
  and tryfirst/trylast never decide order.
* Every `register_*` hook may also take `config` (the validated configuration, a `PluginConfig`, or None
  when the caller has none, e.g. some tests): a plugin reads its `[plugins.NAME]` block there and hands
  what it needs to the items it registers. Nothing is kept in module globals, so two hosts in one process
  never see each other's configuration. An implementation names only the arguments it uses (pluggy), so
  `def halton_register_checks(register)` is fine too.
* No hook is called per request or per chunk. The core builds its routing table from the registries
  once at start; only `halton_usage_recorded` runs per call, after the row has committed, on the
  writer thread, off the proxy's event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from halton_meter.types import (
        Attributor,
        CallRecord,
        Check,
        Importer,
        InitStep,
        PlatformInfo,
        PlatformInstaller,
        PluginConfig,
        Provider,
        SyncTarget,
    )

PROJECT = "halton_meter"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------------
# Start-up: configuration
# --------------------------------------------------------------------------------------------------


@hookspec(historic=True)
def halton_configure(config: PluginConfig) -> None:
    """Called once, after `config.toml` has been read and validated, before anything is registered.

    Historic: a plugin registered later still receives the call. For validation: a plugin reads its own
    block from `config.plugin_config(<plugin name>)` and raises `ConfigError` (one line: key path and the
    fix) when that block is invalid, which stops the command with exit code 2. It keeps nothing: what a
    plugin's items need reaches them through the `config` argument of the `register_*` hooks. Returns
    nothing.
    """


# --------------------------------------------------------------------------------------------------
# Start-up: registries (each runs once per process, in every process that needs the registry)
# --------------------------------------------------------------------------------------------------


@hookspec
def halton_register_providers(register: Callable[[Provider], None], config: PluginConfig | None) -> None:
    """Register provider parsers: `register(provider)` with a `halton_meter.plugin.Provider`.

    `config` is the validated configuration (None when the caller has none, e.g. some tests), so a plugin
    can register providers the user declared (`[[compatible]]` endpoints) without global state.

    Called once when a process builds its routing table (the edge, to know which hosts to send to the
    core; the core, to route host/path to a parser). A provider claims hosts and classifies paths; its
    parsers are pure and incremental. Returns nothing; order is irrelevant (hosts must not overlap).
    """


@hookspec
def halton_register_checks(register: Callable[[Check], None], config: PluginConfig | None) -> None:
    """Register doctor rows: `register(check)` with a `halton_meter.plugin.Check`.

    Checks are read-only; a crashing check becomes an `error` row. Rows print in `requires` order, ties
    broken by id. Returns nothing.
    """


@hookspec
def halton_register_init_steps(register: Callable[[InitStep], None], config: PluginConfig | None) -> None:
    """Register `halton-meter init` steps: `register(step)` with a `halton_meter.plugin.InitStep`.

    Steps run in topological order of their `requires`; a cycle or an unknown id is refused before any
    step runs. Each step has a read-only `check`, an idempotent `apply` and an `undo`. Returns nothing.
    """


@hookspec
def halton_register_sync_targets(register: Callable[[SyncTarget], None], config: PluginConfig | None) -> None:
    """Register places rows may be pushed to: `register(target)` with a `halton_meter.plugin.SyncTarget`.

    Registering a target never enables it; only config does. Returns nothing.
    """


@hookspec
def halton_register_attributors(register: Callable[[Attributor], None], config: PluginConfig | None) -> None:
    """Register project resolvers: `register(attributor)` with a `halton_meter.plugin.Attributor`.

    Called once in the core at start. Attributors run per connection (not per request) in `requires`
    order, off the proxy's event loop; the first one that returns an `Attribution` wins and names itself
    as the record's `project_source`. Returns nothing.
    """


@hookspec
def halton_register_importers(register: Callable[[Importer], None], config: PluginConfig | None) -> None:
    """Register readers of the usage other tools keep on disk: `register(importer)` with a
    `halton_meter.plugin.Importer` (id `import.<name>`; its name is what `halton-meter import NAME` takes).

    Called once by `halton-meter import` (and `plugins`), never by the proxy. Importers only read files and
    yield calls (ids, model, tokens, times, working directory; never text); the host attributes, prices,
    de-duplicates and writes them. Two importers of the same name are refused when that name is asked for.
    Returns nothing.
    """


# --------------------------------------------------------------------------------------------------
# Installation: exactly one installer per platform
# --------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def halton_platform_installer(platform: PlatformInfo) -> PlatformInstaller | None:
    """Return the installer (services, CA trust, environment) for this platform, or None to pass.

    First result wins: the first non-None answer is used and later implementations are not called.
    Called by `init`, `start`, `stop`, `status` and `uninstall`, never by the proxy.
    """


# --------------------------------------------------------------------------------------------------
# Runtime events
# --------------------------------------------------------------------------------------------------


@hookspec
def halton_usage_recorded(record: CallRecord) -> None:
    """Called once per call record after its row has committed to SQLite.

    Runs on the writer thread, never on the proxy's event loop; must return quickly (queue work for later
    rather than doing network I/O inline). An exception is logged and counted, and never loses the row.
    Returns nothing.
    """
