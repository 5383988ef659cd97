"""Gemini Code Assist (`cloudcode-pa.googleapis.com`), the backend of Gemini CLI signed in with Google.

RPC-style paths with the colon right after the version (`/v1internal:streamGenerateContent?alt=sse`,
docs/providers/code-assist.md). The model is a request body field; every response body or SSE event wraps a Gemini
`GenerateContentResponse` as `{"response": {...}, "traceId": ...}`, which is unwrapped and read with the
Gemini rules (cumulative `usageMetadata`, thinking billed as output). Calls are covered by the user's
Code Assist plan: tokens are counted and priced at Google's list prices, but billing is `subscription`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from halton_meter.plugin import (
    BILLING_SUBSCRIPTION,
    Endpoint,
    Provider,
    RequestFacts,
    ResponseParser,
    hookimpl,
)
from halton_meter_plugins.providers._common import NoUsageParser, dig, request_json
from halton_meter_plugins.providers.gemini import (
    COUNT_TOKENS,
    GENERATE,
    OTHER,
    CountTokensParser,
    GenerateContentParser,
    error_type,
    strip_models_prefix,
)

# `v1internal` today; the version segment is matched loosely so a bump does not silently stop metering.
_RPC = re.compile(r"^/v\d+[A-Za-z0-9_]*:([A-Za-z]+)$")
_STREAM_METHOD = "streamGenerateContent"
_METHODS = {
    "generateContent": GENERATE,
    _STREAM_METHOD: GENERATE,
    "countTokens": COUNT_TOKENS,
}


def rpc_method(path: str) -> str | None:
    match = _RPC.match(unquote(path).rstrip("/"))
    return match.group(1) if match else None


class CodeAssistParser(GenerateContentParser):
    partial_descend = ("response",)  # the GenerateContentResponse is wrapped in `response`

    # Gemini CLI hands `traceId` to its caller as the response id, so that is the id a user can look up.
    def unwrap(self, chunk: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        trace = chunk.get("traceId")
        trace = trace if isinstance(trace, str) and trace else None
        response = chunk.get("response")
        return (response if isinstance(response, dict) else {}), trace


class CodeAssistProvider(Provider):
    id = "provider.code-assist"
    name = "code-assist"
    hosts = ("cloudcode-pa.googleapis.com",)
    price_provider_id = "google"
    billing = BILLING_SUBSCRIPTION

    def route(self, method: str, path: str) -> Endpoint | None:
        if method != "POST":
            return OTHER
        return _METHODS.get(rpc_method(path) or "", OTHER)

    def refusal(self, message: str, retry_after: int) -> tuple[int, dict[str, str], bytes]:
        """Google's own quota error (`RESOURCE_EXHAUSTED`), as the Gemini clients expect it."""
        body = {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}}
        return 429, {"content-type": "application/json"}, json.dumps(body).encode()

    def inspect_request(
        self, endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RequestFacts:
        if endpoint is OTHER:
            return RequestFacts()
        data = request_json(body)
        if endpoint is COUNT_TOKENS:
            model = dig(data, "request", "model")
        else:
            model = data.get("model") if isinstance(data, dict) else None
        return RequestFacts(
            model_requested=strip_models_prefix(model), stream_requested=rpc_method(path) == _STREAM_METHOD
        )

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint is GENERATE:
            return CodeAssistParser(endpoint, request, status, content_type)
        if endpoint is COUNT_TOKENS:
            return CountTokensParser(endpoint, request, status, content_type, error_type_of=error_type)
        return NoUsageParser(endpoint, request, status, content_type, error_type_of=error_type)


@hookimpl
def halton_register_providers(register: Callable[[Provider], None]) -> None:
    register(CodeAssistProvider())
