"""Google Gemini API (`generativelanguage.googleapis.com`): JSON, SSE (`alt=sse`) and the JSON-array stream.

Usage semantics (docs/providers/gemini.md and docs/concepts/tokens.md): `usageMetadata` holds running totals, so the
last one seen is the call's usage and none is ever added to another. input = promptTokenCount −
cachedContentTokenCount + toolUsePromptTokenCount (tool results fed back in are priced as input);
cache_read = cachedContentTokenCount; output = candidatesTokenCount + thoughtsTokenCount (thinking is
reported beside the candidates, not inside them, and billed as output); reasoning = thoughtsTokenCount.

`streamGenerateContent` without `alt=sse` answers `application/json` with one array written element by
element. The query string is not available to the provider, so the framing is read from the body: a
generate call whose JSON body starts with `[` is that stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from halton_meter.plugin import (
    MAX_SSE_EVENT_BYTES,
    Endpoint,
    JSONArrayStream,
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
from halton_meter_plugins.providers.openai import ChatParser
from halton_meter_plugins.providers.openai import error_type as chat_error_type

GENERATE = Endpoint("generate_content", billable=True)
COUNT_TOKENS = Endpoint("count_tokens", billable=False, inference=False)
# Billable, but Gemini embedding responses carry no usage: such calls are recorded with unknown cost.
EMBEDDINGS = Endpoint("embeddings", billable=True)
# The OpenAI-compatible surface on the same host; left as "other" it would be inference nobody meters.
CHAT = Endpoint("chat.completions", billable=True)
OTHER = Endpoint("other", billable=False, inference=False)

_MODEL_CALL = re.compile(r"^/v1(?:beta|alpha)?/(?:models|tunedModels)/([^/:]+):([A-Za-z]+)$")
_OPENAI_CHAT = re.compile(r"^/v1(?:beta|alpha)?/openai/chat/completions$")
_STREAM_METHOD = "streamGenerateContent"
_METHODS = {
    "generateContent": GENERATE,
    _STREAM_METHOD: GENERATE,
    "countTokens": COUNT_TOKENS,
    "embedContent": EMBEDDINGS,
    "batchEmbedContents": EMBEDDINGS,
}
_WHITESPACE = b" \t\r\n"
_UNSPECIFIED = frozenset({"", "FINISH_REASON_UNSPECIFIED", "BLOCK_REASON_UNSPECIFIED"})


def strip_models_prefix(model: Any) -> str | None:
    if not isinstance(model, str) or not model:
        return None
    return model.removeprefix("models/")


def _is_reason(value: Any) -> bool:
    """A finishReason or blockReason that ends the response (proto enums default to `*_UNSPECIFIED`)."""
    return isinstance(value, str) and value not in _UNSPECIFIED


def parse_model_path(path: str) -> tuple[str, str] | None:
    """(model, method) from `/v1beta/models/{model}:{method}` or `/v1/tunedModels/{id}:{method}`."""
    match = _MODEL_CALL.match(unquote(path).rstrip("/"))
    return (match.group(1), match.group(2)) if match else None


def error_type(document: Any) -> str | None:
    """`error.status` of a Google RPC error body (`RESOURCE_EXHAUSTED`), or None when it names none."""
    if isinstance(document, list):  # the array stream's form of an HTTP error: `[{"error": {...}}]`
        document = next((d for d in document if isinstance(d, dict) and "error" in d), None)
    status = dig(document, "error", "status")
    return status if isinstance(status, str) and status else None


def gemini_usage(meta: dict[str, Any]) -> Usage:
    prompt = count(meta.get("promptTokenCount"))
    cached = min(count(meta.get("cachedContentTokenCount")), prompt)
    thoughts = optional_count(meta.get("thoughtsTokenCount"))
    return Usage(
        input_tokens=prompt - cached + count(meta.get("toolUsePromptTokenCount")),
        cache_read_tokens=cached,
        output_tokens=count(meta.get("candidatesTokenCount")) + (thoughts or 0),
        reasoning_tokens=thoughts,
    )


class GenerateContentParser(BodyParser):
    """`GenerateContentResponse` bodies in any of the three framings. Code Assist subclasses `unwrap`."""

    max_element_bytes = MAX_SSE_EVENT_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._array: JSONArrayStream | None = None
        self._sniffing = self._json is not None
        self.finish_seen = False
        self.stream_error = False

    def unwrap(self, chunk: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The `GenerateContentResponse` inside one body or stream element, and the request id the client
        knows the call by when that is not the response's own `responseId`."""
        return chunk, None

    # ---- framing ---------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._sniffing:
            data = data.lstrip(_WHITESPACE)
            if not data:
                return  # nothing decides the framing yet; leading whitespace means nothing to either
            self._sniffing = False
            if data[:1] == b"[":
                self._json = None
                self._array = JSONArrayStream(self.max_element_bytes, partial=True,
                                              descend=self.partial_descend)
                self.outcome.streamed = True
        if self._array is not None:
            for element in self._array.feed(data):
                self._safe(self._stream_element, element)
            return
        super().feed(data)

    def finish(self, eof: bool) -> ParseOutcome:
        outcome = self.outcome
        if self._array is not None:
            oversize, ended = self._array.oversize, self._array.closed
            if self._array.invalid:
                outcome.extra["invalid_events"] = self._array.invalid
            if self._array.partial_reads:
                outcome.extra["partial_events"] = self._array.partial_reads
        elif self._sse is not None:
            if eof:
                for event in self._sse.close():
                    self._event(event)
            oversize, ended = self.oversize_events(), True
        else:
            return super().finish(eof)
        if oversize:
            outcome.extra["oversize_events"] = oversize
        if self.status >= 400:
            # An HTTP error in stream framing: the error element is the whole answer, not a broken stream.
            outcome.complete = eof and ended
        else:
            outcome.complete = eof and ended and self.finish_seen and not self.stream_error
        if not outcome.complete and outcome.incomplete_reason is None:
            outcome.incomplete_reason = "unparsed_oversize" if eof and oversize else "upstream_truncated"
        return outcome

    # ---- elements --------------------------------------------------------------------------------

    def on_event(self, event: SSEEvent) -> None:
        self._stream_element(self.read_json(event.data))

    def on_document(self, document: Any) -> None:
        self._element(document, streamed=False)

    def _stream_element(self, element: Any) -> None:
        self._element(element, streamed=True)

    def _element(self, element: Any, streamed: bool) -> None:
        if not isinstance(element, dict):
            return
        if element.get("error") is not None:
            kind = error_type(element)
            if streamed and self.status < 400:
                self.stream_error = True
                self.outcome.incomplete_reason = "stream_error"
                kind = kind or "error"
            elif kind is None and self.status < 400:
                kind = "error"
            if kind is not None:
                self.outcome.error_type = kind
            return
        response, request_id = self.unwrap(element)
        if isinstance(response.get("modelVersion"), str) and response["modelVersion"]:
            self.outcome.model = response["modelVersion"]
        if request_id is None and isinstance(response.get("responseId"), str):
            request_id = response["responseId"]
        if request_id:
            self.outcome.provider_request_id = request_id
        meta = response.get("usageMetadata")
        if isinstance(meta, dict):
            # Running totals: this object replaces the previous one whole, never adds to it.
            self.outcome.usage = gemini_usage(meta)
            self.outcome.usage_reported = True
            tool_prompt = count(meta.get("toolUsePromptTokenCount"))
            if tool_prompt:
                self.outcome.extra["tool_use_prompt_tokens"] = tool_prompt
            else:
                self.outcome.extra.pop("tool_use_prompt_tokens", None)
        candidates = response.get("candidates")
        for candidate in candidates if isinstance(candidates, list) else ():
            if isinstance(candidate, dict) and _is_reason(candidate.get("finishReason")):
                self.finish_seen = True
        # A blocked prompt gets no candidates at all: its promptFeedback chunk is the last one.
        if _is_reason(dig(response, "promptFeedback", "blockReason")):
            self.finish_seen = True


class CountTokensParser(NoUsageParser):
    """`{"totalTokens": N}`: a free estimate, kept in `extra`, never usage."""

    def on_document(self, document: Any) -> None:
        super().on_document(document)
        if isinstance(document, dict) and document.get("totalTokens") is not None:
            self.outcome.extra["counted_input_tokens"] = count(document["totalTokens"])


class EmbeddingsParser(NoUsageParser):
    def on_document(self, document: Any) -> None:
        super().on_document(document)
        # Documented responses have no usage; should one ever carry `usageMetadata`, it is the input.
        prompt = optional_count(dig(document, "usageMetadata", "promptTokenCount"))
        if prompt is not None and self.status < 400:
            self.outcome.usage = Usage(input_tokens=prompt)
            self.outcome.usage_reported = True


class GeminiProvider(Provider):
    id = "provider.gemini"
    name = "gemini"
    hosts = ("generativelanguage.googleapis.com",)
    price_provider_id = "google"
    secret_query_params = ("key",)

    def route(self, method: str, path: str) -> Endpoint | None:
        if method != "POST":
            return OTHER
        parsed = parse_model_path(path)
        if parsed is not None:
            return _METHODS.get(parsed[1], OTHER)
        if _OPENAI_CHAT.match(unquote(path).rstrip("/")):
            return CHAT
        return OTHER

    def refusal(self, message: str, retry_after: int) -> tuple[int, dict[str, str], bytes]:
        """Google's own quota error (`RESOURCE_EXHAUSTED`), as the Gemini clients expect it."""
        body = {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}}
        return 429, {"content-type": "application/json"}, json.dumps(body).encode()

    def inspect_request(
        self, endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RequestFacts:
        if endpoint is CHAT:
            facts = json_request_facts(body)
            facts.model_requested = strip_models_prefix(facts.model_requested)
            return facts
        parsed = parse_model_path(path)
        if parsed is None:
            return RequestFacts()
        model, method = parsed
        return RequestFacts(model_requested=strip_models_prefix(model), stream_requested=method == _STREAM_METHOD)

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint is GENERATE:
            return GenerateContentParser(endpoint, request, status, content_type)
        if endpoint is COUNT_TOKENS:
            return CountTokensParser(endpoint, request, status, content_type, error_type_of=error_type)
        if endpoint is EMBEDDINGS:
            return EmbeddingsParser(endpoint, request, status, content_type, error_type_of=error_type)
        if endpoint is CHAT:
            return GeminiChatParser(endpoint, request, status, content_type)
        return NoUsageParser(endpoint, request, status, content_type, error_type_of=error_type)


class GeminiChatParser(ChatParser):
    """OpenAI Chat Completions as Gemini serves it. Its errors are Google RPC errors, some wrapped in a
    one-element list, so the error id is the RPC status when there is one."""

    def on_document(self, document: Any) -> None:
        if isinstance(document, list) and document and isinstance(document[0], dict):
            document = document[0]
        super().on_document(document)
        if self.outcome.error_type is not None or self.status >= 400:
            self.outcome.error_type = error_type(document) or chat_error_type(document)

    def on_event(self, event: SSEEvent) -> None:
        super().on_event(event)
        if self.outcome.incomplete_reason == "stream_error" and '"error"' in event.data:
            kind = error_type(loads_or_none(event.data))
            if kind is not None:
                self.outcome.error_type = kind


@hookimpl
def halton_register_providers(register: Callable[[Provider], None]) -> None:
    register(GeminiProvider())
