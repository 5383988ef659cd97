"""The vocabulary shared by the host and every plugin.

Providers turn bytes into `Usage` and a `ParseOutcome`; the core turns those into a `CallRecord`; the store
writes records. Checks, init steps, sync targets, attributors and importers are small declarative objects
registered through the hooks in `halton_meter.hookspecs`.

Token convention (see docs/concepts/tokens.md): the four buckets `input_tokens`,
`cache_read_tokens`, `cache_write_tokens` and `output_tokens` are disjoint and together are everything the
provider billed. `cache_write_1h_tokens` is the part of `cache_write_tokens` written with a 1-hour TTL, and
`reasoning_tokens` is the part of `output_tokens` spent thinking (None when the provider gave no breakdown).

The contexts a plugin is handed (`PluginConfig`, `InitContext`, `CommandRunner`, `CheckContext`'s members)
are `typing.Protocol`s or plain value types here, so a plugin is typed against what it may use and never
against the host's classes. Plugins import all of this from `halton_meter.plugin`, not from here.

Why this module is long: it is the whole shared vocabulary (usage, records, and every registered item and
the context it runs with) in one place, so that a plugin author reads one file; the sections below are
independent and each is short.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from halton_meter.attribution.workspace import GitInfo
    from halton_meter.config import CompatibleEndpoint, ProjectRule, ResolveRule
    from halton_meter.lifecycle.init import InitOptions
    from halton_meter.lifecycle.state import Change, SystemState
    from halton_meter.paths import Paths

# --------------------------------------------------------------------------------------------------
# Usage and parsing
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a provider says about one (method, path): the kind of call and whether it can be billed."""

    kind: str
    """Stable, dotted, lowercase: `messages`, `chat.completions`, `count_tokens`, `other`."""
    billable: bool
    """True when a successful call of this kind consumes billable tokens."""
    inference: bool = True
    """False for setup, listing and token-counting calls; such calls never carry usage."""


BILLING_API = "api"
"""Charged per token at the provider's prices."""
BILLING_SUBSCRIPTION = "subscription"
"""Covered by a flat plan (ChatGPT sign-in for Codex, a Claude subscription login, Code Assist quota):
tokens are counted and priced at list-price equivalent, but nobody is charged per token."""

SELF_TEST_KIND = "self_test"
"""The endpoint kind of the meter's own canary call (`halton-meter doctor`, `init`)."""
SELF_TEST_PROJECT = ""
"""The project of a self-test row: the empty string, which no project can be named, so it is in no count."""
SELF_TEST_SOURCE = "self-test"


@dataclass(slots=True)
class RequestFacts:
    """What a provider read from the request (model, whether a stream was asked for, how it is billed)."""

    model_requested: str | None = None
    stream_requested: bool = False
    billing: str | None = None
    """Overrides the provider's default billing for this call (e.g. an OAuth subscription login)."""
    price_provider_id: str | None = None
    """Overrides the provider's price-database id for this call (e.g. OpenRouter's `vendor/model`)."""
    usage_injected: bool = False
    """The request was rewritten to ask for usage the client did not ask for (see `rewrite_request`)."""
    session_id: str | None = None
    """The client's session id when the body names one (`halton_meter.plugin.session_from_request`); the
    core also reads the session headers itself."""
    max_output_tokens: int | None = None
    """The most output the request allows (`max_tokens`, …), for the budget reservation of a call in flight."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ParseOutcome:
    """Everything a response parser learned. Built incrementally; read once at the end of the call."""

    usage: Usage = field(default_factory=Usage)
    usage_reported: bool = False
    complete: bool = False
    """The provider delivered its final accounting (whole body, or the stream's terminal event)."""
    model: str | None = None
    error_type: str | None = None
    streamed: bool = False
    provider_request_id: str | None = None
    incomplete_reason: str | None = None
    """Why the numbers may be short: `upstream_truncated`, `stream_error`, `unparsed_oversize`, `parse_error`."""
    estimated: bool = False
    """The usage is the meter's estimate, not the provider's report (never mixed: one or the other)."""
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class StreamRewriter(Protocol):
    """Changes what the client receives, for the rare documented case where the meter changed the request
    (an injected `include_usage`): it takes wire chunks and returns what to forward, and `flush` returns
    whatever is still held when the body ends. It may hold bytes only until the event they belong to is
    complete; it never holds a complete event."""

    def rewrite(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


@runtime_checkable
class ResponseParser(Protocol):
    """An incremental, non-blocking parser of one response body.

    `feed` receives decoded body bytes (content-encoding already undone by the host) split at arbitrary
    boundaries, including inside UTF-8 sequences and between CR and LF. `finish` is called exactly once;
    `eof` is True when the body ended cleanly and False when it was cut (connection lost, client gone).
    Parsers must bound their own buffers and must never raise on bad input: they record what they can.
    """

    def feed(self, data: bytes) -> None: ...

    def finish(self, eof: bool) -> ParseOutcome: ...


class Provider:
    """Base class for provider plugins. Subclass, set the class attributes, implement the three methods.

    Providers are pure: bytes in, facts out. They never do I/O and never block; the core does the I/O and
    calls them on its event loop.
    """

    id: str = ""
    """Registry id, e.g. `provider.anthropic`."""
    name: str = ""
    """Value of the record's `provider` field, e.g. `anthropic`."""
    hosts: tuple[str, ...] = ()
    """Hosts this provider claims: `api.example.com`, `api.example.com:8443`, or `*.example.com`.
    Without a port, 443 is meant. Claimed hosts are decrypted by the core; all others are tunnelled."""
    price_provider_id: str | None = None
    """The provider id in the price database (genai-prices), or None when calls are never priced."""
    secret_query_params: tuple[str, ...] = ()
    """Query parameters carrying credentials; their values are redacted from stored paths."""
    billing: str = BILLING_API
    """How calls are paid for by default: `api` (per token) or `subscription`."""
    inspect_query: bool = False
    """True: `inspect_request` is given the path with its query string (Azure reads `api-version` there).
    Credentials in it are never stored either way (`secret_query_params`)."""

    def route(self, method: str, path: str) -> Endpoint | None:
        """Classify a request path (query string removed). None: not a call this provider meters."""
        raise NotImplementedError

    def inspect_request(
        self, endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RequestFacts:
        """Read the model, streaming intent and billing from the request. `body` is decoded (may be empty
        or not JSON); `headers` has lowercase names and may hold credentials: read, never keep them."""
        return RequestFacts()

    def rewrite_request(self, endpoint: Endpoint, request: RequestFacts, body: bytes) -> bytes | None:
        """A replacement request body, or None to forward the request untouched (the default). Only for
        documented cases; a provider that rewrites must also undo the effect with `response_rewriter`."""
        return None

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        """Return a fresh parser for this response."""
        raise NotImplementedError

    def response_parser_for(
        self, endpoint: Endpoint, request: RequestFacts, status: int, headers: Mapping[str, str]
    ) -> ResponseParser:
        """The parser the core asks for, given every response header (lower-case names). The default is
        `response_parser` with the content type; override it only when the API puts usage or error types
        in headers (Bedrock's InvokeModel does). Headers may carry credentials: read, never keep them."""
        return self.response_parser(endpoint, request, status, headers.get("content-type", ""))

    def response_rewriter(
        self, endpoint: Endpoint, request: RequestFacts, status: int, headers: Mapping[str, str]
    ) -> StreamRewriter | None:
        """A rewriter for what the client receives, or None (the default: bytes pass untouched)."""
        return None

    def refusal(self, message: str, retry_after: int) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of a call the meter refuses for a budget: a 429 shaped like this API's own
        rate-limit error, so the client raises its usual exception. The default is the OpenAI shape; the
        Anthropic and Gemini families override it. The host adds `retry-after` and `x-should-retry`."""
        body = {"error": {"message": message, "type": "budget_exceeded", "param": None, "code": "budget_exceeded"}}
        return 429, {"content-type": "application/json"}, json.dumps(body).encode()

    def answer_locally(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        """(status, headers, body) for a call the core answers itself, with no upstream at all; None (the
        default) for real providers. Only the self-test canary uses it."""
        return None

    def describe(self) -> str:
        return f"{self.name}: {', '.join(self.hosts)}"


# --------------------------------------------------------------------------------------------------
# The call record
# --------------------------------------------------------------------------------------------------

PUBLIC_FIELDS: tuple[str, ...] = (
    "id",
    "started_at",
    "ended_at",
    "provider",
    "endpoint_kind",
    "host",
    "method",
    "path",
    "model",
    "model_requested",
    "streamed",
    "status",
    "complete",
    "billable",
    "usage_reported",
    "estimated",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "error_type",
    "incomplete_reason",
    "cost_usd",
    "priced",
    "price_source",
    "billing",
    "project",
    "project_source",
    "repo",
    "branch",
    "client",
    "client_process",
    "user_agent",
    "key_fingerprint",
    "cache_savings_usd",
    "latency_ms",
    "ttft_ms",
    "provider_request_id",
    "source",
    "session_id",
    "extra",
)
"""The public names of a call record, in the order `halton-meter calls --json` prints them."""

SOURCE_PROXY = "proxy"
"""A call the meter saw on the wire."""
SOURCE_IMPORT = "import"
"""A call read from a tool's own logs by `halton-meter import` (history from before the meter)."""

NANOS_PER_USD = 1_000_000_000


def nanos_to_usd(nanos: int | None) -> str | None:
    """Integer nano-dollars to a decimal string with nine places (exact; no float ever touches money)."""
    if nanos is None:
        return None
    return f"{Decimal(nanos).scaleb(-9):.9f}"


@dataclass(slots=True)
class CallRecord:
    id: str
    started_at: str
    """UTC, ISO 8601 with microseconds and a `Z`: sorts as text."""
    provider: str
    endpoint_kind: str
    host: str
    method: str
    path: str
    """Request path with credentials redacted by parameter name and by shape (docs/privacy.md)."""
    ended_at: str | None = None
    model: str | None = None
    model_requested: str | None = None
    streamed: bool = False
    status: int | None = None
    complete: bool = False
    billable: bool = False
    usage_reported: bool = False
    estimated: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int | None = None
    error_type: str | None = None
    incomplete_reason: str | None = None
    cost_nanos: int | None = None
    priced: bool = False
    price_source: str | None = None
    billing: str = BILLING_API
    """`api` (charged per token) or `subscription` (cost is the list-price equivalent, not a charge)."""
    project: str = "unattributed"
    project_source: str = "none"
    repo: str | None = None
    """Name of the git repository the client worked in (its root directory), when it worked in one."""
    branch: str | None = None
    """The checked-out git branch when the call was made (`detached@<sha>` for a detached HEAD)."""
    client: str | None = None
    """The tool family: claude-code, codex, gemini-cli, anthropic-sdk-python, curl, ..."""
    client_process: str | None = None
    user_agent: str | None = None
    key_fingerprint: str | None = None
    """A keyed, non-reversible fingerprint of the credential the call used (never the credential)."""
    cache_savings_nanos: int | None = None
    """What cache reads saved against the base input price (None when unpriced)."""
    latency_ms: float | None = None
    ttft_ms: float | None = None
    provider_request_id: str | None = None
    source: str = SOURCE_PROXY
    """`proxy` (metered on the wire) or `import` (read from a tool's logs by `halton-meter import`)."""
    extra: dict[str, Any] = field(default_factory=dict)
    price_provider_id: str | None = None
    """The provider id used to look up prices (not public: an implementation detail of pricing)."""
    capture: dict[str, Any] | None = None
    """Redacted bodies for projects that opted in to capture (stored apart, in `captures`); else None."""
    import_key: str | None = None
    """For imported calls, the call's key in its tool's logs (`claude-code:msg_…`), unique in the table, so an
    import run twice adds nothing (not public: an implementation detail of `halton-meter import`)."""
    session_id: str | None = None
    """The client's own session id, where it sends one (Claude Code: the `X-Claude-Code-Session-Id` header or
    the session part of `metadata.user_id`; Codex: its `session_id` header). Nothing else of the body is kept."""
    plan: list[dict[str, Any]] | None = None
    """Plan and rate-limit snapshots read from the response headers (`halton_meter.plans.snapshots`), written
    to `plan_snapshots` with the final row (not public: `halton-meter plan` reads them)."""

    @property
    def cost_usd(self) -> str | None:
        return nanos_to_usd(self.cost_nanos)

    @property
    def cache_savings_usd(self) -> str | None:
        return nanos_to_usd(self.cache_savings_nanos)

    def usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens,
            reasoning_tokens=self.reasoning_tokens,
        )

    def to_public(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PUBLIC_FIELDS}

    def replace(self, **changes: Any) -> CallRecord:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------------
# Attribution
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What is known about the process on the other end of a proxied connection."""

    pid: int | None = None
    process_name: str | None = None
    cwd: str | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    """Only the variables attributors ask for (HALTON_METER_*), never the whole environment."""
    user_agent: str | None = None
    proxy_project: str | None = None
    """The project named in the proxy URL's credentials (`halton-meter run --project`), which the edge strips
    and passes on."""
    tool: str | None = None
    """The tool family the process is (claude-code, codex, …), from its name and command line; the command
    line itself is never kept."""
    git: GitInfo | None = None
    """`GitInfo` (repository, branch) for the working directory, when it is inside a git work tree."""


@dataclass(frozen=True, slots=True)
class Attribution:
    project: str
    source: str
    """Which attributor answered, e.g. `env`, `cwd`."""


@dataclass(frozen=True)
class Attributor:
    """A project resolver. Attributors run in `requires` order (dependencies first); the first answer wins."""

    id: str
    resolve: Callable[[ClientInfo], Attribution | None]
    requires: tuple[str, ...] = ()
    description: str = ""


# --------------------------------------------------------------------------------------------------
# Doctor checks
# --------------------------------------------------------------------------------------------------

CheckStatus = Literal["ok", "warn", "fail", "skip", "error"]
"""`fail`: the check found a problem; `error`: the check itself crashed or timed out."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: CheckStatus
    summary: str
    fix: str | None = None
    """A copy-paste command or one sentence that repairs the problem (doctors never repair themselves)."""
    details: Mapping[str, Any] = field(default_factory=dict)


class PluginStatus(Protocol):
    """What the host knows about one loaded plugin (`halton-meter plugins` prints the same)."""

    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str:
        """`builtin` or `entry_point`."""
        ...

    @property
    def module(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def status(self) -> str:
        """`ok`, `error` or `disabled`."""
        ...

    @property
    def error(self) -> str | None: ...


@dataclass(frozen=True)
class CheckContext:
    """What a check may look at. Checks are read-only: they never repair (repairs go through `init`)."""

    paths: Paths
    config: PluginConfig | None
    """None when config.toml could not be loaded (`config_error` says why)."""
    config_error: str | None = None
    plugins: tuple[PluginStatus, ...] = ()
    """Every plugin (status, error)."""
    runner: CommandRunner | None = None
    """The command-runner seam, for checks that ask the OS."""
    installer: PlatformInstaller | None = None
    """The platform installer in use, or None when none answers."""
    state: SystemState | None = None
    """What `init` set up (mode, changes)."""
    platform: PlatformInfo | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    """The environment of the shell running `doctor`."""
    attributors: tuple[Attributor, ...] = ()
    """The project attributors, in order (to say which project calls from `cwd` would get)."""
    cwd: str | None = None
    """Where `doctor` runs."""
    sync_targets: tuple[SyncTarget, ...] = ()
    """The registered sync targets (to probe the configured ones)."""


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    run: Callable[[CheckContext], CheckResult]
    requires: tuple[str, ...] = ()
    """Checks whose result this one depends on; it is shown after them."""
    status_row: str | None = None
    """Set for the fast checks `halton-meter status` runs too, as its row id (`edge`, `core`, `writes`…):
    `status` is the compact view of these same checks, with the same thresholds. Such a check must answer
    in well under a second."""


# --------------------------------------------------------------------------------------------------
# Init steps, platform installers, sync targets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitStep:
    """One step of `halton-meter init`.

    `check(ctx)` is read-only and answers "is this already done?"; `apply(ctx)` is idempotent and makes
    every change through the context (`ctx.write_file`, `ctx.add_block`, `ctx.run`), which records it in
    `system_state.json`; `undo(ctx)` reverses it (the default reverses exactly the recorded changes).
    Steps run in topological order of `requires`.
    """

    id: str
    title: str
    check: Callable[[InitContext], bool]
    apply: Callable[[InitContext], None]
    undo: Callable[[InitContext], None] | None = None
    requires: tuple[str, ...] = ()
    modes: tuple[str, ...] = ("env", "apps", "full")
    """The init modes this step runs in; in other modes its recorded changes are undone (mode switch)."""


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    system: str
    """`linux`, `darwin` or `windows`."""
    has_systemd_user: bool = False
    """A systemd user manager answers (`systemctl --user`), so user units can be installed."""
    in_container: bool = False
    is_wsl: bool = False


@dataclass(frozen=True, slots=True)
class ServiceState:
    installed: bool
    running: bool
    detail: str
    """One line for `status` (e.g. `systemd user units active`, `pid 1234, up 3 min`)."""
    fix: str | None = None


class PlatformInstaller(Protocol):
    """Services, OS trust, environment and system proxy for one platform (`halton_platform_installer`).

    Every change goes through the init context so it is recorded and can be undone; every OS command goes
    through `ctx.runner` (the one command-runner seam, replaced by a recorder in tests).
    """

    id: str
    kind: str
    """`systemd`, `launchd`, `task-scheduler` or `builtin` (no service manager: a detached supervisor)."""
    supports_system_proxy: bool
    """Whether `init --full` can set the OS proxy here (checked before any step runs)."""

    def describe(self) -> str: ...

    def install_services(self, ctx: InitContext) -> None: ...

    def start(self, ctx: InitContext) -> None: ...

    def stop(self, ctx: InitContext) -> None: ...

    def service_state(self, ctx: InitContext) -> ServiceState: ...

    def trust_ca(self, ctx: InitContext) -> bool:
        """Add our CA to the per-user OS trust store; False when the platform has none (a skip, not a fail)."""
        ...

    def persist_env(self, ctx: InitContext, env: Mapping[str, str]) -> None:
        """Apps mode: make `env` visible to GUI apps started from now on (environment.d, launchctl, HKCU)."""
        ...

    def set_system_proxy(self, ctx: InitContext, port: int) -> None:
        """Full mode: point the OS proxy at the edge; raise UnsupportedOnPlatform where that is not offered."""
        ...


class SyncSink(Protocol):
    """An open connection to a sync target. `push` must store every row before returning (the engine then
    moves its cursor) or raise; it must upsert by `id`, keeping the row with the higher `version`, so a
    replay changes nothing. Rows are dicts: the call record's public fields after the target's privacy
    preset (costs as integer `cost_nanos` / `cache_savings_nanos`, `extra` as JSON text), plus `machine_id`, `user_label` and
    `version` (docs/sync.md)."""

    def push(self, rows: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SyncTarget:
    """Somewhere rows may be pushed to (a team Postgres, an OTLP collector). Off unless configured."""

    id: str
    title: str
    open: Callable[[Mapping[str, Any]], SyncSink]
    """Opens a sink from the target's config block (TOML values)."""
    probe: Callable[[Mapping[str, Any]], str] | None = None
    """For `doctor`: reach the target read-only and say what is there (`schema 1, current`); raise with one
    line when it cannot be reached or its schema is not current."""
    team_rows: Callable[[Mapping[str, Any], str, str, Sequence[str], Mapping[str, Sequence[str]]],
                        list[dict[str, Any]]] | None = None
    """For a target a team can query (`report --team`, `projects --team`): (config block, since, until — UTC
    ISO, `by` dimensions, filters: dimension → accepted values, as `report`'s filters: globs, `(none)`, key
    fingerprint prefixes) → one dict per group with the dimension values and `calls`, the four token sums,
    `cost_nanos` (billed per token), `subscription_cost_nanos` (list price of subscription calls), `users`
    and `machines` (distinct counts) and `last_seen` (UTC ISO)."""


# --------------------------------------------------------------------------------------------------
# The contexts plugins are handed: configuration, the command runner, the init context
# --------------------------------------------------------------------------------------------------


class PluginConfig(Protocol):
    """The validated configuration (`config.toml`) as plugins see it: read-only.

    A plugin reads its own `[plugins.NAME]` block with `plugin_config(NAME)` (TOML values: validate them
    and raise `ConfigError` with one line naming the key and the fix)."""

    @property
    def paths(self) -> Paths: ...

    @property
    def source(self) -> Path | None:
        """The config.toml that was read, or None when there is none (defaults)."""
        ...

    @property
    def edge_port(self) -> int:
        """The proxy port clients use (127.0.0.1)."""
        ...

    @property
    def api_port(self) -> int: ...

    @property
    def upstream_resolve(self) -> Sequence[ResolveRule]: ...

    @property
    def compatible(self) -> Sequence[CompatibleEndpoint]:
        """The `[[compatible]]` endpoints the user declared."""
        ...

    @property
    def project_rules(self) -> Sequence[ProjectRule]:
        """`[projects]` directory rules, in order."""
        ...

    def plugin_config(self, name: str) -> Mapping[str, Any]:
        """The `[plugins.NAME]` block (empty when absent)."""
        ...


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandRunner(Protocol):
    """The one seam through which OS commands run (replaced by a recorder in tests). With `check`, a
    non-zero exit raises `CommandFailed`."""

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0,
            input: str | None = None) -> CommandResult: ...

    def which(self, name: str) -> str | None: ...


class InitContext(Protocol):
    """What an init step and a platform installer work with. Every change to the machine goes through
    `write_file`, `add_block` or `run`, which record it for `uninstall` and rollback; `runner` is for
    commands that change nothing (queries)."""

    paths: Paths
    config: PluginConfig
    """Settable: a step that rewrites config.toml (the ports step) reloads it here for the steps after it."""
    options: InitOptions
    runner: CommandRunner
    installer: PlatformInstaller
    platform: PlatformInfo
    user_home: Path
    state: SystemState
    """What earlier runs recorded (`for_step`, `changes`, `mode`)."""
    notes: list[str]
    """Lines `init` prints under the step that added them."""

    @property
    def report(self) -> Callable[[str], None]:
        """Prints one progress line under the running step."""
        ...

    def write_file(self, path: Path, content: bytes | str, mode: int = 0o644) -> bool: ...

    def add_block(self, path: Path, body: str, comment: str = "#") -> bool: ...

    def run(self, argv: Sequence[str], undo: Sequence[Sequence[str]] = (), description: str = "",
            timeout: float = 60.0) -> CommandResult: ...

    def undo_change(self, change: Change, previous: bytes | None = None, existed: bool | None = None) -> None: ...



# --------------------------------------------------------------------------------------------------
# Importers (`halton-meter import`)
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ImportStats:
    """What an importer counts while it reads; `halton-meter import` reports it."""

    files: int = 0
    unreadable_files: int = 0
    """Files that could not be opened or read (permissions, vanished): named in `problems`."""
    unreadable_lines: int = 0
    """Lines that are not a JSON object, or usage lines that do not have the documented shape."""
    duplicates: int = 0
    """Log entries that repeat a call already read (a message streamed over several lines, history copied
    into a resumed or forked session, a usage event written twice)."""
    not_calls: int = 0
    """Entries that look like usage but are no API call (Claude Code's `<synthetic>` error messages)."""
    problems: list[str] = field(default_factory=list)
    """One line per unreadable file (at most 20)."""

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)


@dataclass(slots=True)
class ImportedCall:
    """One API call as a tool's own log recorded it: ids, model, tokens, times and where it ran. Never any
    prompt or response text."""

    key: str
    """Unique for this call across every log of the tool, stable across runs (`claude-code:msg_…`): the
    same call seen twice (in the logs, or in an earlier import) has the same key."""
    started_at: str
    """UTC, ISO 8601 with microseconds and a `Z`, as `CallRecord.started_at`."""
    usage: Usage
    """The four disjoint buckets of docs/concepts/tokens.md (module docstring)."""
    model: str | None = None
    ended_at: str | None = None
    cwd: str | None = None
    """The working directory the tool ran in (for attribution; not stored)."""
    branch: str | None = None
    """The git branch the tool recorded (`gitBranch`, `session_meta.git.branch`), when it did."""
    request_ids: tuple[str, ...] = ()
    """Ids the meter stores in `provider_request_id` for the same call (message id, request id): a call the
    meter already recorded is not imported again. Empty when the log has none (then tokens and time are
    compared)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Labels only (service tier, web searches), as a provider parser's `extra`."""


class Importer:
    """Base class for importers: reads the usage a tool keeps on disk, for `halton-meter import NAME`.

    Importers are read-only and never store text: they yield `ImportedCall`s; the host attributes, prices,
    de-duplicates against the database and writes them as rows with `source = import`. `read` must never
    raise on bad input: a line it cannot use is counted in `stats.unreadable_lines`, a file it cannot read
    in `stats.unreadable_files`.
    """

    id: str = ""
    """Registry id, e.g. `import.claude-code`."""
    name: str = ""
    """What `halton-meter import` takes and the rows' `client`, e.g. `claude-code`."""
    title: str = ""
    """For messages: `Claude Code`."""
    provider: str = ""
    """The rows' `provider` (the name the matching provider plugin gives live calls)."""
    subscription_provider: str | None = None
    """The rows' `provider` when the calls were covered by a subscription, if that differs (Codex signed in
    with ChatGPT goes to `codex`, with an API key to `openai`)."""
    endpoint_kind: str = ""
    price_provider_id: str | None = None
    billing: str = BILLING_API
    """How the tool's calls are paid for when nothing else says (the log never does)."""
    proxy_providers: tuple[str, ...] = ()
    """Providers under which the meter records this tool's live calls: where to look for a call the meter
    already recorded."""

    def default_locations(self, environ: Mapping[str, str], home: Path) -> list[Path]:
        """The directories the tool writes its logs to, most specific first (existing or not)."""
        raise NotImplementedError

    def files(self, location: Path) -> list[Path]:
        """The log files under `location` (a directory or one file), sorted."""
        raise NotImplementedError

    def read(self, files: Sequence[Path], stats: ImportStats) -> Iterator[ImportedCall]:
        """Every call in `files`, in order. A call may come more than once (the host keeps one per key: the
        one with the most output tokens, a later one on a tie, with the earliest start)."""
        raise NotImplementedError
