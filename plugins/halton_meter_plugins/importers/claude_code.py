"""Claude Code's session logs: one JSON Lines file per session under `<config>/projects/<encoded cwd>/`
(sub-agents in `<session>/subagents/`), where `<config>` is each entry of `CLAUDE_CONFIG_DIR`
(comma-separated), else `$XDG_CONFIG_HOME/claude` (default `~/.config/claude`) and `~/.claude`.

A call is an `"type": "assistant"` line whose `message` has `id`, `model` and `usage` (`input_tokens`,
`output_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens` with its
`cache_creation.ephemeral_5m/1h_input_tokens` split, `service_tier`, `server_tool_use`), beside `requestId`,
`timestamp`, `cwd`, `gitBranch` and `sessionId`. Claude Code writes one line per content block of a
response, all with the same message id, and a resumed session copies earlier lines into its new file: a
message id is one call, whose final accounting is the line with the most output tokens (earlier lines can
carry a partial count). `<synthetic>` messages (Claude Code's own error notices) are no API call.

Nothing else of a line is read: no message content, ever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from halton_meter.plugin import BILLING_API, ImportedCall, Importer, ImportStats, Usage, hookimpl, is_label
from halton_meter_plugins.importers._jsonl import dig, jsonl_files, lines, text, timestamp, tokens

SYNTHETIC_MODEL = "<synthetic>"


class ClaudeCodeImporter(Importer):
    id = "import.claude-code"
    name = "claude-code"
    title = "Claude Code"
    provider = "anthropic"
    endpoint_kind = "messages"
    price_provider_id = "anthropic"
    billing = BILLING_API
    proxy_providers = ("anthropic",)

    def default_locations(self, environ: Mapping[str, str], home: Path) -> list[Path]:
        configured = [p.strip() for p in environ.get("CLAUDE_CONFIG_DIR", "").split(",") if p.strip()]
        if configured:
            return [Path(p).expanduser() / "projects" for p in configured]
        xdg = environ.get("XDG_CONFIG_HOME", "").strip()
        config = Path(xdg).expanduser() if xdg else home / ".config"
        return [config / "claude" / "projects", home / ".claude" / "projects"]

    def files(self, location: Path) -> list[Path]:
        if (location / "projects").is_dir():  # --path ~/.claude: the projects below it
            location = location / "projects"
        return jsonl_files(location)

    def read(self, files: Sequence[Path], stats: ImportStats) -> Iterator[ImportedCall]:
        for path in files:
            for entry in lines(path, stats, (b'"usage"',)):
                if entry.get("type") != "assistant" or not isinstance(entry.get("message"), dict):
                    continue
                message = entry["message"]
                if "usage" not in message:
                    continue
                if message.get("model") == SYNTHETIC_MODEL or entry.get("isApiErrorMessage") is True:
                    stats.not_calls += 1
                    continue
                call = _call(entry, message)
                if call is None:
                    stats.unreadable_lines += 1
                    continue
                yield call


def _call(entry: dict[str, Any], message: dict[str, Any]) -> ImportedCall | None:
    """The call one assistant line describes, or None when the line lacks the documented shape."""
    usage = message.get("usage")
    started_at = timestamp(entry.get("timestamp"))
    if not isinstance(usage, dict) or started_at is None:
        return None
    input_tokens, output_tokens = tokens(usage.get("input_tokens")), tokens(usage.get("output_tokens"))
    cache_read = tokens(usage.get("cache_read_input_tokens", 0))
    five_minutes = tokens(dig(usage, "cache_creation", "ephemeral_5m_input_tokens") or 0)
    one_hour = tokens(dig(usage, "cache_creation", "ephemeral_1h_input_tokens") or 0)
    raw_write = usage.get("cache_creation_input_tokens")
    cache_write = tokens(raw_write) if raw_write is not None else (
        None if five_minutes is None or one_hour is None else five_minutes + one_hour)
    if input_tokens is None or output_tokens is None or cache_read is None or cache_write is None \
            or one_hour is None:
        return None
    message_id, request_id = text(message.get("id"), 200), text(entry.get("requestId"), 200)
    line_id = message_id or (f"req:{request_id}" if request_id else None) or (
        f"line:{entry['uuid']}" if text(entry.get("uuid"), 200) else None)
    if line_id is None:
        return None
    extra: dict[str, Any] = {}
    for key in ("service_tier", "speed"):
        if isinstance(usage.get(key), str) and is_label(usage[key]):
            extra[key] = usage[key]
    for key in ("web_search_requests", "web_fetch_requests"):
        count = tokens(dig(usage, "server_tool_use", key))
        if count:
            extra[key] = count
    return ImportedCall(
        key=f"claude-code:{line_id}",
        started_at=started_at,
        ended_at=started_at,
        usage=Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            cache_write_1h_tokens=min(one_hour, cache_write),
            reasoning_tokens=tokens(dig(usage, "output_tokens_details", "thinking_tokens")),
        ),
        model=text(message.get("model"), 200),
        cwd=text(entry.get("cwd")),
        branch=text(entry.get("gitBranch"), 255),
        request_ids=tuple(i for i in (message_id, request_id) if i),
        extra=extra,
    )


@hookimpl
def halton_register_importers(register: Callable[[Importer], None]) -> None:
    register(ClaudeCodeImporter())
