"""ChatGPT / Codex backend (`chatgpt.com`, docs/providers/codex.md): Codex CLI and IDE signed in with a ChatGPT plan.

`POST /backend-api/codex/responses` speaks the Responses API (request body and SSE grammar), so the
Responses parser does the work. Tokens count against the ChatGPT plan, not per token: billing is
`subscription` and the cost shown is the OpenAI list-price equivalent. Every other `/backend-api/` path is
recorded as non-inference; the rest of chatgpt.com (the web app) is not metered at all.

Plan limits come back as HTTP 429 `{"error": {"type": "usage_limit_reached", "plan_type", "resets_at"}}`:
the record's error id is `error.type` (Codex's rule), and `plan_type` / `resets_at` go to `extra`.
Codex may zstd-compress its request bodies; the core decodes a copy before `inspect_request`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from halton_meter.plugin import (
    BILLING_SUBSCRIPTION,
    Endpoint,
    Provider,
    RequestFacts,
    ResponseParser,
    hookimpl,
    is_identifier,
)
from halton_meter_plugins.providers._common import NoUsageParser, json_request_facts
from halton_meter_plugins.providers.openai import OTHER, RESPONSES, RESPONSES_COMPACT, ResponsesParser

PREFIX = "/backend-api"


def codex_error_type(document: Any) -> str | None:
    """`error.type` first (`usage_limit_reached`), then `error.code`."""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None
    for key in ("type", "code"):
        value = error.get(key)
        if is_identifier(value):
            return value
    return "error"


class CodexResponsesParser(ResponsesParser):
    def error_id(self, error: Any) -> str | None:
        return codex_error_type({"error": error}) if isinstance(error, dict) else None

    def on_error_document(self, document: dict[str, Any]) -> None:
        error = document.get("error")
        if not isinstance(error, dict):
            return
        for key in ("plan_type", "resets_at"):
            value = error.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                self.outcome.extra[key] = value


class CodexProvider(Provider):
    id = "provider.codex"
    name = "codex"
    hosts = ("chatgpt.com",)
    price_provider_id = "openai"
    billing = BILLING_SUBSCRIPTION

    def route(self, method: str, path: str) -> Endpoint | None:
        path = path.rstrip("/")
        if not path.startswith(f"{PREFIX}/codex/"):
            # The ChatGPT web app and its other APIs are not Codex calls: no record for them.
            return None
        if method == "POST" and path == f"{PREFIX}/codex/responses":
            return RESPONSES
        if method == "POST" and path == f"{PREFIX}/codex/responses/compact":
            return RESPONSES_COMPACT
        return OTHER

    def inspect_request(
        self, endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RequestFacts:
        facts = json_request_facts(body)
        facts.extra.pop("include_usage", None)  # a Chat Completions notion; Responses always report usage
        return facts

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint.kind in (RESPONSES.kind, RESPONSES_COMPACT.kind):
            return CodexResponsesParser(endpoint, request, status, content_type)
        return NoUsageParser(endpoint, request, status, content_type, error_type_of=codex_error_type)


@hookimpl
def halton_register_providers(register: Callable[[Provider], None]) -> None:
    register(CodexProvider())
