"""xAI (`api.x.ai`, docs/providers/xai.md): Chat Completions and Responses, OpenAI-compatible under `/v1`.

On Chat Completions xAI reports reasoning *outside* `completion_tokens` (total = prompt + completion +
reasoning); the shared rule output = max(completion_tokens, total_tokens − prompt_tokens) bills it at the
output rate either way. Responses uses the same max() rule with input/output names.

xAI also returns what it charged: `usage.cost_in_usd_ticks` (1 USD = 1e10 ticks), kept in `extra` as the
ticks and as `reported_cost_usd` (exact decimal string), and `num_sources_used` (live-search sources,
billed per source). The record's own cost still comes from list prices, so the two can be compared.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from halton_meter.plugin import ParseOutcome, PluginConfig, Provider, hookimpl, is_identifier
from halton_meter_plugins.providers.openai import (
    ChatParser,
    OpenAICompatibleProvider,
    ResponsesParser,
    include_usage_mode,
)

TICKS_PER_USD_EXPONENT = 10

# xAI's own error bodies are `{"code": "<gRPC status description>", "error": "<message>"}`; the
# description is a sentence, so name it by its gRPC status instead. These are the canonical descriptions of
# the 16 gRPC status codes (as the tonic gRPC library words them). A description not in the table is not
# stored at all, not even as a slug: the record gets `http_<status>`.
_GRPC_STATUS = {
    "the operation was cancelled": "cancelled",
    "unknown error": "unknown",
    "client specified an invalid argument": "invalid_argument",
    "deadline expired before operation could complete": "deadline_exceeded",
    "some requested entity was not found": "not_found",
    "some entity that we attempted to create already exists": "already_exists",
    "the caller does not have permission to execute the specified operation": "permission_denied",
    "some resource has been exhausted": "resource_exhausted",
    "the system is not in a state required for the operation's execution": "failed_precondition",
    "the operation was aborted": "aborted",
    "operation was attempted past the valid range": "out_of_range",
    "operation is not implemented or not supported": "unimplemented",
    "internal error": "internal",
    "the service is currently unavailable": "unavailable",
    "unrecoverable data loss or corruption": "data_loss",
    "the request does not have valid authentication credentials": "unauthenticated",
}


def xai_error_type(document: Any) -> str | None:
    """For xAI's `{"code": str, "error": str}` bodies (OpenAI-shaped ones go through `error_type`): the
    gRPC status named by the description, or the code itself when it already is an identifier
    (`invalid_argument`); None for any other text."""
    if not isinstance(document, dict) or isinstance(document.get("error"), dict):
        return None
    code = document.get("code")
    if not isinstance(code, str) or not code.strip():
        return None
    text = code.strip().rstrip(".").lower()
    if text in _GRPC_STATUS:
        return _GRPC_STATUS[text]
    return code.strip() if is_identifier(code.strip()) else None


def keep_reported_cost(outcome: ParseOutcome, *sources: Any) -> None:
    """Copy xAI's billing facts from the first source (usage object, then the body) that has them."""
    for key in ("cost_in_usd_ticks", "num_sources_used"):
        for source in sources:
            value = source.get(key) if isinstance(source, dict) else None
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                outcome.extra[key] = value
                if key == "cost_in_usd_ticks":
                    outcome.extra["reported_cost_usd"] = f"{Decimal(value).scaleb(-TICKS_PER_USD_EXPONENT):f}"
                break


class XAIChatParser(ChatParser):
    def _usage(self, usage: dict[str, Any]) -> None:
        super()._usage(usage)
        keep_reported_cost(self.outcome, usage)

    def on_document(self, document: Any) -> None:
        super().on_document(document)
        if self.outcome.error_type is None and self.status >= 400:
            self.outcome.error_type = xai_error_type(document)


class XAIResponsesParser(ResponsesParser):
    def on_usage(self, usage: dict[str, Any]) -> None:
        keep_reported_cost(self.outcome, usage)

    def on_error_document(self, document: dict[str, Any]) -> None:
        if self.outcome.error_type is None:
            self.outcome.error_type = xai_error_type(document)


class XAIProvider(OpenAICompatibleProvider):
    chat_parser_class = XAIChatParser
    responses_parser_class = XAIResponsesParser

    def __init__(self, include_usage: str = "inject") -> None:
        super().__init__(id="provider.xai", name="xai", hosts=("api.x.ai",), price_provider_id="x-ai",
                         include_usage=include_usage)


@hookimpl
def halton_register_providers(register: Callable[[Provider], None], config: PluginConfig | None) -> None:
    register(XAIProvider(include_usage=include_usage_mode(config)))
