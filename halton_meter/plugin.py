"""The plugin API: everything a Halton Meter plugin may import, and nothing else.

This module is the whole promised surface. A plugin (built-in under `plugins/` and `checks/`, or a
third-party package found through the `halton_meter` entry-point group) imports only from here, from the
standard library and third-party libraries, and from its own package; `tests/test_plugin_api.py` enforces
that for every plugin in this repository. Names not listed in `__all__` are host internals and may change
in any release::

    from halton_meter.plugin import OpenAICompatibleProvider, PluginConfig, Provider, hookimpl

    @hookimpl
    def halton_register_providers(register: Callable[[Provider], None], config: PluginConfig | None) -> None:
        register(OpenAICompatibleProvider(id="provider.x", name="x", hosts=("llm.x.example",)))

What is here, by section:

* The hook marker (`hookimpl`) and the hook contract (`halton_meter.hookspecs` documents every hook).
* The vocabulary (`Provider`, `Check`, `CheckResult`, `InitStep`, `SyncTarget`, `Attributor`, `Importer`,
  the records and parse results) and the contexts a plugin is handed, typed as `typing.Protocol`s
  (`PluginConfig`, `InitContext`, `CommandRunner`, `PlatformInstaller`, `PluginStatus`) or plain value
  types (`Paths`, `SystemState`, `PlatformInfo`).
* The errors a plugin raises: `ConfigError` (its config block is invalid), `UnsupportedOnPlatform` (an
  installer cannot do this here), `StepSkipped` (an init step does not apply here), `CommandFailed`
  (raised by the runner), and `HaltonError`, `DatabaseError` and `PluginError`.
* The provider bases: `OpenAICompatibleProvider` and `AnthropicCompatibleProvider` (instantiate them for
  any host speaking those formats, or subclass and swap the parser classes), and the parser helpers they
  are built on (`halton_meter.wire`: SSE and JSON framing within bounded buffers; `is_identifier`).
* Host services: read-only views of the running meter and of this machine, and the few recorded actions
  init steps need (CA files, the self-test).

How a plugin gets its configuration: every `halton_register_*` hook may take a `config` argument (a
`PluginConfig`, or None when the caller has none); the plugin reads its `[plugins.NAME]` block with
`config.plugin_config(NAME)` and passes what it needs to the items it registers (e.g.
`OpenAICompatibleProvider(include_usage=include_usage_mode(config))`). `halton_configure(config)` is for
validation only: it runs when the config is read, and a `ConfigError` raised there stops the command with
exit code 2. Nothing is kept in module globals, so two hosts in one process never share configuration.

Decision on checks that need host internals (the doctor reads the store, the runtime files and the
service state): rather than growing `CheckContext` with a handle per subsystem, the narrow read-only
functions those checks call are exported here under "Host services" (`read_runtime`, `read_stats`,
`core_state`, `connect_read_only`, `summarize_gaps`, `provider_hosts`, `read_only_init_context`, ...).
They are part of the promise like the rest: they only read (or, for init steps, act through the recorded
init context), and they take `Paths` or `PluginConfig`, never a host object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from halton_meter import __version__
from halton_meter.attribution.service import UNATTRIBUTED, attribute
from halton_meter.attribution.workspace import PROJECT_FILE, GitInfo, ProjectFile, find_project_file, git_info
from halton_meter.budgets.spend import overrides as budget_overrides
from halton_meter.budgets.spend import spent as budget_spent
from halton_meter.ca import CA_COMMON_NAME, client_bundle_bytes, ensure_ca, inspect_ca, write_client_bundle
from halton_meter.clock import parse_stamp
from halton_meter.config import CompatibleEndpoint, ProjectRule, ResolveRule, load_config, valid_project_name
from halton_meter.core.routing import pattern_covers
from halton_meter.errors import (
    ConfigError,
    DatabaseError,
    HaltonError,
    PluginError,
    StepSkipped,
    UnsupportedOnPlatform,
)
from halton_meter.hookspecs import hookimpl
from halton_meter.host import DISABLE_ENV, provider_hosts
from halton_meter.lifecycle.commands import CommandFailed, SystemRunner
from halton_meter.lifecycle.context import STATE_FILE
from halton_meter.lifecycle.init import InitOptions, read_only_init_context
from halton_meter.lifecycle.selftest import CANARY_HOST, CANARY_PATH, run_self_test
from halton_meter.lifecycle.services import (
    SERVICE_NAME,
    START_TIMEOUT,
    Health,
    api_healthy,
    core_answers,
    core_port,
    core_state,
    edge_answers,
    log_tail,
    pid_alive,
    probe,
    serve_argv,
    service_env,
    user_config_dir,
    wait_until_running,
)
from halton_meter.lifecycle.state import Change, SystemState
from halton_meter.paths import WRITABLE_FIX, Paths, ensure_private_dir, writable_problem
from halton_meter.ratelimits import session_from_request
from halton_meter.redact import is_identifier, is_label
from halton_meter.serve.runtime import NO_PROXY, port_answers, read_runtime
from halton_meter.serve.stats import CORE_STATS, EDGE_STATS, read_stats
from halton_meter.store.gaps import GapSummary
from halton_meter.store.gaps import summarize as summarize_gaps
from halton_meter.store.journal import backlog
from halton_meter.store.schema import LATEST_VERSION, check_readable, connect_read_only, read_only_uri
from halton_meter.sync.engine import status as sync_status
from halton_meter.timewindow import iso
from halton_meter.types import (
    BILLING_API,
    BILLING_SUBSCRIPTION,
    SELF_TEST_KIND,
    SOURCE_IMPORT,
    SOURCE_PROXY,
    Attribution,
    Attributor,
    CallRecord,
    Check,
    CheckContext,
    CheckResult,
    CheckStatus,
    ClientInfo,
    CommandResult,
    CommandRunner,
    Endpoint,
    ImportedCall,
    Importer,
    ImportStats,
    InitContext,
    InitStep,
    ParseOutcome,
    PlatformInfo,
    PlatformInstaller,
    PluginConfig,
    PluginStatus,
    Provider,
    RequestFacts,
    ResponseParser,
    ServiceState,
    StreamRewriter,
    SyncSink,
    SyncTarget,
    Usage,
)
from halton_meter.wire import (
    DEFAULT_DECODED_CAP,
    MAX_SSE_EVENT_BYTES,
    REQUEST_SCAN_TOKENS,
    JSONAccumulator,
    JSONArrayStream,
    OverBudget,
    PartialDocument,
    SSEDecoder,
    SSEEvent,
    SSEEventRewriter,
    load_json,
    loads_or_none,
    sse_lines,
)

if TYPE_CHECKING:
    from halton_meter_plugins.providers.anthropic import AnthropicCompatibleProvider
    from halton_meter_plugins.providers.openai import OpenAICompatibleProvider, include_usage_mode

_PROVIDER_BASES = {
    "AnthropicCompatibleProvider": "halton_meter_plugins.providers.anthropic",
    "OpenAICompatibleProvider": "halton_meter_plugins.providers.openai",
    "include_usage_mode": "halton_meter_plugins.providers.openai",
}
"""The provider bases live in the built-in plugins that use them; they are imported on first access (PEP
562), because those plugins themselves import this module."""


def port_holder(port: int) -> str | None:
    """`PID 1234 (python3)` for the process listening on a local TCP port, when the OS lets us see it.

    (Imports the supervisor only when called, so a process that loads plugins, like the edge, does not load
    the serve machinery with them.)"""
    from halton_meter.serve.supervisor import port_holder as holder

    return holder(port)


def __getattr__(name: str) -> object:
    module_name = _PROVIDER_BASES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)


__all__ = [
    # the hook marker and the version of the host
    "__version__",
    "hookimpl",
    # host patterns (for checks that reason about which hosts are metered)
    "pattern_covers",
    # budgets: a budget's spend and the overrides running, as the core and `halton-meter budgets` read them
    "budget_overrides",
    "budget_spent",
    # vocabulary: usage, parsing, records
    "BILLING_API",
    "BILLING_SUBSCRIPTION",
    "SELF_TEST_KIND",
    "SOURCE_IMPORT",
    "SOURCE_PROXY",
    "CallRecord",
    "Endpoint",
    "ParseOutcome",
    "RequestFacts",
    "ResponseParser",
    "StreamRewriter",
    "Usage",
    # registered items
    "Attribution",
    "Attributor",
    "Check",
    "CheckResult",
    "CheckStatus",
    "ImportStats",
    "ImportedCall",
    "Importer",
    "InitStep",
    "PlatformInstaller",
    "Provider",
    "ServiceState",
    "SyncSink",
    "SyncTarget",
    # contexts and the values they hold
    "Change",
    "CheckContext",
    "ClientInfo",
    "CommandResult",
    "CommandRunner",
    "CompatibleEndpoint",
    "GitInfo",
    "InitContext",
    "InitOptions",
    "Paths",
    "PlatformInfo",
    "PluginConfig",
    "PluginStatus",
    "ProjectFile",
    "ProjectRule",
    "ResolveRule",
    "SystemState",
    # errors
    "CommandFailed",
    "ConfigError",
    "DatabaseError",
    "HaltonError",
    "PluginError",
    "StepSkipped",
    "UnsupportedOnPlatform",
    # provider bases and parser helpers
    "AnthropicCompatibleProvider",
    "OpenAICompatibleProvider",
    "include_usage_mode",
    "DEFAULT_DECODED_CAP",
    "MAX_SSE_EVENT_BYTES",
    "REQUEST_SCAN_TOKENS",
    "JSONAccumulator",
    "JSONArrayStream",
    "OverBudget",
    "PartialDocument",
    "SSEDecoder",
    "SSEEvent",
    "SSEEventRewriter",
    "sse_lines",
    "is_identifier",
    "session_from_request",
    "parse_stamp",
    "sync_status",
    "is_label",
    "load_json",
    "loads_or_none",
    # host services: files and processes of the running meter (read-only)
    "CORE_STATS",
    "EDGE_STATS",
    "LATEST_VERSION",
    "NO_PROXY",
    "SERVICE_NAME",
    "START_TIMEOUT",
    "STATE_FILE",
    "WRITABLE_FIX",
    "GapSummary",
    "Health",
    "api_healthy",
    "backlog",
    "check_readable",
    "connect_read_only",
    "core_answers",
    "core_port",
    "core_state",
    "edge_answers",
    "iso",
    "log_tail",
    "pid_alive",
    "port_answers",
    "port_holder",
    "probe",
    "read_only_uri",
    "read_runtime",
    "read_stats",
    "summarize_gaps",
    "writable_problem",
    # host services: configuration, plugins, attribution
    "DISABLE_ENV",
    "PROJECT_FILE",
    "UNATTRIBUTED",
    "attribute",
    "find_project_file",
    "git_info",
    "load_config",
    "provider_hosts",
    "valid_project_name",
    # host services: what init steps and installers use
    "CA_COMMON_NAME",
    "CANARY_HOST",
    "CANARY_PATH",
    "SystemRunner",
    "client_bundle_bytes",
    "ensure_ca",
    "ensure_private_dir",
    "inspect_ca",
    "read_only_init_context",
    "run_self_test",
    "serve_argv",
    "service_env",
    "user_config_dir",
    "wait_until_running",
    "write_client_bundle",
]
