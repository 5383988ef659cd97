"""Codex's session logs ("rollouts"): `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl` and, once
archived, `$CODEX_HOME/archived_sessions/` (`CODEX_HOME` defaults to `~/.codex`).

Each line is `{"timestamp", "type", "payload"}`. `session_meta` opens a file (`id`, `cwd`, `git.branch`);
`turn_context` names the `model` (and `cwd`) of the turns that follow; an `event_msg` whose payload is
`token_count` carries `info.total_token_usage` (the session's running totals) and `info.last_token_usage`
(the latest model call), each `input_tokens` (cached included), `cached_input_tokens`, `output_tokens`
(reasoning included), `reasoning_output_tokens` and `total_tokens`. `info` is null on events that only
update rate limits.

Codex writes a `token_count` event again with unchanged running totals (a refresh, not a call), and a forked
session replays its parent's events into its own file: an event whose totals did not move is a duplicate,
and a call's key is its running totals with its own usage, which a replayed copy shares. Without running
totals (old logs) an event is keyed by session and time and counted as it comes.

Nothing else of a line is read: no prompt, instruction or output text, ever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from halton_meter.plugin import (
    BILLING_SUBSCRIPTION,
    ImportedCall,
    Importer,
    ImportStats,
    Usage,
    hookimpl,
    is_label,
)
from halton_meter_plugins.importers._jsonl import dig, jsonl_files, lines, text, timestamp, tokens

SUBDIRS = ("sessions", "archived_sessions")
Counts = tuple[int, int, int, int, int]
"""input (cached included), cached input, output (reasoning included), reasoning, total."""


class CodexImporter(Importer):
    id = "import.codex"
    name = "codex"
    title = "Codex"
    provider = "openai"
    subscription_provider = "codex"
    endpoint_kind = "responses"
    price_provider_id = "openai"
    billing = BILLING_SUBSCRIPTION
    proxy_providers = ("codex", "openai")

    def default_locations(self, environ: Mapping[str, str], home: Path) -> list[Path]:
        configured = environ.get("CODEX_HOME", "").strip()
        root = Path(configured).expanduser() if configured else home / ".codex"
        return [root / sub for sub in SUBDIRS]

    def files(self, location: Path) -> list[Path]:
        if any((location / sub).is_dir() for sub in SUBDIRS):  # --path ~/.codex
            return [f for sub in SUBDIRS if (location / sub).is_dir() for f in jsonl_files(location / sub)]
        return jsonl_files(location)

    def read(self, files: Sequence[Path], stats: ImportStats) -> Iterator[ImportedCall]:
        for path in files:
            yield from _read_file(path, stats)


def _read_file(path: Path, stats: ImportStats) -> Iterator[ImportedCall]:
    session: str | None = None
    cwd: str | None = None
    branch: str | None = None
    model: str | None = None
    model_provider: str | None = None
    previous: Counts | None = None
    for entry in lines(path, stats, (b'"token_count"', b'"turn_context"', b'"session_meta"')):
        kind, payload = entry.get("type"), entry.get("payload")
        if not isinstance(payload, dict):
            continue
        if kind == "session_meta":
            session = text(payload.get("id"), 200) or session
            cwd = text(payload.get("cwd")) or cwd
            branch = text(dig(payload, "git", "branch"), 255) or branch
            provider = payload.get("model_provider")
            model_provider = provider if isinstance(provider, str) and is_label(provider) else model_provider
            continue
        if kind == "turn_context":
            model = text(payload.get("model"), 200) or model
            cwd = text(payload.get("cwd")) or cwd
            continue
        if kind != "event_msg" or payload.get("type") != "token_count":
            continue
        info = payload.get("info")
        if info is None:
            continue  # a rate-limit update: no usage
        at = timestamp(entry.get("timestamp"))
        total = _counts(dig(info, "total_token_usage"))
        last = _counts(dig(info, "last_token_usage"))
        if at is None or not isinstance(info, dict) or (total is None and last is None):
            stats.unreadable_lines += 1
            continue
        if total is not None and total == previous:
            stats.duplicates += 1  # running totals did not move: the same call written again
            continue
        delta: Counts
        if last is not None:
            delta = last
        elif total is not None and previous is not None and all(t >= p for t, p in zip(total, previous, strict=True)):
            delta = _minus(total, previous)  # only running totals: the call is what they grew by
        elif total is not None:
            delta = total  # the first event of a file, or totals that went back (a compaction): start afresh
        else:
            continue
        previous = total if total is not None else previous
        if not any(delta):
            continue
        if total is not None:
            key = f"codex:{_join(total)}:{_join(delta)}"
        else:
            key = f"codex:{session or path.stem}:{at}:{_join(delta)}"
        event_model = text(info.get("model"), 200) or text(info.get("model_name"), 200)
        yield ImportedCall(
            key=key,
            started_at=at,
            ended_at=at,
            usage=_usage(delta),
            model=event_model or model,
            cwd=cwd,
            branch=branch,
            extra={"model_provider": model_provider} if model_provider and model_provider != "openai" else {},
        )


def _counts(value: Any) -> Counts | None:
    if not isinstance(value, dict):
        return None
    given, output = tokens(value.get("input_tokens")), tokens(value.get("output_tokens"))
    if given is None or output is None:
        return None
    cached = tokens(value.get("cached_input_tokens", value.get("cache_read_input_tokens", 0))) or 0
    reasoning = tokens(value.get("reasoning_output_tokens", 0)) or 0
    total = tokens(value.get("total_tokens"))
    return given, cached, output, reasoning, total if total is not None else given + output


def _usage(counts: Counts) -> Usage:
    """The token convention, as the live Responses parser maps it: cached input is its own bucket, and
    output is at least what the total leaves after the input (reasoning stays a part of it)."""
    given, cached, output, reasoning, total = counts
    cached = min(cached, given)
    return Usage(input_tokens=given - cached, cache_read_tokens=cached, output_tokens=max(output, total - given),
                 reasoning_tokens=reasoning)


def _minus(a: Counts, b: Counts) -> Counts:
    return a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4]


def _join(counts: Counts) -> str:
    return ".".join(str(c) for c in counts)


@hookimpl
def halton_register_importers(register: Callable[[Importer], None]) -> None:
    register(CodexImporter())
