"""The OpenAI-compatible provider base: routes, the request side (facts, usage injection) and the parser
for each endpoint."""

from __future__ import annotations

from collections.abc import Mapping

from halton_meter.plugin import Endpoint, PartialDocument, RequestFacts, ResponseParser
from halton_meter_plugins.providers._common import (
    BodyParser,
    NoUsageParser,
    Provider,
    is_event_stream,
    json_request_facts,
    request_json,
)
from halton_meter_plugins.providers.openai.chat import ChatParser
from halton_meter_plugins.providers.openai.config import checked_include_usage
from halton_meter_plugins.providers.openai.estimate import message_text_bytes
from halton_meter_plugins.providers.openai.mappings import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    INPUT_TOKENS,
    OTHER,
    RESPONSES,
    RESPONSES_COMPACT,
    error_type,
)
from halton_meter_plugins.providers.openai.responses import (
    EmbeddingsParser,
    InputTokensParser,
    ResponsesParser,
)
from halton_meter_plugins.providers.openai.usage_injection import UsageChunkFilter, inject_include_usage


class OpenAICompatibleProvider(Provider):
    """Any host speaking the OpenAI API under `path_prefix` (default `/v1`): Chat Completions, Responses,
    Embeddings (and legacy Completions).

    Third-party plugins (and, later, user-declared endpoints) instantiate this with their own id, name
    and hosts; see `contrib/halton-meter-provider-example`. Vendors subclass and swap the parser classes.
    """

    chat_parser_class: type[ChatParser] = ChatParser
    responses_parser_class: type[ResponsesParser] = ResponsesParser
    embeddings_parser_class: type[BodyParser] = EmbeddingsParser
    inject_usage: bool = True
    """Ask for Chat stream usage on the client's behalf (see the package docstring): the switch. False for
    an API that rejects or ignores `stream_options`; its streams are then estimated, unless
    `reports_stream_usage` says there is nothing to estimate."""
    reports_stream_usage: bool = False
    """The API puts usage in every Chat stream whether asked or not (Groq, Mistral, OpenRouter): with
    `inject_usage = False` too, nothing is injected and a stream is estimated only as OpenAI's would be
    (`include_usage = "off"`, or a compressed request)."""

    def __init__(
        self,
        id: str = "provider.openai",
        name: str = "openai",
        hosts: tuple[str, ...] = ("api.openai.com",),
        price_provider_id: str | None = "openai",
        path_prefix: str = "/v1",
        include_usage: str = "inject",
    ) -> None:
        self.id, self.name, self.hosts = id, name, hosts
        self.price_provider_id = price_provider_id
        self.path_prefix = path_prefix.rstrip("/")
        self.include_usage = checked_include_usage(include_usage)
        """`inject` or `off`: `[plugins.openai] include_usage`, read by the register hook
        (`include_usage_mode(config)`) and handed to each provider, never kept in a module global."""

    def route(self, method: str, path: str) -> Endpoint | None:
        path = path.rstrip("/")
        if method != "POST" or not path.startswith(self.path_prefix + "/"):
            return OTHER
        return {
            "/chat/completions": CHAT,
            "/completions": COMPLETIONS,
            "/responses": RESPONSES,
            "/responses/compact": RESPONSES_COMPACT,
            "/responses/input_tokens": INPUT_TOKENS,
            "/embeddings": EMBEDDINGS,
        }.get(path[len(self.path_prefix) :], OTHER)

    def inspect_request(
        self, endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RequestFacts:
        facts = json_request_facts(body)
        if endpoint.kind == CHAT.kind and facts.stream_requested and not facts.extra.get("include_usage"):
            encoded = (headers or {}).get("content-encoding", "").strip().lower() not in ("", "identity")
            # Estimate when usage will not be asked for: the mode is off, or the body is compressed (the
            # core never re-encodes a client's body, so it cannot be rewritten).
            injects = self.inject_usage or self.reports_stream_usage
            if self.include_usage == "off" or encoded or not injects:
                data = request_json(body)
                messages = data.get("messages") if isinstance(data, dict) else None
                if not isinstance(data, PartialDocument) or messages is not None:
                    # a count, never the text; not for a body over the JSON budget (messages unread)
                    facts.extra["prompt_text_bytes"] = message_text_bytes(messages)
        return facts

    def rewrite_request(self, endpoint: Endpoint, request: RequestFacts, body: bytes) -> bytes | None:
        if (
            endpoint.kind != CHAT.kind
            or not self.inject_usage
            or self.include_usage != "inject"
            or not request.stream_requested
            or request.extra.get("include_usage")
            or "prompt_text_bytes" in request.extra
        ):
            return None
        replacement = inject_include_usage(body)
        if replacement is not None:
            request.usage_injected = True
        return replacement

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint.kind in (CHAT.kind, COMPLETIONS.kind):
            return self.chat_parser_class(endpoint, request, status, content_type)
        if endpoint.kind in (RESPONSES.kind, RESPONSES_COMPACT.kind):
            return self.responses_parser_class(endpoint, request, status, content_type)
        if endpoint.kind == EMBEDDINGS.kind:
            return self.embeddings_parser_class(endpoint, request, status, content_type)
        if endpoint.kind == INPUT_TOKENS.kind:
            return InputTokensParser(endpoint, request, status, content_type, error_type_of=error_type)
        return NoUsageParser(endpoint, request, status, content_type, error_type_of=error_type)

    def response_rewriter(
        self, endpoint: Endpoint, request: RequestFacts, status: int, headers: Mapping[str, str]
    ) -> UsageChunkFilter | None:
        if (
            request.usage_injected
            and endpoint.kind == CHAT.kind
            and status == 200
            and is_event_stream(headers.get("content-type", ""))
        ):
            return UsageChunkFilter()
        return None
