"""OpenRouter (`openrouter.ai`, OpenAI-compatible under `/api/v1`), JSON and SSE.

Mapping (docs/providers/openrouter.md and docs/concepts/tokens.md): prompt_tokens includes both cache reads and cache
writes, so input = prompt_tokens − cached_tokens − cache_write_tokens, cache_read = cached_tokens,
cache_write = prompt_tokens_details.cache_write_tokens (Anthropic and Gemini models through OpenRouter),
output and reasoning as OpenAI. Usage is always included (the request options are no-ops), in the last
data event before `[DONE]`.

`usage.cost` is what OpenRouter actually charged in credits; it is kept exactly, as a decimal string, in
`extra["reported_cost_usd"]`, beside `is_byok` (the upstream bill then goes to the user's own key:
`cost_details.upstream_inference_cost`) and the upstream `provider` that served the call. Models are
`vendor/model`; genai-prices prices them under its `openrouter` provider.

While a request waits OpenRouter sends `: OPENROUTER PROCESSING` SSE comments (skipped by the decoder);
a failure after the stream started is a data event with an `error` object (and `finish_reason: "error"`).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from halton_meter.plugin import (
    Endpoint,
    PluginConfig,
    Provider,
    RequestFacts,
    ResponseParser,
    Usage,
    hookimpl,
)
from halton_meter_plugins.providers._common import (
    USAGE_NOT_READ,
    NoUsageParser,
    UnparsedParser,
    count,
    dig,
    optional_count,
)
from halton_meter_plugins.providers.openai import (
    ChatParser,
    OpenAICompatibleProvider,
    error_type,
    include_usage_mode,
)

PREFIX = "/api/v1"
CHAT = Endpoint("chat.completions", billable=True)
COMPLETIONS = Endpoint("completions", billable=True)
OTHER = Endpoint("other", billable=False, inference=False)
_ROUTES = {
    f"{PREFIX}/chat/completions": CHAT,
    f"{PREFIX}/completions": COMPLETIONS,
    # Responses and Anthropic Messages formats: paid, usage in other shapes, not parsed yet.
    f"{PREFIX}/responses": USAGE_NOT_READ,
    f"{PREFIX}/messages": USAGE_NOT_READ,
}


def openrouter_usage(usage: dict[str, Any]) -> Usage:
    prompt = count(usage.get("prompt_tokens"))
    completion = count(usage.get("completion_tokens"))
    total = count(usage.get("total_tokens"))
    cached = min(count(dig(usage, "prompt_tokens_details", "cached_tokens")), prompt)
    written = min(count(dig(usage, "prompt_tokens_details", "cache_write_tokens")), prompt - cached)
    return Usage(
        input_tokens=prompt - cached - written,
        cache_read_tokens=cached,
        cache_write_tokens=written,
        output_tokens=max(completion, total - prompt),
        reasoning_tokens=optional_count(dig(usage, "completion_tokens_details", "reasoning_tokens")),
    )


def usd_text(value: Any) -> str | None:
    """A JSON number as a plain decimal string. Floats go through their shortest repr, which is the
    literal OpenRouter wrote for any value that survived its own float formatting."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        return None
    if not amount.is_finite():
        return None
    return format(amount, "f")


class OpenRouterChatParser(ChatParser):
    def on_chunk(self, chunk: dict[str, Any]) -> None:
        super().on_chunk(chunk)
        self._billing_facts(chunk)

    def on_document(self, document: Any) -> None:
        super().on_document(document)
        if isinstance(document, dict) and self.outcome.error_type is None:
            self._billing_facts(document)

    def usage_from(self, usage: dict[str, Any]) -> Usage:
        return openrouter_usage(usage)

    def _billing_facts(self, chunk: dict[str, Any]) -> None:
        extra = self.outcome.extra
        if isinstance(chunk.get("provider"), str):
            extra["upstream_provider"] = chunk["provider"]
        usage = self.usage_in(chunk)
        if usage is None:
            return
        # Like the token counts, the cost in the latest usage object is the call's total.
        for key in ("reported_cost_usd", "is_byok", "upstream_inference_cost_usd"):
            extra.pop(key, None)
        cost = usd_text(usage.get("cost"))
        if cost is not None:
            extra["reported_cost_usd"] = cost
        if isinstance(usage.get("is_byok"), bool):
            extra["is_byok"] = usage["is_byok"]
        upstream = usd_text(dig(usage, "cost_details", "upstream_inference_cost"))
        if upstream is not None:
            extra["upstream_inference_cost_usd"] = upstream


class OpenRouterProvider(OpenAICompatibleProvider):
    # OpenRouter always reports usage, so the client's request is forwarded as sent.
    inject_usage = False
    reports_stream_usage = True

    def __init__(self, include_usage: str = "inject") -> None:
        super().__init__(id="provider.openrouter", name="openrouter", hosts=("openrouter.ai",),
                         price_provider_id="openrouter", path_prefix=PREFIX,
                         include_usage=include_usage)

    def route(self, method: str, path: str) -> Endpoint | None:
        if method != "POST":
            return OTHER
        return _ROUTES.get(path.rstrip("/"), OTHER)

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint in (CHAT, COMPLETIONS):
            return OpenRouterChatParser(endpoint, request, status, content_type)
        if endpoint is USAGE_NOT_READ:
            return UnparsedParser(endpoint, request, status, content_type, error_type_of=error_type)
        return NoUsageParser(endpoint, request, status, content_type, error_type_of=error_type)


@hookimpl
def halton_register_providers(register: Callable[[Provider], None], config: PluginConfig | None) -> None:
    register(OpenRouterProvider(include_usage=include_usage_mode(config)))

