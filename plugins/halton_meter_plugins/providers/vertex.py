"""Google Vertex AI: Claude (the Anthropic publisher) and Gemini (the Google publisher) on Google Cloud.

Hosts: regional `{region}-aiplatform.googleapis.com`, the global `aiplatform.googleapis.com` and the
multi-region `aiplatform.{us,eu}.rep.googleapis.com` (docs/providers/vertex.md). Paths name the publisher and
the model: `/v1/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:{method}` (also `v1beta1`,
and without `projects/…/locations/…` in Vertex's express mode, where an API key may sit in `?key=`).

* Claude: `:rawPredict` (JSON) and `:streamRawPredict` (SSE) carry Anthropic Messages bodies; the model is
  only in the URL (`claude-sonnet-4-5@20250929`), read with the Anthropic parser. `count-tokens:rawPredict`
  is Anthropic's free token count. For pricing the `@` version becomes a dash (`claude-sonnet-4-5-20250929`):
  `extra["price_as"]` names the Anthropic list id, used when Google's price list lacks the model.
  Anthropic documents that regional and multi-region endpoints cost 10% more than the global one for Claude
  Sonnet 4.5 and later models: such calls carry `extra["regional_premium_pct"] = 10`.
* Gemini: `:generateContent`, `:streamGenerateContent` (SSE with `alt=sse`, else one JSON array) and the free
  `:countTokens` / `:computeTokens`, read with the Gemini parser. The OpenAI-compatible
  `endpoints/openapi/chat/completions` is read with the Gemini chat parser.
* Other publishers' models and `:predict` (embeddings, images) are paid calls whose usage is not read:
  billable with unknown cost. Everything else on these hosts (datasets, endpoints, tuning…) is `other`.

Errors come in two shapes on Claude paths: Google's RPC errors from Vertex's front end (quota, permission,
unknown model: `error.status`) and Anthropic's own (`error.type`); both are read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from halton_meter.plugin import (
    Endpoint,
    ParseOutcome,
    Provider,
    RequestFacts,
    ResponseParser,
    hookimpl,
)
from halton_meter_plugins.providers import anthropic, gemini
from halton_meter_plugins.providers._common import (
    USAGE_NOT_READ,
    NoUsageParser,
    UnparsedParser,
    dig,
    json_request_facts,
)

MESSAGES = Endpoint("messages", billable=True)
"""Claude through `rawPredict` / `streamRawPredict` (its own object: the parser is chosen by identity)."""
CLAUDE_COUNT_TOKENS = Endpoint("count_tokens", billable=False, inference=False)
GENERATE = gemini.GENERATE
COUNT_TOKENS = gemini.COUNT_TOKENS
EMBEDDINGS = gemini.EMBEDDINGS
CHAT = Endpoint("chat.completions", billable=True)
OTHER = Endpoint("other", billable=False, inference=False)

HOSTS = ("*-aiplatform.googleapis.com", "aiplatform.googleapis.com", "aiplatform.*.rep.googleapis.com")
GLOBAL = "global"
REGIONAL_PREMIUM_PCT = 10
"""Anthropic, "Claude on Vertex AI": regional and multi-region endpoints include a 10% pricing premium over
the global endpoint, for Claude Sonnet 4.5 and later models only (older models keep their prices)."""

_PUBLISHER_CALL = re.compile(
    r"^/v1(?:beta1)?/(?:projects/[^/]+/locations/(?P<location>[^/]+)/)?"
    r"publishers/(?P<publisher>[^/]+)/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$"
)
_OPENAPI_CHAT = re.compile(
    r"^/v1(?:beta1)?/projects/[^/]+/locations/(?P<location>[^/]+)/endpoints/openapi/chat/completions$"
)
_TUNED_ENDPOINT = re.compile(
    r"^/v1(?:beta1)?/projects/[^/]+/locations/(?P<location>[^/]+)/endpoints/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$"
)
_CLAUDE_METHODS = ("rawPredict", "streamRawPredict")
_GEMINI_METHODS = {
    "generateContent": GENERATE,
    "streamGenerateContent": GENERATE,
    "countTokens": COUNT_TOKENS,
    "computeTokens": COUNT_TOKENS,
    "embedContent": EMBEDDINGS,
}
_PAID_UNREAD_METHODS = ("predict", "rawPredict", "streamRawPredict", "generateContent", "streamGenerateContent")
_VERSION_SUFFIX = re.compile(r"@(?P<version>[^@/]*)$")
_CLAUDE_VERSION = re.compile(
    r"^claude-(?:(?P<old>\d+)-(?P<old_minor>\d{1,2})-[a-z]"  # claude-3-5-haiku
    r"|[a-z]+-(?P<major>\d+)(?:-(?P<minor>\d{1,2}))?(?!\d))"  # claude-sonnet-4-5, claude-opus-4
)


@dataclass(frozen=True, slots=True)
class VertexCall:
    """What a Vertex path names: the publisher, the model (as in the URL, decoded), the method and the
    location (`global` when the path names none, as in express mode)."""

    publisher: str
    model: str
    method: str
    location: str


def parse_vertex_path(path: str) -> VertexCall | None:
    """The publisher model call in a Vertex path (query string removed), or None for any other path."""
    match = _PUBLISHER_CALL.match(unquote(path).rstrip("/"))
    if match is None:
        return None
    return VertexCall(match["publisher"].lower(), match["model"], match["method"], match["location"] or GLOBAL)


def normalize_claude_model(model: str) -> str:
    """A Vertex Claude id as Anthropic's price list names it: `claude-sonnet-4-5@20250929` →
    `claude-sonnet-4-5-20250929`; a non-date version (`@latest`, `@default`) is dropped; an id without `@`
    is returned unchanged."""
    match = _VERSION_SUFFIX.search(model)
    if match is None:
        return model
    base, version = model[: match.start()], match["version"]
    return f"{base}-{version}" if version.isdigit() and len(version) == 8 else base


def claude_version(model: str) -> tuple[int, int] | None:
    """(major, minor) of a Claude id in either naming (`claude-sonnet-4-5…` → (4, 5), `claude-opus-4@…` →
    (4, 0), `claude-3-5-haiku@…` → (3, 5)); None when the id is not recognisably Claude."""
    match = _CLAUDE_VERSION.match(normalize_claude_model(model))
    if match is None:
        return None
    if match["old"] is not None:
        return int(match["old"]), int(match["old_minor"])
    return int(match["major"]), int(match["minor"] or 0)


def regional_premium_pct(model: str, location: str) -> int:
    """The documented premium (percent) of a Claude call at `location`: 10 off the global endpoint for Claude
    Sonnet 4.5 and later models (Haiku 4.5, Opus 4.5, …), else 0."""
    if location.lower() == GLOBAL:
        return 0
    version = claude_version(model)
    return REGIONAL_PREMIUM_PCT if version is not None and version >= (4, 5) else 0


def error_type(document: Any) -> str | None:
    """Anthropic's `error.type`, else Google's `error.status` (Vertex's front end answers quota, permission
    and unknown-model errors itself, as Google RPC errors)."""
    return anthropic.error_type(document) or gemini.error_type(document)


def _error_id(document: Any) -> str | None:
    """`error_type`, or the numeric `error.code` of a Google error that names no status."""
    kind = error_type(document)
    if kind is None:
        code = dig(document, "error", "code")
        if isinstance(code, int) and not isinstance(code, bool):
            kind = str(code)
    return kind


def _price_hints(outcome: ParseOutcome, request: RequestFacts) -> None:
    """Copy the request's pricing hints (Vertex id normalised, regional premium) into a parsed outcome that
    has usage: only the parser's `extra` reaches the record."""
    if not (outcome.usage_reported or outcome.estimated):
        return
    for key in ("price_as", "regional_premium_pct"):
        value = request.extra.get(key)
        if value:
            outcome.extra[key] = value


class VertexMessagesParser(anthropic.MessagesParser):
    """Anthropic Messages bodies and streams as Vertex serves them; errors in either shape."""

    def on_document(self, document: Any) -> None:
        if self.status >= 400 or (isinstance(document, dict) and document.get("type") == "error"):
            self.outcome.error_type = _error_id(document) or "error"
            return
        super().on_document(document)

    def finish(self, eof: bool) -> ParseOutcome:
        outcome = super().finish(eof)
        _price_hints(outcome, self.request)
        return outcome


class VertexGenerateParser(gemini.GenerateContentParser):
    """Gemini's `GenerateContentResponse` in all three framings; Vertex adds `usageMetadata.trafficType`
    (`ON_DEMAND`, or `PROVISIONED_THROUGHPUT` for capacity bought in advance), kept in `extra`."""

    def unwrap(self, chunk: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        traffic = dig(chunk, "usageMetadata", "trafficType")
        if isinstance(traffic, str) and traffic:
            self.outcome.extra["traffic_type"] = traffic
        return chunk, None


class VertexProvider(Provider):
    id = "provider.vertex"
    name = "vertex"
    hosts = HOSTS
    price_provider_id = "google"
    secret_query_params = ("key",)

    def route(self, method: str, path: str) -> Endpoint | None:
        if method != "POST":
            return OTHER
        call = parse_vertex_path(path)
        if call is not None:
            return self._publisher_endpoint(call)
        bare = unquote(path).rstrip("/")
        if _OPENAPI_CHAT.match(bare):
            return CHAT
        tuned = _TUNED_ENDPOINT.match(bare)
        if tuned is not None and tuned["method"] in ("generateContent", "streamGenerateContent"):
            return GENERATE  # a tuned Gemini model deployed to an endpoint: billed per token like its base
        return OTHER

    @staticmethod
    def _publisher_endpoint(call: VertexCall) -> Endpoint:
        if call.publisher == "anthropic":
            if call.method not in _CLAUDE_METHODS:
                return OTHER
            return CLAUDE_COUNT_TOKENS if call.model == "count-tokens" else MESSAGES
        if call.publisher == "google":
            if call.method in _GEMINI_METHODS:
                return _GEMINI_METHODS[call.method]
            return USAGE_NOT_READ if call.method == "predict" else OTHER
        return USAGE_NOT_READ if call.method in _PAID_UNREAD_METHODS else OTHER

    def refusal(self, message: str, retry_after: int) -> tuple[int, dict[str, str], bytes]:
        """A 429 both client families read as their own rate-limit error: Google's RPC error
        (`code`, `status: RESOURCE_EXHAUSTED`, `message`) with Anthropic's members beside it (top-level
        `type: error`, `error.type: rate_limit_error`). The refusal is not told the path, so one body serves
        the Gemini and the Claude clients alike; each reads its members and ignores the others'."""
        body = {
            "type": "error",
            "error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "type": "rate_limit_error"},
        }
        return 429, {"content-type": "application/json"}, json.dumps(body).encode()

    def inspect_request(
        self, endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RequestFacts:
        if endpoint is CHAT or endpoint is CLAUDE_COUNT_TOKENS:
            facts = json_request_facts(body)  # the model is in the body
            facts.model_requested = gemini.strip_models_prefix(facts.model_requested)
            return facts
        bare = unquote(path).rstrip("/")
        call = parse_vertex_path(bare)
        if call is None:
            tuned = _TUNED_ENDPOINT.match(bare)
            if tuned is None:
                return RequestFacts()
            return RequestFacts(model_requested=tuned["model"],
                                stream_requested=tuned["method"] == "streamGenerateContent")
        if endpoint is MESSAGES:
            facts = json_request_facts(body)  # stream, max_tokens and session from the Anthropic body
            facts.model_requested = call.model
            facts.stream_requested = facts.stream_requested or call.method == "streamRawPredict"
            normalized = normalize_claude_model(call.model)
            facts.extra["price_as"] = f"anthropic/{normalized}"
            premium = regional_premium_pct(call.model, call.location)
            if premium:
                facts.extra["regional_premium_pct"] = premium
            return facts
        return RequestFacts(model_requested=gemini.strip_models_prefix(call.model),
                            stream_requested=call.method == "streamGenerateContent")

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint is MESSAGES:
            return VertexMessagesParser(endpoint, request, status, content_type)
        if endpoint is CLAUDE_COUNT_TOKENS:
            return anthropic.CountTokensParser(endpoint, request, status, content_type, error_type_of=_error_id)
        if endpoint is GENERATE:
            return VertexGenerateParser(endpoint, request, status, content_type)
        if endpoint is COUNT_TOKENS:
            return gemini.CountTokensParser(endpoint, request, status, content_type, error_type_of=_error_id)
        if endpoint is EMBEDDINGS:
            return gemini.EmbeddingsParser(endpoint, request, status, content_type, error_type_of=_error_id)
        if endpoint is CHAT:
            return gemini.GeminiChatParser(endpoint, request, status, content_type)
        if endpoint is USAGE_NOT_READ:
            return UnparsedParser(endpoint, request, status, content_type, error_type_of=_error_id)
        return NoUsageParser(endpoint, request, status, content_type, error_type_of=_error_id)


@hookimpl
def halton_register_providers(register: Callable[[Provider], None]) -> None:
    register(VertexProvider())
