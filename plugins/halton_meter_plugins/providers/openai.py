"""OpenAI Chat Completions (`api.openai.com`), JSON and SSE, and the OpenAI-compatible family.

Mapping (PROVIDERS.md, token convention): input = prompt_tokens − cached_tokens; cache_read = cached_tokens;
output = max(completion_tokens, total_tokens − prompt_tokens) (xAI reports reasoning outside
completion_tokens; for OpenAI itself this is completion_tokens); reasoning is a subset of output.
In streams the usage chunk (empty `choices`, or attached to the finish chunk by some vendors) carries
totals: the last one seen wins, none is ever added to another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from halton_meter import hookimpl
from halton_meter.types import Endpoint, RequestFacts, ResponseParser, Usage
from halton_meter.wire import SSEEvent, loads_or_none
from halton_meter_plugins.providers._common import (
    BodyParser,
    NoUsageParser,
    Provider,
    count,
    dig,
    json_request_facts,
    optional_count,
)

CHAT = Endpoint("chat.completions", billable=True)
OTHER = Endpoint("other", billable=False, inference=False)


def error_type(document: Any) -> str | None:
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # OpenRouter: {"error": {"code": 502, "message": ...}}
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


class ChatParser(BodyParser):
    """Chat Completions, JSON and SSE. Vendors with their own usage fields subclass and override
    `usage_from` (how a usage object maps to buckets) and `usage_in` (where a chunk carries usage)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.finish_seen = False

    def usage_from(self, usage: dict[str, Any]) -> Usage:
        return chat_usage(usage)

    def usage_in(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        usage = chunk.get("usage")
        return usage if isinstance(usage, dict) else None

    def on_event(self, event: SSEEvent) -> None:
        if event.data.strip() == "[DONE]":
            self.outcome.complete = self.outcome.incomplete_reason is None
            return
        chunk = loads_or_none(event.data)
        if not isinstance(chunk, dict):
            return
        if "error" in chunk and isinstance(chunk["error"], dict):
            self.outcome.error_type = error_type(chunk)
            self.outcome.incomplete_reason = "stream_error"
            return
        self.on_chunk(chunk)

    def on_chunk(self, chunk: dict[str, Any]) -> None:
        """One parsed stream chunk (not an error, not [DONE])."""
        self._head(chunk)
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finish_seen = True
        usage = self.usage_in(chunk)
        if usage is not None:
            self._usage(usage)

    def on_document(self, document: Any) -> None:
        if not isinstance(document, dict):
            return
        if self.status >= 400 or ("error" in document and "choices" not in document):
            self.outcome.error_type = error_type(document)
            return
        self._head(document)
        usage = self.usage_in(document)
        if usage is not None:
            self._usage(usage)

    def _head(self, chunk: dict[str, Any]) -> None:
        if self.outcome.model is None and isinstance(chunk.get("model"), str):
            self.outcome.model = chunk["model"]
        if self.outcome.provider_request_id is None and isinstance(chunk.get("id"), str):
            self.outcome.provider_request_id = chunk["id"]
        if isinstance(chunk.get("service_tier"), str):
            self.outcome.extra["service_tier"] = chunk["service_tier"]

    def _usage(self, usage: dict[str, Any]) -> None:
        # Cumulative: a later usage object replaces an earlier one, it is never added to it.
        self.outcome.usage = self.usage_from(usage)
        self.outcome.usage_reported = True


class OpenAICompatibleProvider(Provider):
    """Any host speaking OpenAI Chat Completions under `path_prefix` (default `/v1`).

    Third-party plugins (and, later, user-declared endpoints) instantiate this with their own id, name
    and hosts; see `contrib/halton-meter-provider-example`.
    """

    def __init__(
        self,
        id: str = "provider.openai",
        name: str = "openai",
        hosts: tuple[str, ...] = ("api.openai.com",),
        price_provider_id: str | None = "openai",
        path_prefix: str = "/v1",
    ) -> None:
        self.id, self.name, self.hosts = id, name, hosts
        self.price_provider_id = price_provider_id
        self.path_prefix = path_prefix.rstrip("/")

    def route(self, method: str, path: str) -> Endpoint | None:
        if method == "POST" and path.rstrip("/") == f"{self.path_prefix}/chat/completions":
            return CHAT
        return OTHER

    def inspect_request(
        self, endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RequestFacts:
        return json_request_facts(body)

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint is CHAT:
            return ChatParser(endpoint, request, status, content_type)
        return NoUsageParser(endpoint, request, status, content_type, error_type_of=error_type)


@hookimpl
def halton_register_providers(register: Any) -> None:
    register(OpenAICompatibleProvider())
