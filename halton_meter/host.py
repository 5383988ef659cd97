"""The plugin host: loads built-in and third-party plugins and collects their registrations.

There is no global plugin manager: every process builds one `PluginHost` when it needs the registries,
so tests get a fresh host per test and nothing happens at import time.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pluggy

from halton_meter import __version__, hookspecs
from halton_meter.errors import ConfigError, PluginError

if TYPE_CHECKING:
    from halton_meter.config import Config
    from halton_meter.types import Attributor, Check, Importer, InitStep, PluginConfig, Provider, SyncTarget

ENTRY_POINT_GROUP = "halton_meter"
DISABLE_ENV = "HALTON_METER_DISABLE_PLUGINS"
"""Comma-separated plugin names never to load (built-in or third-party)."""
ALLOW_ENV = "HALTON_METER_PLUGINS"
"""Comma-separated third-party plugin names to load; others are skipped. Unset: load all installed."""

BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("anthropic", "halton_meter_plugins.providers.anthropic"),
    ("openai", "halton_meter_plugins.providers.openai"),
    ("codex", "halton_meter_plugins.providers.codex"),
    ("gemini", "halton_meter_plugins.providers.gemini"),
    ("code-assist", "halton_meter_plugins.providers.code_assist"),
    ("xai", "halton_meter_plugins.providers.xai"),
    ("groq", "halton_meter_plugins.providers.groq"),
    ("deepseek", "halton_meter_plugins.providers.deepseek"),
    ("mistral", "halton_meter_plugins.providers.mistral"),
    ("openrouter", "halton_meter_plugins.providers.openrouter"),
    ("bedrock", "halton_meter_plugins.providers.bedrock"),
    ("vertex", "halton_meter_plugins.providers.vertex"),
    ("azure-openai", "halton_meter_plugins.providers.azure_openai"),
    ("compatible", "halton_meter_plugins.providers.compatible"),
    ("selftest", "halton_meter_plugins.providers.selftest"),
    ("init-steps", "halton_meter_plugins.init_steps"),
    ("installer.systemd", "halton_meter_plugins.installers.systemd"),
    ("installer.launchd", "halton_meter_plugins.installers.launchd"),
    ("installer.windows", "halton_meter_plugins.installers.windows"),
    ("installer.builtin", "halton_meter_plugins.installers.builtin"),
    ("attributors", "halton_meter_plugins.attributors"),
    ("importer.claude-code", "halton_meter_plugins.importers.claude_code"),
    ("importer.codex", "halton_meter_plugins.importers.codex"),
    ("sync.postgres", "halton_meter_plugins.sync.postgres"),
    ("sync.otlp", "halton_meter_plugins.sync.otlp"),
    ("checks.basics", "halton_meter_checks.basics"),
    ("checks.ca", "halton_meter_checks.ca"),
    ("checks.meter", "halton_meter_checks.meter"),
    ("checks.store", "halton_meter_checks.store"),
    ("checks.plan", "halton_meter_checks.plan"),
    ("checks.budgets", "halton_meter_checks.budgets"),
    ("checks.sync", "halton_meter_checks.sync"),
    ("checks.environment", "halton_meter_checks.environment"),
    ("checks.clients", "halton_meter_checks.clients"),
    ("checks.attribution", "halton_meter_checks.attribution"),
    ("checks.plugins", "halton_meter_checks.plugins"),
)
"""Every built-in feature as (plugin name, module). The name is what `halton-meter plugins` shows and what
HALTON_METER_DISABLE_PLUGINS takes."""

REGISTER_HOOKS: dict[str, str] = {
    "providers": "halton_register_providers",
    "checks": "halton_register_checks",
    "init_steps": "halton_register_init_steps",
    "sync_targets": "halton_register_sync_targets",
    "attributors": "halton_register_attributors",
    "importers": "halton_register_importers",
}

T = TypeVar("T")


@dataclass
class PluginInfo:
    name: str
    source: str
    """`builtin` or `entry_point`."""
    module: str
    version: str
    status: str = "ok"
    """`ok`, `error` or `disabled`."""
    error: str | None = None
    provides: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "hooks": self.hooks,
            "provides": self.provides,
        }


class Registry[T]:
    """Items keyed by id, remembering which plugin registered each."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def add(self, item: T, owner: str) -> None:
        item_id = getattr(item, "id", None)
        if not isinstance(item_id, str) or not item_id:
            raise PluginError(f"plugin {owner} registered a {self.kind} item without a string id: {item!r}")
        if item_id in self._items:
            raise PluginError(
                f"duplicate {self.kind} id {item_id!r}: registered by {self._owners[item_id]} and by {owner}"
            )
        self._items[item_id] = item
        self._owners[item_id] = owner

    def remove_owner(self, owner: str) -> None:
        for item_id in [i for i, o in self._owners.items() if o == owner]:
            del self._items[item_id]
            del self._owners[item_id]

    def owner(self, item_id: str) -> str:
        return self._owners[item_id]

    def get(self, item_id: str) -> T:
        return self._items[item_id]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def ids(self) -> list[str]:
        return list(self._items)

    def ordered(self) -> list[T]:
        """Items sorted so each comes after everything it `requires`; ties broken by id."""
        return [self._items[i] for i in topological_order({i: tuple(getattr(v, "requires", ())) for i, v in
                                                           self._items.items()}, self.kind)]


def topological_order(requires: dict[str, tuple[str, ...]], kind: str = "item") -> list[str]:
    """Kahn's algorithm with a sorted ready set, so the order never depends on registration order."""
    for item, wanted in requires.items():
        unknown = [d for d in wanted if d not in requires]
        if unknown:
            raise PluginError(f"{kind} {item!r} requires unknown id(s): {', '.join(sorted(unknown))}")
    remaining = {item: set(deps) for item, deps in requires.items()}
    order: list[str] = []
    while remaining:
        ready = sorted(item for item, deps in remaining.items() if not deps)
        if not ready:
            cycle = " -> ".join(sorted(remaining))
            raise PluginError(f"{kind} ids form a cycle through their requires: {cycle}")
        for item in ready:
            order.append(item)
            del remaining[item]
        for deps in remaining.values():
            deps.difference_update(ready)
    return order


@dataclass
class Registries:
    providers: Registry[Provider] = field(default_factory=lambda: Registry("provider"))
    checks: Registry[Check] = field(default_factory=lambda: Registry("check"))
    init_steps: Registry[InitStep] = field(default_factory=lambda: Registry("init step"))
    sync_targets: Registry[SyncTarget] = field(default_factory=lambda: Registry("sync target"))
    attributors: Registry[Attributor] = field(default_factory=lambda: Registry("attributor"))
    importers: Registry[Importer] = field(default_factory=lambda: Registry("importer"))


def _env_names(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {n.strip() for n in raw.split(",") if n.strip()}


class PluginHost:
    """Loads plugins into a pluggy PluginManager, guarding each one, and collects registrations."""

    def __init__(self, config: Config | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.config = config
        self.plugins: dict[str, PluginInfo] = {}
        self._registries: Registries | None = None
        if config is not None:
            self.pm.hook.halton_configure.call_historic(kwargs={"config": config})

    # ---- loading -------------------------------------------------------------------------------

    def load(
        self,
        builtins: Iterable[tuple[str, str]] = BUILTIN_PLUGINS,
        entry_points: bool = True,
    ) -> PluginHost:
        disabled = _env_names(DISABLE_ENV) or set()
        allowed = _env_names(ALLOW_ENV)
        for name, module_name in builtins:
            info = PluginInfo(name=name, source="builtin", module=module_name, version=__version__)
            if name in disabled:
                self._disable(info, f"disabled by {DISABLE_ENV}")
                continue
            self._guarded_register(info, functools.partial(importlib.import_module, module_name))
        if entry_points:
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                dist = getattr(ep, "dist", None)
                info = PluginInfo(
                    name=ep.name,
                    source="entry_point",
                    module=ep.value,
                    version=getattr(dist, "version", None) or "unknown",
                )
                if info.name in self.plugins:
                    info.name = f"{ep.name} ({getattr(dist, 'name', ep.value)})"
                if ep.name in disabled:
                    self._disable(info, f"disabled by {DISABLE_ENV}")
                elif allowed is not None and ep.name not in allowed:
                    self._disable(info, f"not listed in {ALLOW_ENV}")
                else:
                    self._guarded_register(info, ep.load)
        return self

    def register_object(self, plugin: object, name: str, source: str = "builtin") -> PluginInfo:
        """Register an already-imported plugin object (used by tests and embedding applications)."""
        info = PluginInfo(name=name, source=source, module=getattr(plugin, "__name__", repr(plugin)),
                          version=__version__)
        self._guarded_register(info, lambda: plugin)
        return info

    def _disable(self, info: PluginInfo, reason: str) -> None:
        info.status, info.error = "disabled", reason
        self.plugins[info.name] = info

    def _guarded_register(self, info: PluginInfo, load: Callable[[], object]) -> None:
        """Import and register one plugin; any failure becomes `status=error`, never an exception."""
        self.plugins[info.name] = info
        self._registries = None
        try:
            plugin = load()
        except Exception as exc:  # a broken plugin must not brick the CLI (not even `uninstall`)
            info.status, info.error = "error", f"import failed: {type(exc).__name__}: {exc}"
            return
        unmarked = _unmarked_hook_functions(plugin)
        if unmarked:
            info.status = "error"
            info.error = f"function(s) {', '.join(unmarked)} lack the @hookimpl marker (from halton_meter import hookimpl)"
            return
        try:
            self.pm.register(plugin, name=info.name)
        except ConfigError:
            raise  # the user's config.toml is wrong (a plugin's block): exit 2 with its line, like any config error
        except Exception as exc:
            info.status, info.error = "error", f"registration failed: {exc}"
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            return
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            info.status, info.error = "error", f"unknown hook (misspelled?): {exc}"
            self.pm.unregister(plugin)
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or ())

    # ---- registries ----------------------------------------------------------------------------

    @property
    def registries(self) -> Registries:
        """Collect every plugin's registrations once (cached until another plugin is registered)."""
        if self._registries is None:
            self._registries = self._collect()
        return self._registries

    def _collect(self) -> Registries:
        registries = Registries()
        for kind, hook_name in REGISTER_HOOKS.items():
            registry: Registry[Any] = getattr(registries, kind)
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                info = self._info_for(impl.plugin_name)
                if info is None or info.status != "ok":
                    continue

                def register(item: Any, _owner: str = impl.plugin_name, _registry: Registry[Any] = registry) -> None:
                    _registry.add(item, _owner)

                arguments = {"register": register, "config": self.config}
                try:
                    impl.function(*[arguments[arg] for arg in impl.argnames])
                except Exception as exc:
                    info.status = "error"
                    info.error = f"{hook_name} failed: {type(exc).__name__}: {exc}"
                    for other in REGISTER_HOOKS:
                        getattr(registries, other).remove_owner(impl.plugin_name)
                        info.provides.pop(other, None)
                    continue
                provided = [i for i in registry.ids() if registry.owner(i) == impl.plugin_name]
                if provided:
                    info.provides[kind] = provided
        return registries

    def _info_for(self, plugin_name: str) -> PluginInfo | None:
        return self.plugins.get(plugin_name)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def validate_config(self) -> PluginHost:
        """What config.toml may only name once plugins are known: `[prices.PROVIDER]` must be a registered
        provider (or a `[[compatible]]` name). ConfigError with a "did you mean" otherwise — a misspelled
        provider would silently never apply."""
        if self.config is None or not self.config.prices:
            return self
        import difflib

        from halton_meter.errors import ConfigError

        names = sorted({p.name for p in self.registries.providers} | {c.name for c in self.config.compatible})
        for provider, _ in self.config.prices:
            if provider not in names:
                close = difflib.get_close_matches(provider, names, n=1, cutoff=0.6)
                hint = f"; did you mean [prices.{close[0]}]?" if close else ""
                raise ConfigError(f"config.toml: [prices.{provider}] names no provider{hint} (known: {', '.join(names)})")
        return self

    def errors(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.status == "error"]


def _unmarked_hook_functions(plugin: object) -> list[str]:
    """Hook-named functions without the marker: pluggy would silently ignore them, so we refuse."""
    names = [
        n for n in dir(plugin)
        if n.startswith("halton_") and (hasattr(hookspecs, n) or n.startswith("halton_register"))
    ]
    unmarked = []
    for name in names:
        fn = getattr(plugin, name, None)
        if callable(fn) and not isinstance(fn, type) and not hasattr(fn, f"{hookspecs.PROJECT}_impl"):
            unmarked.append(name)
    return unmarked


def load_host(config: Config | None = None) -> PluginHost:
    return PluginHost(config).load()


def provider_hosts(config: PluginConfig | None) -> dict[str, tuple[str, ...]]:
    """Provider name -> hosts it claims (built-in, third-party and `[[compatible]]` endpoints), from a host
    of its own: for checks, which are handed plugin facts but not the registries (module imports are
    cached; nothing is started)."""
    host = PluginHost(cast("Config | None", config)).load()
    return {p.name: tuple(p.hosts) for p in host.registries.providers}


__all__ = [
    "ALLOW_ENV",
    "BUILTIN_PLUGINS",
    "DISABLE_ENV",
    "ENTRY_POINT_GROUP",
    "PluginHost",
    "PluginInfo",
    "Registries",
    "Registry",
    "load_host",
    "provider_hosts",
    "topological_order",
]
