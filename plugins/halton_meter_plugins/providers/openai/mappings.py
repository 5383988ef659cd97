"""The endpoints OpenAI-compatible APIs serve and how their usage objects map to the four buckets (the
package docstring gives the mappings)."""

from __future__ import annotations

from typing import Any

from halton_meter.plugin import Endpoint, Usage, is_identifier
from halton_meter_plugins.providers._common import count, dig, optional_count

CHAT = Endpoint("chat.completions", billable=True)
COMPLETIONS = Endpoint("completions", billable=True)
RESPONSES = Endpoint("responses", billable=True)
RESPONSES_COMPACT = Endpoint("responses.compact", billable=True)
EMBEDDINGS = Endpoint("embeddings", billable=True)
INPUT_TOKENS = Endpoint("count_tokens", billable=False, inference=False)
OTHER = Endpoint("other", billable=False, inference=False)


def error_type(document: Any) -> str | None:
    """`error.code`, else `error.type`, whichever first is an identifier (some compatible servers put a
    sentence in `code`; sentences are never an error id); `error` when the body has an error object but
    names it with neither."""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # OpenRouter: {"error": {"code": 502, "message": ...}}
        if isinstance(value, str) and is_identifier(value):
            return value
    return "error"


def chat_usage(usage: dict[str, Any]) -> Usage:
    prompt = count(usage.get("prompt_tokens"))
    completion = count(usage.get("completion_tokens"))
    total = count(usage.get("total_tokens"))
    cached = min(count(dig(usage, "prompt_tokens_details", "cached_tokens")), prompt)
    return Usage(
        input_tokens=prompt - cached,
        output_tokens=max(completion, total - prompt),
        cache_read_tokens=cached,
        reasoning_tokens=optional_count(dig(usage, "completion_tokens_details", "reasoning_tokens")),
    )


def responses_usage(usage: dict[str, Any]) -> Usage:
    given = count(usage.get("input_tokens"))
    produced = count(usage.get("output_tokens"))
    total = count(usage.get("total_tokens"))
    cached = min(count(dig(usage, "input_tokens_details", "cached_tokens")), given)
    return Usage(
        input_tokens=given - cached,
        output_tokens=max(produced, total - given),
        cache_read_tokens=cached,
        reasoning_tokens=optional_count(dig(usage, "output_tokens_details", "reasoning_tokens")),
    )


def embeddings_usage(usage: dict[str, Any]) -> Usage:
    return Usage(input_tokens=count(usage.get("prompt_tokens")))
