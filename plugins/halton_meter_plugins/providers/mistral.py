"""Mistral (`api.mistral.ai`), OpenAI-compatible chat, FIM and embeddings under `/v1`.

Mapping as OpenAI Chat (docs/providers/mistral.md and docs/concepts/tokens.md): input = prompt_tokens − cached_tokens,
cache_read = cached_tokens (`prompt_cache_key` caching), output = completion_tokens. Embeddings report
prompt_tokens only. In streams usage rides on the chunk that carries `finish_reason` (no separate usage
chunk), always, whatever the request asked for.

Errors are not OpenAI-shaped: the object itself is the error,
`{"object":"error","message":…,"type":"rate_limited","param":null,"code":"1300"}` (`message` may be a
validation detail list, `code` a number or numeric string). The `type` names the error, the code is an
opaque number, so `type` is the error id and `code` is kept in extra.
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
from halton_meter_plugins.providers._common import USAGE_NOT_READ, NoUsageParser, UnparsedParser
from halton_meter_plugins.providers.openai import ChatParser, OpenAICompatibleProvider, include_usage_mode
from halton_meter_plugins.providers.openai import error_type as openai_error_type

CHAT = Endpoint("chat.completions", billable=True)
FIM = Endpoint("fim.completions", billable=True)
EMBEDDINGS = Endpoint("embeddings", billable=True)
OTHER = Endpoint("other", billable=False, inference=False)
_ROUTES = {
    "/v1/chat/completions": CHAT,
    # Agents answer in the chat completion shape, usage included.
    "/v1/agents/completions": CHAT,
    "/v1/fim/completions": FIM,
    "/v1/embeddings": EMBEDDINGS,
    # Paid, with usage in other shapes (conversation entries, OCR pages, audio seconds): not parsed yet.
    "/v1/conversations": USAGE_NOT_READ,
    "/v1/ocr": USAGE_NOT_READ,
    "/v1/audio/transcriptions": USAGE_NOT_READ,
}


def mistral_error(document: Any) -> tuple[str | None, str | None]:
    """(error id, code) from a Mistral error object; the OpenAI `{"error": {...}}` shape is also read."""
    if not isinstance(document, dict):
        return None, None
    if isinstance(document.get("error"), dict):
        return openai_error_type(document), None
    code = document.get("code")
    code_text = str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None
    code_text = code_text if is_identifier(code_text) else None  # an opaque number, never a sentence
    kind = document.get("type")
    if is_identifier(kind):
        return kind, code_text
    if code_text is not None:
        return code_text, code_text
    # Gateway refusals carry only a message (`{"message": "Unauthorized"}`): the HTTP status says enough.
    return None, None


def _is_error(document: dict[str, Any]) -> bool:
    return str(document.get("object", "")).lower() == "error" or isinstance(document.get("error"), dict)


class MistralChatParser(ChatParser):
    def on_chunk(self, chunk: dict[str, Any]) -> None:
        if _is_error(chunk):
            self._error(chunk)
            self.outcome.incomplete_reason = "stream_error"
            return
        super().on_chunk(chunk)

    def on_document(self, document: Any) -> None:
        if isinstance(document, dict) and (self.status >= 400 or (_is_error(document) and "choices" not in document)):
            self._error(document)
            return
        super().on_document(document)

    def _error(self, document: dict[str, Any]) -> None:
        self.outcome.error_type, code = mistral_error(document)
        if code is not None:
            self.outcome.extra["error_code"] = code


class MistralProvider(OpenAICompatibleProvider):
    # usage comes on the finish chunk unasked, and Mistral validates request bodies strictly (unknown
    # fields get 422 `extra_forbidden`): adding stream_options could only risk the client's call.
    inject_usage = False
    reports_stream_usage = True

    def __init__(self, include_usage: str = "inject") -> None:
        super().__init__(id="provider.mistral", name="mistral", hosts=("api.mistral.ai",),
                         price_provider_id="mistral", path_prefix="/v1", include_usage=include_usage)

    def route(self, method: str, path: str) -> Endpoint | None:
        if method != "POST":
            return OTHER
        return _ROUTES.get(path.rstrip("/"), OTHER)

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint in (CHAT, FIM, EMBEDDINGS):
            return MistralChatParser(endpoint, request, status, content_type)
        if endpoint is USAGE_NOT_READ:
            return UnparsedParser(endpoint, request, status, content_type,
                                  error_type_of=lambda d: mistral_error(d)[0])
        return NoUsageParser(endpoint, request, status, content_type, error_type_of=lambda d: mistral_error(d)[0])


@hookimpl
def halton_register_providers(register: Callable[[Provider], None], config: PluginConfig | None) -> None:
    register(MistralProvider(include_usage=include_usage_mode(config)))
