"""DeepSeek (`api.deepseek.com`, OpenAI-compatible at `/chat/completions` and `/v1/chat/completions`).

Mapping (docs/providers/deepseek.md and docs/concepts/tokens.md): input = prompt_cache_miss_tokens, cache_read =
prompt_cache_hit_tokens (hits are billed far lower; writes are free), output = completion_tokens, reasoning
= completion_tokens_details.reasoning_tokens (deepseek-reasoner). When the hit/miss pair is absent the
OpenAI fields stand in: cache_read = prompt_tokens_details.cached_tokens, input = prompt − cached.

Under load DeepSeek holds the connection open with `: keep-alive` SSE comments or bare blank lines before
a JSON body; the shared SSE decoder skips comments and the JSON reader skips leading whitespace.
Streams report usage only with `stream_options.include_usage`, so the OpenAI-compatible base's usage
request applies here unchanged.
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
    Usage,
    hookimpl,
)
from halton_meter_plugins.providers._common import USAGE_NOT_READ, UnparsedParser, count, dig, optional_count
from halton_meter_plugins.providers.openai import (
    ChatParser,
    OpenAICompatibleProvider,
    chat_usage,
    error_type,
    include_usage_mode,
)

FIM = Endpoint("completions", billable=True)
"""`/beta/completions`: fill-in-the-middle, the legacy completions shape with the same usage object."""
_CHAT_PATHS = frozenset({"/chat/completions", "/v1/chat/completions", "/beta/chat/completions"})
_FIM_PATHS = frozenset({"/beta/completions"})
# The Anthropic-format endpoint (Claude Code pointed at DeepSeek): paid, usage not parsed here yet.
_BILLABLE_UNPARSED = frozenset({"/anthropic/v1/messages"})


def deepseek_usage(usage: dict[str, Any]) -> Usage:
    hit = optional_count(usage.get("prompt_cache_hit_tokens"))
    miss = optional_count(usage.get("prompt_cache_miss_tokens"))
    if hit is None and miss is None:
        return chat_usage(usage)
    prompt = optional_count(usage.get("prompt_tokens"))
    if prompt is None:
        prompt = (hit or 0) + (miss or 0)
    if hit is None:
        hit = max(prompt - (miss or 0), 0)
    if miss is None:
        miss = max(prompt - hit, 0)
    completion = count(usage.get("completion_tokens"))
    total = count(usage.get("total_tokens"))
    return Usage(
        input_tokens=miss,
        cache_read_tokens=hit,
        output_tokens=max(completion, total - prompt),
        reasoning_tokens=optional_count(dig(usage, "completion_tokens_details", "reasoning_tokens")),
    )


class DeepSeekChatParser(ChatParser):
    def usage_from(self, usage: dict[str, Any]) -> Usage:
        return deepseek_usage(usage)


class DeepSeekProvider(OpenAICompatibleProvider):
    def __init__(self, include_usage: str = "inject") -> None:
        super().__init__(id="provider.deepseek", name="deepseek", hosts=("api.deepseek.com",),
                         price_provider_id="deepseek", path_prefix="/v1", include_usage=include_usage)

    def route(self, method: str, path: str) -> Endpoint | None:
        clean = path.rstrip("/")
        if method == "POST" and clean in _CHAT_PATHS:
            # The base's own chat endpoint, so its include_usage handling applies to every spelling.
            return super().route(method, f"{self.path_prefix}/chat/completions")
        if method == "POST" and clean in _FIM_PATHS:
            return FIM
        if method == "POST" and clean in _BILLABLE_UNPARSED:
            return USAGE_NOT_READ
        return super().route(method, path)

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint.kind == "chat.completions" or endpoint is FIM:
            return DeepSeekChatParser(endpoint, request, status, content_type)
        if endpoint is USAGE_NOT_READ:
            return UnparsedParser(endpoint, request, status, content_type, error_type_of=error_type)
        return super().response_parser(endpoint, request, status, content_type)


@hookimpl
def halton_register_providers(register: Callable[[Provider], None], config: PluginConfig | None) -> None:
    register(DeepSeekProvider(include_usage=include_usage_mode(config)))
