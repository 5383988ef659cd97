"""Groq (`api.groq.com`, OpenAI-compatible under `/openai/v1`), JSON and SSE.

Mapping as OpenAI Chat (docs/providers/groq.md and docs/concepts/tokens.md): input = prompt_tokens − cached_tokens,
cache_read = cached_tokens (implicit caching, no write charge), output = completion_tokens.

Streams carry usage in `x_groq.usage` on the final chunk (the one with `finish_reason`) whether or not the
client asked for `stream_options.include_usage`; with the option a standard empty-choices usage chunk may
follow with the same numbers. Both are running totals, so the last one seen replaces the first and the call
is counted once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from halton_meter.plugin import (
    Endpoint,
    PluginConfig,
    Provider,
    RequestFacts,
    ResponseParser,
    hookimpl,
    is_identifier,
)
from halton_meter_plugins.providers._common import USAGE_NOT_READ, UnparsedParser, dig
from halton_meter_plugins.providers.openai import (
    ChatParser,
    OpenAICompatibleProvider,
    chat_usage,
    error_type,
    include_usage_mode,
)

PREFIX = "/openai/v1"
_BILLABLE_UNPARSED = frozenset(
    f"{PREFIX}{p}" for p in ("/responses", "/audio/transcriptions", "/audio/translations", "/audio/speech")
)


class GroqChatParser(ChatParser):
    def usage_in(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            return usage
        usage = dig(chunk, "x_groq", "usage")
        return usage if isinstance(usage, dict) else None

    def on_chunk(self, chunk: dict[str, Any]) -> None:
        super().on_chunk(chunk)
        x_groq = chunk.get("x_groq")
        if not isinstance(x_groq, dict):
            return
        self._breakdown(x_groq.get("usage_breakdown"))
        error = x_groq.get("error")
        if isinstance(error, str) and error:
            # Often a free-text reason for an early stop: kept as the id only when it is one, and never
            # stored as text (it is the provider's sentence, and may quote the request).
            self.outcome.error_type = error if is_identifier(error) else "stream_error"
            self.outcome.incomplete_reason = "stream_error"

    def on_document(self, document: Any) -> None:
        super().on_document(document)
        if isinstance(document, dict) and self.outcome.error_type is None:
            self._breakdown(document.get("usage_breakdown"))

    def _breakdown(self, breakdown: Any) -> None:
        # Compound systems run several models; the top-level usage is their total, and each model has its
        # own price, so keep the split for whoever prices it per model.
        models = dig(breakdown, "models")
        if not isinstance(models, list):
            return
        split = []
        for item in models[:16]:
            if isinstance(item, dict) and isinstance(item.get("usage"), dict):
                usage = chat_usage(item["usage"])
                split.append({"model": item.get("model") if isinstance(item.get("model"), str) else None,
                              "input_tokens": usage.input_tokens, "cache_read_tokens": usage.cache_read_tokens,
                              "output_tokens": usage.output_tokens})
        if split:
            self.outcome.extra["usage_breakdown"] = split


class GroqProvider(OpenAICompatibleProvider):
    # `x_groq.usage` arrives on the final chunk without include_usage, so there is nothing to ask for:
    # the client's request and stream stay byte for byte what it sent and what Groq answered.
    inject_usage = False
    reports_stream_usage = True

    def __init__(self, include_usage: str = "inject") -> None:
        super().__init__(id="provider.groq", name="groq", hosts=("api.groq.com",), price_provider_id="groq",
                         path_prefix=PREFIX, include_usage=include_usage)

    def route(self, method: str, path: str) -> Endpoint | None:
        endpoint = super().route(method, path)
        unparsed = method == "POST" and path.rstrip("/") in _BILLABLE_UNPARSED
        if unparsed and (endpoint is None or not endpoint.billable):
            return USAGE_NOT_READ
        return endpoint

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint.kind == "chat.completions":
            return GroqChatParser(endpoint, request, status, content_type)
        if endpoint is USAGE_NOT_READ:
            return UnparsedParser(endpoint, request, status, content_type, error_type_of=error_type)
        return super().response_parser(endpoint, request, status, content_type)


@hookimpl
def halton_register_providers(register: Callable[[Provider], None], config: PluginConfig | None) -> None:
    register(GroqProvider(include_usage=include_usage_mode(config)))
