"""The parser skeleton shared by provider plugins: pick SSE or JSON framing from the content type, feed
events or the parsed body to provider-specific handlers, and never raise on bad input."""

from __future__ import annotations

from typing import Any

from halton_meter.plugin import (
    DEFAULT_DECODED_CAP,
    REQUEST_SCAN_TOKENS,
    Endpoint,
    JSONAccumulator,
    OverBudget,
    ParseOutcome,
    PartialDocument,
    Provider,
    RequestFacts,
    SSEDecoder,
    SSEEvent,
    load_json,
    session_from_request,
)


def count(value: Any) -> int:
    """A token count from JSON: non-negative int, anything else (null, string, bool, negative) is 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(int(value), 0)


def optional_count(value: Any) -> int | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(int(value), 0)


def dig(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]…, or None as soon as a level is missing or not a dict."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def request_json(body: bytes) -> Any:
    """A request body's JSON within the JSON budget (`halton_meter.wire.load_json`): the document, or for one
    over the budget the members a targeted read recovers (a PartialDocument: `model` and `stream` sit at
    the top level, before or after the big `messages`), or None (empty, not JSON, nothing readable)."""
    if not body:
        return None
    try:
        return load_json(body, partial=True, max_tokens=REQUEST_SCAN_TOKENS)
    except ValueError:
        return None


def _max_output(data: dict[str, Any]) -> int | None:
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def json_request_facts(body: bytes) -> RequestFacts:
    """`model` and `stream` from a JSON request body (OpenAI- and Anthropic-style)."""
    data = request_json(body)
    if not isinstance(data, dict):
        return RequestFacts()
    model = data.get("model")
    facts = RequestFacts(
        model_requested=model if isinstance(model, str) else None,
        stream_requested=data.get("stream") is True,
        extra={"include_usage": dig(data, "stream_options", "include_usage") is True},
        session_id=session_from_request((), data),
        max_output_tokens=_max_output(data),
    )
    if isinstance(data, PartialDocument):
        facts.extra["request_read"] = "partial"
    return facts


def is_event_stream(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


class BodyParser:
    """Base response parser. Subclasses implement `on_event` (streams) and `on_document` (whole bodies).

    Every JSON value is read within the JSON budget (`halton_meter.wire.load_json`). A whole body over the
    budget is read from its two ends (a PartialDocument reaches `on_document`, and `extra["partial_read"]`
    names what was skipped); if that yields no usage for a successful inference call, or nothing at all,
    the record is `unparsed_oversize`. Stream handlers read each event with `read_json`."""

    partial_descend: tuple[str, ...] = ()
    """Top-level members that hold what this parser reads (e.g. `response`): an over-budget value is read
    one level down into them, from both ends (`halton_meter.wire.load_json`)."""
    decoded_cap = DEFAULT_DECODED_CAP
    """Most decoded body bytes the core feeds this parser. Past the JSON accumulator's own cap a body is
    kept only as its two ends, so a parser whose usage sits at the end of a legitimately huge body
    (embeddings) may raise this without raising memory."""

    def __init__(self, endpoint: Endpoint, request: RequestFacts, status: int, content_type: str) -> None:
        self.endpoint = endpoint
        self.request = request
        self.status = status
        self.outcome = ParseOutcome()
        self._sse: SSEDecoder | None = None
        self._json: JSONAccumulator | None = None
        self._over_budget_events = 0
        if is_event_stream(content_type):
            self._sse = SSEDecoder()
            self.outcome.streamed = True
        else:
            self._json = JSONAccumulator(partial=True, descend=self.partial_descend)

    def feed(self, data: bytes) -> None:
        if self._sse is not None:
            for event in self._sse.feed(data):
                self._event(event)
        elif self._json is not None:
            self._json.feed(data)

    def read_json(self, text: str | bytes) -> Any:
        """One stream event's (or element's) JSON within the budget: the value; for an object over the
        budget the members a targeted read recovers (a PartialDocument, counted in
        `extra["partial_events"]`); or None: not JSON, or over the budget with nothing readable (counted
        with the oversize events)."""
        try:
            value = load_json(text, partial=True, descend=self.partial_descend)
        except OverBudget:
            self._over_budget_events += 1
            return None
        except ValueError:
            return None
        if isinstance(value, PartialDocument):
            self.outcome.extra["partial_events"] = self.outcome.extra.get("partial_events", 0) + 1
        return value

    def oversize_events(self) -> int:
        """Events skipped for their size or their JSON budget."""
        return (self._sse.oversize if self._sse is not None else 0) + self._over_budget_events

    def finish(self, eof: bool) -> ParseOutcome:
        """`eof`: the body ended as HTTP framing says it should. False: the connection was cut."""
        outcome = self.outcome
        if self._sse is not None:
            if eof:
                for event in self._sse.close():
                    self._event(event)
            oversize = self.oversize_events()
            if oversize:
                outcome.extra["oversize_events"] = oversize
            if not outcome.complete and outcome.incomplete_reason is None:
                outcome.incomplete_reason = "unparsed_oversize" if eof and oversize else "upstream_truncated"
        elif self._json is not None:
            document = self._json.parse() if eof else None
            if self._json.oversize:
                outcome.incomplete_reason = "unparsed_oversize"
            elif not eof:
                outcome.incomplete_reason = "upstream_truncated"
            elif isinstance(document, PartialDocument):
                self._partial_document(document)
            elif document is not None:
                self._safe(self.on_document, document)
            elif self.status < 400 and self.endpoint.inference:
                outcome.incomplete_reason = "parse_error"
            outcome.complete = outcome.incomplete_reason is None
        return outcome

    def _partial_document(self, document: PartialDocument) -> None:
        outcome = self.outcome
        outcome.extra["partial_read"] = {"read": "top-level members from both ends", "unread": document.unread}
        self._safe(self.on_document, document)
        if self.status < 400 and self.endpoint.inference and not outcome.usage_reported:
            outcome.incomplete_reason = outcome.incomplete_reason or "unparsed_oversize"

    def _event(self, event: SSEEvent) -> None:
        self._safe(self.on_event, event)

    def _safe(self, handler: Any, arg: Any) -> None:
        try:
            handler(arg)
        except Exception as exc:  # a surprising shape must cost one record's detail, never the proxy
            # Only the exception's type and where it happened: its message may quote the provider's data
            # (a KeyError names a key from the response, a ValueError quotes a value).
            where = getattr(handler, "__name__", "handler")
            self.outcome.extra.setdefault("parser_errors", []).append(f"{type(exc).__name__} in {where}")

    def on_event(self, event: SSEEvent) -> None:
        raise NotImplementedError

    def on_document(self, document: Any) -> None:
        raise NotImplementedError


class NoUsageParser(BodyParser):
    """For endpoints that never carry usage: only the error type (if any) is read."""

    def __init__(self, *args: Any, error_type_of: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._error_type_of = error_type_of

    def on_event(self, event: SSEEvent) -> None:
        pass

    def on_document(self, document: Any) -> None:
        if self._error_type_of is not None and self.status >= 400:
            self.outcome.error_type = self._error_type_of(document)


USAGE_NOT_READ = Endpoint("usage_not_read", billable=True)
"""Paid calls whose usage this plugin does not parse (audio, some vendors' secondary APIs): recorded as
billable with unknown cost rather than as free calls."""


class UnparsedParser(NoUsageParser):
    """For a paid call whose usage is not parsed: reads only the error; a stream that ends cleanly is whole."""

    def finish(self, eof: bool) -> ParseOutcome:
        self.outcome.extra["usage_not_parsed"] = True
        if eof and self.outcome.streamed and self.outcome.error_type is None:
            self.outcome.complete = True
        return super().finish(eof)


__all__ = [
    "USAGE_NOT_READ",
    "UnparsedParser",
    "BodyParser",
    "Endpoint",
    "NoUsageParser",
    "ParseOutcome",
    "Provider",
    "RequestFacts",
    "count",
    "dig",
    "is_event_stream",
    "json_request_facts",
    "optional_count",
    "request_json",
]
