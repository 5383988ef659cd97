"""AWS Bedrock Runtime (`bedrock-runtime.<region>.amazonaws.com`): InvokeModel, InvokeModelWithResponseStream,
Converse and ConverseStream (docs/providers/bedrock.md).

* The model is in the path, `/model/{modelId}/{operation}`, percent-encoded (an ARN's `:` and `/`). An
  inference-profile or foundation-model ARN resolves to the model id it names; `model` is that Bedrock id
  (`us.anthropic.claude-sonnet-4-5-20250929-v1:0`), because the `aws` price list prices the geographic and
  global forms differently; `extra["price_as"]` is the vendor's own id (`anthropic/claude-sonnet-4-5-20250929`)
  for when the `aws` list does not know the model.
* InvokeModel bodies are the model family's own format. Anthropic's (the Messages format) is read by the
  Anthropic parser; the streaming form wraps each Anthropic event, base64-encoded, in an event-stream `chunk`
  message, and Bedrock adds `amazon-bedrock-invocationMetrics` to the last chunk of every family, so other
  families' streams are metered from those. Other families' whole JSON bodies are recorded as billable with
  usage not read (their token counts are only in response headers, which parsers do not receive).
* Converse: `usage` {inputTokens, outputTokens, totalTokens, cacheReadInputTokens, cacheWriteInputTokens,
  cacheDetails}; inputTokens excludes the cache reads and writes. ConverseStream ends with a `metadata` event
  carrying the same usage: a stream is whole only once that arrived.
* Errors inside a stream are event-stream messages of type `exception`; a damaged frame (CRC) stops parsing.

Why this module is long: one provider with four wire forms (two APIs, each JSON and event stream) and the
model-id rules they share; the event-stream framing itself is in `_eventstream.py`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from halton_meter.plugin import (
    Endpoint,
    ParseOutcome,
    PartialDocument,
    Provider,
    RequestFacts,
    ResponseParser,
    SSEEvent,
    Usage,
    hookimpl,
    session_from_request,
)
from halton_meter_plugins.providers._common import (
    USAGE_NOT_READ,
    BodyParser,
    NoUsageParser,
    count,
    dig,
    json_request_facts,
    optional_count,
    request_json,
)
from halton_meter_plugins.providers._eventstream import OVERSIZE, EventStreamDecoder, EventStreamMessage
from halton_meter_plugins.providers.anthropic import MessagesParser
from halton_meter_plugins.providers.anthropic import error_type as anthropic_error_type
from halton_meter_plugins.providers.openai import ChatParser

INVOKE = Endpoint("invoke", billable=True)
CONVERSE = Endpoint("converse", billable=True)
COUNT_TOKENS = Endpoint("count_tokens", billable=False, inference=False)
CHAT = Endpoint("chat.completions", billable=True)
OTHER = Endpoint("other", billable=False, inference=False)

_MODEL_CALL = re.compile(r"^/model/(.+)/(invoke|invoke-with-response-stream|converse|converse-stream|count-tokens"
                         r"|invoke-with-bidirectional-stream)/?$")
_OPERATIONS = {"invoke": INVOKE, "invoke-with-response-stream": INVOKE, "converse": CONVERSE,
               "converse-stream": CONVERSE, "count-tokens": COUNT_TOKENS,
               "invoke-with-bidirectional-stream": USAGE_NOT_READ}
_STREAM_OPERATIONS = frozenset({"invoke-with-response-stream", "converse-stream"})
_PAID_OTHER = re.compile(r"^/(?:async-invoke|guardrail/[^/]+/version/[^/]+/apply|guardrail-checks/invoke)/?$")
_OPENAI_CHAT = "/openai/v1/chat/completions"

EVENT_STREAM = "application/vnd.amazon.eventstream"
INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"
_ANTHROPIC_EVENTS = frozenset({"message_start", "content_block_start", "content_block_delta", "content_block_stop",
                               "message_delta", "message_stop", "ping", "error"})

# ---- model ids ---------------------------------------------------------------------------------------

_ARN = re.compile(r"^arn:aws[a-z-]*:bedrock:[a-z0-9-]*:\d*:(foundation-model|inference-profile)/(.+)$")
_GEO_PREFIX = re.compile(r"^(?:global|us|us-gov|eu|apac|au|jp|ca|in)\.")
_VERSION_SUFFIX = re.compile(r"(?:-v\d+(?::\d+)?|-\d+:\d+|:\d+)$")


def parse_model_path(path: str) -> tuple[str, str] | None:
    """(model id, decoded; operation) from `/model/{modelId}/{operation}`."""
    match = _MODEL_CALL.match(path)
    if match is None:
        return None
    return unquote(match.group(1)), match.group(2)


def resolve_model_id(model: str | None) -> str | None:
    """The Bedrock model id a request names: itself, or what a foundation-model or system inference-profile ARN
    points at. None for ARNs that name no model (application inference profiles, provisioned throughput,
    custom and imported models): their model is known only from the response, if at all."""
    if not model:
        return None
    if not model.startswith("arn:"):
        return model
    match = _ARN.match(model)
    return match.group(2) if match else None


def vendor_model(model_id: str | None) -> str | None:
    """`us.anthropic.claude-sonnet-4-5-20250929-v1:0` → `anthropic/claude-sonnet-4-5-20250929`: the geographic
    prefix and the Bedrock version suffix dropped, the vendor prefix turned into `vendor/`. None when the id
    has no `vendor.` prefix."""
    if not model_id:
        return None
    vendor, dot, name = _GEO_PREFIX.sub("", model_id).partition(".")
    if not dot or not vendor or not name:
        return None
    bare = _VERSION_SUFFIX.sub("", name)
    if not any(ch.isdigit() for ch in bare):  # `claude-v2:1`, `claude-instant-v1`: the version is the name
        bare = name
    return f"{vendor}/{bare}"


def error_type(document: Any) -> str | None:
    """The error code an AWS JSON error body names (`__type` or `code`), or None: Bedrock's own bodies are
    `{"message": ...}` and name their type only in the `x-amzn-errortype` header, which parsers do not see."""
    if not isinstance(document, dict):
        return None
    code = document.get("__type") or document.get("code") or document.get("Code")
    if not isinstance(code, str) or not code:
        return None
    return code.split(":", 1)[0].rsplit("#", 1)[-1] or None


def converse_usage(usage: dict[str, Any]) -> tuple[Usage, bool]:
    """Converse `TokenUsage` → our buckets, and whether inputTokens had to be read as inclusive of the cache.

    Documented and observed: inputTokens excludes cache reads and writes, and totalTokens is all four. Should
    totalTokens ever equal inputTokens + outputTokens while cache tokens were reported, inputTokens held them
    and they are taken out (flagged in `extra`)."""
    inp, out = count(usage.get("inputTokens")), count(usage.get("outputTokens"))
    read, write = count(usage.get("cacheReadInputTokens")), count(usage.get("cacheWriteInputTokens"))
    total = optional_count(usage.get("totalTokens"))
    inclusive = bool(read or write) and total == inp + out and inp >= read + write
    if inclusive:
        inp -= read + write
    details = usage.get("cacheDetails")
    write_1h = sum(count(d.get("inputTokens")) for d in details if isinstance(d, dict) and d.get("ttl") == "1h") \
        if isinstance(details, list) else 0
    return Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=read, cache_write_tokens=write,
                 cache_write_1h_tokens=min(write_1h, write)), inclusive


def metrics_usage(metrics: dict[str, Any]) -> Usage:
    return Usage(input_tokens=count(metrics.get("inputTokenCount")),
                 output_tokens=count(metrics.get("outputTokenCount")),
                 cache_read_tokens=count(metrics.get("cacheReadInputTokenCount")),
                 cache_write_tokens=count(metrics.get("cacheWriteInputTokenCount")))


# ---- parsers -----------------------------------------------------------------------------------------


class EventStreamBody(BodyParser):
    """A BodyParser that also reads `application/vnd.amazon.eventstream` bodies, message by message, and names
    the model the Bedrock way. Subclasses implement `on_stream_event(event_type, payload)` and
    `stream_complete()`."""

    def __init__(self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str) -> None:
        super().__init__(endpoint, request, status, content_type)
        self.header_error: str | None = None
        self.header_usage: Usage | None = None
        self.frames: EventStreamDecoder | None = None
        if content_type.split(";", 1)[0].strip().lower() == EVENT_STREAM:
            self.frames = EventStreamDecoder()
            self._json = None
            self.outcome.streamed = True

    def read_headers(self, headers: Mapping[str, str]) -> None:
        """What Bedrock says in response headers: the error type (`x-amzn-errortype`, before its `:`) and
        InvokeModel's token counts (`x-amzn-bedrock-input-token-count` / `-output-token-count`), which
        are the only usage a non-Anthropic InvokeModel JSON body has."""
        kind = headers.get("x-amzn-errortype", "").split(":", 1)[0].strip()
        self.header_error = kind or None
        counts = [headers.get(f"x-amzn-bedrock-{name}-token-count", "").strip() for name in ("input", "output")]
        if all(c.isdigit() for c in counts):
            self.header_usage = Usage(input_tokens=int(counts[0]), output_tokens=int(counts[1]))

    def feed(self, data: bytes) -> None:
        if self.frames is None:
            super().feed(data)
            return
        for message in self.frames.feed(data):
            self._safe(self._frame, message)

    def _frame(self, message: EventStreamMessage) -> None:
        kind = message.header(":message-type")
        if kind == "event":
            self.on_stream_event(message.header(":event-type") or "", message.payload)
        elif kind in ("exception", "error"):
            code = message.header(":exception-type") if kind == "exception" else message.header(":error-code")
            self.outcome.error_type = code or "error"
            self.outcome.incomplete_reason = "stream_error"
            self.outcome.complete = False

    def finish(self, eof: bool) -> ParseOutcome:
        frames = self.frames
        if frames is None:
            outcome = super().finish(eof)
            self._safe(self.name_model, None)
            if self.status >= 400 and outcome.error_type is None:
                outcome.error_type = self.header_error
            elif self.status < 400 and not outcome.usage_reported and self.header_usage is not None and eof:
                outcome.usage, outcome.usage_reported = self.header_usage, True
                outcome.extra.pop("usage_not_parsed", None)
                outcome.extra["usage_from"] = "response headers"
            return outcome
        outcome = self.outcome
        self._safe(self.name_model, None)
        if frames.broken:
            outcome.extra["event_stream_error"] = frames.broken
        oversize = self.oversize_events()
        if oversize:
            outcome.extra["oversize_events"] = oversize
        ended = eof and frames.broken is None and frames.pending == 0
        if self.status >= 400:
            outcome.complete = ended
        else:
            outcome.complete = ended and outcome.incomplete_reason is None and self.stream_complete()
        if not outcome.complete and outcome.incomplete_reason is None:
            if frames.broken:
                outcome.incomplete_reason = "unparsed_oversize" if frames.broken == OVERSIZE else "parse_error"
            else:
                outcome.incomplete_reason = "unparsed_oversize" if eof and oversize else "upstream_truncated"
        return outcome

    def name_model(self, _: Any) -> None:
        """`model` = the Bedrock id the request resolves to (else what the response said); `price_as` = the
        vendor's own id, for the vendor's list price when the `aws` list lacks the model."""
        resolved = resolve_model_id(self.request.model_requested)
        if resolved:
            self.outcome.model = resolved
        price_as = vendor_model(resolved)
        if price_as is None and self.outcome.model and "." not in self.outcome.model \
                and self.outcome.model.startswith("claude-"):
            price_as = f"anthropic/{self.outcome.model}"  # an application profile's Anthropic response
        if price_as:
            self.outcome.extra["price_as"] = price_as

    def on_stream_event(self, event_type: str, payload: bytes) -> None:
        raise NotImplementedError

    def stream_complete(self) -> bool:
        raise NotImplementedError


class InvokeParser(EventStreamBody, MessagesParser):
    """InvokeModel and InvokeModelWithResponseStream. Anthropic bodies (recognised by their shape, so an
    application inference profile's are read too) go through the Anthropic Messages logic; other families
    are metered from the stream's invocation metrics, or recorded with usage not read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last: Any = None
        self.anthropic_seen = False
        self.metrics: dict[str, Any] | None = None

    def read_json(self, text: str | bytes) -> Any:
        self._last = super().read_json(text)  # kept so a chunk is parsed once for both readers
        return self._last

    def on_document(self, document: Any) -> None:
        if self.status >= 400:
            self.outcome.error_type = error_type(document) or anthropic_error_type(document)
            return
        if isinstance(document, dict) and (document.get("type") in ("message", "error")
                                           or isinstance(dig(document, "usage", "input_tokens"), int)):
            self.anthropic_seen = True
            super().on_document(document)
        else:
            self.outcome.extra["usage_not_parsed"] = True

    def on_stream_event(self, event_type: str, payload: bytes) -> None:
        if event_type != "chunk":
            return
        part = self.read_json(payload)
        encoded = part.get("bytes") if isinstance(part, dict) else None
        if not isinstance(encoded, str):
            return
        text = base64.b64decode(encoded, validate=True).decode("utf-8", errors="replace")
        self._last = None
        self.on_event(SSEEvent(event="message", data=text))
        chunk = self._last
        if not isinstance(chunk, dict):
            return
        if chunk.get("type") in _ANTHROPIC_EVENTS:
            self.anthropic_seen = True
        metrics = chunk.get(INVOCATION_METRICS)
        if isinstance(metrics, dict):
            self.metrics = metrics

    def stream_complete(self) -> bool:
        if self.anthropic_seen:
            return self.outcome.complete  # MessagesParser: message_stop after message_delta
        return self.metrics is not None

    def finish(self, eof: bool) -> ParseOutcome:
        if self.frames is not None and self.metrics is not None:
            from_metrics = metrics_usage(self.metrics)
            if not self.outcome.usage_reported:
                self.outcome.usage, self.outcome.usage_reported = from_metrics, True
            elif (from_metrics.input_tokens, from_metrics.output_tokens) != (
                    self.outcome.usage.input_tokens, self.outcome.usage.output_tokens):
                self.outcome.extra["invocation_metrics_differ"] = True
        if self.frames is not None and not self.anthropic_seen and self.metrics is None and self.frames.messages:
            self.outcome.extra["usage_not_parsed"] = True
        return super().finish(eof)


class ConverseParser(EventStreamBody):
    """Converse (JSON) and ConverseStream (event stream, usage in the final `metadata` event)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_seen = False
        self.metadata_seen = False

    def on_document(self, document: Any) -> None:
        if self.status >= 400:
            self.outcome.error_type = error_type(document)
            return
        if isinstance(document, dict):
            self._usage(document)
            if isinstance(document.get("stopReason"), str):
                self.stop_seen = True

    def on_stream_event(self, event_type: str, payload: bytes) -> None:
        if event_type == "messageStop":
            self.stop_seen = True
        elif event_type == "metadata":
            data = self.read_json(payload)
            if isinstance(data, dict) and self._usage(data):
                self.metadata_seen = True

    def _usage(self, data: dict[str, Any]) -> bool:
        usage = data.get("usage")
        latency = optional_count(dig(data, "metrics", "latencyMs"))
        if latency is not None:
            self.outcome.extra["provider_latency_ms"] = latency
        tier = dig(data, "serviceTier", "type")
        if isinstance(tier, str):
            self.outcome.extra["service_tier"] = tier
        if not isinstance(usage, dict):
            return False
        self.outcome.usage, inclusive = converse_usage(usage)
        self.outcome.usage_reported = True
        if inclusive:
            self.outcome.extra["input_included_cache"] = True
        return True

    def stream_complete(self) -> bool:
        return self.metadata_seen


class NotReadParser(EventStreamBody):
    """A paid call whose usage is not read (bidirectional streams, async invocations, guardrails): billable
    with unknown cost; only an error is read, in either framing."""

    def on_document(self, document: Any) -> None:
        if self.status >= 400:
            self.outcome.error_type = error_type(document)

    def on_stream_event(self, event_type: str, payload: bytes) -> None:
        pass

    def stream_complete(self) -> bool:
        return True

    def finish(self, eof: bool) -> ParseOutcome:
        self.outcome.extra["usage_not_parsed"] = True
        return super().finish(eof)


class CountTokensParser(NoUsageParser):
    """`{"inputTokens": N}`: a free count, kept in `extra`, never usage."""

    def on_document(self, document: Any) -> None:
        super().on_document(document)
        if isinstance(document, dict) and document.get("inputTokens") is not None:
            self.outcome.extra["counted_input_tokens"] = count(document["inputTokens"])


# ---- the provider ------------------------------------------------------------------------------------

THROTTLING_ERRORTYPE = "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"


class BedrockProvider(Provider):
    id = "provider.bedrock"
    name = "bedrock"
    hosts = ("bedrock-runtime.*.amazonaws.com", "bedrock-runtime-fips.*.amazonaws.com",
             "*.bedrock-runtime.*.vpce.amazonaws.com")
    price_provider_id = "aws"

    def route(self, method: str, path: str) -> Endpoint | None:
        if method != "POST":
            return OTHER
        parsed = parse_model_path(path)
        if parsed is not None:
            return _OPERATIONS[parsed[1]]
        if path.rstrip("/") == _OPENAI_CHAT:
            return CHAT
        if _PAID_OTHER.match(path):
            return USAGE_NOT_READ
        return OTHER

    def refusal(self, message: str, retry_after: int) -> tuple[int, dict[str, str], bytes]:
        """Bedrock's own ThrottlingException: the AWS SDKs raise it (and retry it) as usual."""
        headers = {"content-type": "application/json", "x-amzn-errortype": THROTTLING_ERRORTYPE}
        return 429, headers, json.dumps({"message": message}).encode()

    def inspect_request(
        self, endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> RequestFacts:
        if endpoint is CHAT:
            return json_request_facts(body)
        parsed = parse_model_path(path)
        if parsed is None:
            return RequestFacts()
        model, operation = parsed
        facts = RequestFacts(model_requested=model, stream_requested=operation in _STREAM_OPERATIONS)
        if endpoint not in (INVOKE, CONVERSE):
            return facts
        data = request_json(body)
        if isinstance(data, dict):
            limit = data.get("max_tokens") if endpoint is INVOKE else dig(data, "inferenceConfig", "maxTokens")
            if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
                facts.max_output_tokens = limit
            facts.session_id = session_from_request((), data)
            if isinstance(data, PartialDocument):  # over the read budget: read from both ends
                facts.extra["request_read"] = "partial"
        return facts

    def response_parser_for(
        self, endpoint: Endpoint, request: RequestFacts, status: int, headers: Mapping[str, str]
    ) -> ResponseParser:
        parser = self.response_parser(endpoint, request, status, headers.get("content-type", ""))
        if isinstance(parser, EventStreamBody):
            parser.read_headers(headers)
        return parser

    def response_parser(
        self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str
    ) -> ResponseParser:
        if endpoint is INVOKE:
            return InvokeParser(endpoint, request, status, content_type)
        if endpoint is CONVERSE:
            return ConverseParser(endpoint, request, status, content_type)
        if endpoint is COUNT_TOKENS:
            return CountTokensParser(endpoint, request, status, content_type, error_type_of=error_type)
        if endpoint is CHAT:
            return ChatParser(endpoint, request, status, content_type)
        if endpoint is USAGE_NOT_READ:
            return NotReadParser(endpoint, request, status, content_type)
        return NoUsageParser(endpoint, request, status, content_type, error_type_of=error_type)


@hookimpl
def halton_register_providers(register: Callable[[Provider], None]) -> None:
    register(BedrockProvider())
