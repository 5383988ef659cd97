"""Anthropic Messages API (`api.anthropic.com`), JSON and SSE.

Usage semantics (docs/providers/anthropic.md): `message_start.message.usage` first, then every field that
`message_delta.usage` carries overrides it (cumulative values, never summed). The 1-hour cache-write split
exists only in `message_start`. `count_tokens` answers are not usage; batch calls are not live calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from halton_meter.plugin import (
    BILLING_SUBSCRIPTION,
    Endpoint,
    ParseOutcome,
    Provider,
    RequestFacts,
    ResponseParser,
    SSEEvent,
    Usage,
    hookimpl,
    loads_or_none,
)
from halton_meter_plugins.providers._common import (
    BodyParser,
    NoUsageParser,
    count,
    dig,
    json_request_facts,
    optional_count,
)

MESSAGES = Endpoint("messages", billable=True)
COUNT_TOKENS = Endpoint("count_tokens", billable=False, inference=False)
BATCHES = Endpoint("batches", billable=False, inference=False)
BATCH_RESULTS = Endpoint("batches.results", billable=False, inference=False)
OTHER = Endpoint("other", billable=False, inference=False)

_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def error_type(document: Any) -> str | None:
    kind = dig(document, "error", "type")
    return kind if isinstance(kind, str) else None


class MessagesParser(BodyParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._raw: dict[str, Any] = {}
        self._cache_1h = 0
        self._thinking: int | None = None
        self._web_search = 0
        self._saw_delta = False

    # ---- streams ---------------------------------------------------------------------------------

    def on_event(self, event: SSEEvent) -> None:
        data = self.read_json(event.data)
        if not isinstance(data, dict):
            return
        kind = data.get("type") or event.event
        if kind == "message_start":
            message = data.get("message") or {}
            self._message_head(message)
            self._merge_usage(message.get("usage"), first=True)
        elif kind == "message_delta":
            self._saw_delta = True
            self._merge_usage(data.get("usage"), first=False)
        elif kind == "message_stop":
            self.outcome.complete = self._saw_delta
        elif kind == "error":
            self.outcome.error_type = error_type(data) or "error"
            self.outcome.incomplete_reason = "stream_error"
            self.outcome.complete = False

    # ---- whole bodies ----------------------------------------------------------------------------

    def on_document(self, document: Any) -> None:
        if not isinstance(document, dict):
            return
        if document.get("type") == "error" or (self.status >= 400 and "error" in document):
            self.outcome.error_type = error_type(document) or "error"
            return
        self._message_head(document)
        self._merge_usage(document.get("usage"), first=True)

    # ---- shared ----------------------------------------------------------------------------------

    def _message_head(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        if isinstance(message.get("model"), str):
            self.outcome.model = message["model"]
        if isinstance(message.get("id"), str):
            self.outcome.provider_request_id = message["id"]

    def _merge_usage(self, usage: Any, first: bool) -> None:
        if not isinstance(usage, dict):
            return
        for name in _USAGE_FIELDS:
            if usage.get(name) is not None:
                self._raw[name] = count(usage[name])
        if first and isinstance(usage.get("cache_creation"), dict):
            self._cache_1h = count(usage["cache_creation"].get("ephemeral_1h_input_tokens"))
        thinking = optional_count(dig(usage, "output_tokens_details", "thinking_tokens"))
        if thinking is not None:
            self._thinking = thinking
        searches = dig(usage, "server_tool_use", "web_search_requests")
        if searches is not None:
            self._web_search = count(searches)
        fetches = dig(usage, "server_tool_use", "web_fetch_requests")
        if fetches is not None:
            # Kept for the record; Anthropic bills web fetch by the tokens it adds, not per request.
            self.outcome.extra["web_fetch_requests"] = count(fetches)
        if isinstance(usage.get("service_tier"), str):
            self.outcome.extra["service_tier"] = usage["service_tier"]
        self.outcome.usage_reported = True
        cache_write = self._raw.get("cache_creation_input_tokens", 0)
        self.outcome.usage = Usage(
            input_tokens=self._raw.get("input_tokens", 0),
            output_tokens=self._raw.get("output_tokens", 0),
            cache_read_tokens=self._raw.get("cache_read_input_tokens", 0),
            cache_write_tokens=cache_write,
            cache_write_1h_tokens=min(self._cache_1h, cache_write),
            reasoning_tokens=self._thinking,
        )
        if self._web_search:
            self.outcome.extra["web_search_requests"] = self._web_search


class BatchResultsParser:
    """`GET /v1/messages/batches/{id}/results`: JSONL, one result per line. Downloading results is not a
    live call (and can be repeated), so usage is summed into `extra["batch_usage"]` for information only."""

    MAX_LINE = 16 * 1024 * 1024

    def __init__(self, status: int) -> None:
        self.outcome = ParseOutcome()
        self._status = status
        self._buf = bytearray()
        self._sums = {"requests": 0, "succeeded": 0, "input_tokens": 0, "output_tokens": 0,
                      "cache_read_tokens": 0, "cache_write_tokens": 0}

    def feed(self, data: bytes) -> None:
        self._buf += data
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest) if len(rest) <= self.MAX_LINE else bytearray()
        for line in lines:
            self._line(line)

    def _line(self, line: bytes | bytearray) -> None:
        item = loads_or_none(line) if line.strip() else None
        if not isinstance(item, dict):
            return
        self._sums["requests"] += 1
        result = item.get("result")
        if not isinstance(result, dict) or result.get("type") != "succeeded":
            return
        usage = dig(result, "message", "usage") or {}
        self._sums["succeeded"] += 1
        self._sums["input_tokens"] += count(usage.get("input_tokens"))
        self._sums["output_tokens"] += count(usage.get("output_tokens"))
        self._sums["cache_read_tokens"] += count(usage.get("cache_read_input_tokens"))
        self._sums["cache_write_tokens"] += count(usage.get("cache_creation_input_tokens"))

    def finish(self, eof: bool) -> ParseOutcome:
        if eof and self._buf.strip():
            self._line(bytes(self._buf))
        self.outcome.complete = eof
        if not eof:
            self.outcome.incomplete_reason = "upstream_truncated"
        if self._sums["requests"]:
            self.outcome.extra["batch_usage"] = dict(self._sums)
        return self.outcome


class CountTokensParser(NoUsageParser):
    def on_document(self, document: Any) -> None:
        super().on_document(document)
        if isinstance(document, dict) and document.get("input_tokens") is not None:
            self.outcome.extra["counted_input_tokens"] = count(document["input_tokens"])


class AnthropicCompatibleProvider(Provider):
    """Any host speaking the Anthropic Messages format; subclass or instantiate with other hosts."""

    path_prefix = "/v1"

    def __init__(
        self,
        id: str = "provider.anthropic",
        name: str = "anthropic",
        hosts: tuple[str, ...] = ("api.anthropic.com",),
        price_provider_id: str | None = "anthropic",
        path_prefix: str = "/v1",
    ) -> None:
        self.id, self.name, self.hosts = id, name, hosts
        self.price_provider_id = price_provider_id
        self.path_prefix = path_prefix.rstrip("/")

    def route(self, method: str, path: str) -> Endpoint | None:
        if not path.startswith(self.path_prefix + "/"):
            return OTHER
        rest = path[len(self.path_prefix) :].rstrip("/")
        if rest == "/messages" and method == "POST":
            return MESSAGES
        if rest == "/messages/count_tokens":
            return COUNT_TOKENS
        if rest.startswith("/messages/batches/") and rest.endswith("/results"):
            return BATCH_RESULTS
        if rest.startswith("/messages/batches"):
            return BATCHES
        return OTHER

    def refusal(self, message: str, retry_after: int) -> tuple[int, dict[str, str], bytes]:
        """Anthropic's own rate-limit error: the SDKs raise `RateLimitError` with this message."""
        body = {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
        return 429, {"content-type": "application/json"}, json.dumps(body).encode()

    def inspect_request(
        self, endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RequestFacts:
        facts = json_request_facts(body)
        # Claude Code signed in with a Claude subscription authenticates with an OAuth access token
        # (`sk-ant-oat…`), not an API key: those tokens are covered by the plan, not charged per token.
        authorization = (headers or {}).get("authorization", "")
        if authorization.startswith("Bearer sk-ant-oat"):
            facts.billing = BILLING_SUBSCRIPTION
        return facts

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint is MESSAGES:
            return MessagesParser(endpoint, request, status, content_type)
        if endpoint is COUNT_TOKENS:
            return CountTokensParser(endpoint, request, status, content_type, error_type_of=error_type)
        if endpoint is BATCH_RESULTS and status < 400:
            return BatchResultsParser(status)
        return NoUsageParser(endpoint, request, status, content_type, error_type_of=error_type)


@hookimpl
def halton_register_providers(register: Callable[[Provider], None]) -> None:
    register(AnthropicCompatibleProvider())
