"""One metered call, from the request to its record: the per-call sequence the addon runs for each flow.

`CallPipeline` holds everything one call learns and does the steps in the core's order:

* `read_request(body, headers)`: decode a compressed request copy (capped), let the provider read the
  model and stream intent (`inspect_request`); `rewrite_request(body)` may then change the request bytes.
* `start_response(status, headers)`: pick the parser, the body decoder and any stream rewriter.
* `tee(chunk)`: decode and parse one network read (bounded in time), keep the capture copy, and return
  what the client gets (the rewriter's output, or the chunk untouched). `b""` marks the end of the body.
* `finish(eof, ...)`: the record, built by `halton_meter.core.records.build_record` from the parser's
  outcome and what was observed. If building it fails, `degraded(reason)` gives the record anyway.

The addon (halton_meter/core/addon.py) adds mitmproxy, attribution and the writer around it; the test kit
(halton_meter/testing/providers.py) drives the same object with bytes, so a provider tested through the
kit is tested through the core's own sequence.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from halton_meter.attribution.client_family import client_family
from halton_meter.clock import utc_stamp
from halton_meter.core.records import Observed, build_record, provisional_record, stored_path
from halton_meter.ratelimits import session_from_request, snapshots
from halton_meter.redact import is_identifier
from halton_meter.types import CallRecord, Endpoint, ParseOutcome, Provider, RequestFacts, StreamRewriter
from halton_meter.wire import DEFAULT_DECODED_CAP, BodyDecoder, DecodeLimitExceeded, UnsupportedEncoding

log = structlog.get_logger("halton_meter.core")

PARSE_SLICE = 16 * 1024
PARSE_BUDGET_SECONDS = 0.1
"""Most time one network read may spend being decoded and parsed for the meter (the bytes themselves reach
the client untouched): past it, the rest of that body is not parsed and the call is `unparsed_oversize`.
Real reads take a few milliseconds; only a decompression bomb of tiny events gets near this."""

RECORD_FACTS = ("rewrite_skipped", "rewrite_failed", "request_read", "parse_budget_exceeded")
"""Request facts (`RequestFacts.extra`) the record shows in its `extra`."""


class ParseBudgetExceeded(Exception):
    pass


@dataclass
class CallPipeline:
    """One call's metering state and steps (see the module docstring for the order)."""

    provider: Provider
    endpoint: Endpoint
    method: str
    host: str
    """As the record shows it: `name`, or `name:port` off 443."""
    path: str
    """The request path as sent, query included (the record stores it redacted)."""
    started_at: str = ""
    user_agent: str | None = None
    key_fingerprint: str | None = None
    record_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    clock: Callable[[], float] = time.monotonic
    """Monotonic seconds for latency and time to first byte (the test kit passes a fixed one)."""
    wall: Callable[[], str] = utc_stamp
    """The wall-clock time a record shows (`started_at`, `ended_at`)."""
    parse_budget: float | None = PARSE_BUDGET_SECONDS
    """None: no time limit per read (the test kit, so a slow machine cannot change a record)."""
    capture_max_bytes: int = 256 * 1024
    facts: RequestFacts = field(default_factory=RequestFacts)
    started_mono: float = 0.0
    sent_mono: float | None = None
    first_byte_mono: float | None = None
    parser: object | None = None
    decoder: BodyDecoder | None = None
    rewriter: StreamRewriter | None = None
    decode_failure: str | None = None
    request_problem: str | None = None
    status: int | None = None
    response_request_id: str | None = None
    outcome: ParseOutcome | None = None
    """The parser's outcome, once `finish` ran."""
    capture: dict[str, object] | None = None
    plan: list[dict[str, Any]] | None = None
    """The response's plan and rate-limit snapshots (`halton_meter.ratelimits`), for the final record."""
    refused_by: str | None = None
    """The budget that refused the call (core/budgetgate.py): answered with a 429, never sent upstream."""
    finished: bool = False

    def __post_init__(self) -> None:
        if not self.started_at:
            self.started_at = self.wall()
        if not self.started_mono:
            self.started_mono = self.clock()

    # ---- the request -------------------------------------------------------------------------------

    @property
    def bare_path(self) -> str:
        return self.path.split("?", 1)[0]

    def read_request(self, body: bytes, headers: dict[str, str]) -> bytes:
        """The provider's facts about the request; returns the body as read (a decoded copy when the client
        compressed it). Raises when the body cannot be read: the caller then calls `request_failed`."""
        encoding = headers.get("content-encoding")
        if encoding:  # e.g. Codex sends zstd request bodies; decode a copy, capped, for reading only
            decoder = BodyDecoder(encoding)
            body = decoder.decode(body) + decoder.flush()
        path = self.path if self.provider.inspect_query else self.bare_path
        self.facts = self.provider.inspect_request(self.endpoint, path, body, headers)
        if self.facts.session_id is None:
            self.facts.session_id = session_from_request(headers.items(), None)
        return body

    def rewrite_request(self, body: bytes, headers: dict[str, str]) -> bytes | None:
        """New request bytes when the provider changes the request; never for a compressed body (a client's
        compressed body is never re-encoded just to add a field)."""
        if headers.get("content-encoding"):
            return None
        return self.provider.rewrite_request(self.endpoint, self.facts, body)

    def request_failed(self, exc: BaseException) -> None:
        """A request we cannot read is still forwarded and still recorded."""
        self.facts = RequestFacts()
        self.request_problem = f"request body unreadable: {type(exc).__name__}"

    def request_sent(self) -> None:
        self.sent_mono = self.clock()

    def provisional(self) -> CallRecord:
        """The in-progress row written when the request is forwarded."""
        return provisional_record(self.record_id, self.provider, self.endpoint, self.facts, self.method,
                                  self.host, self.path, self.started_at)

    def start_capture(self, body: bytes) -> None:
        """Hold the bodies (capped) while the call runs; the addon keeps them only for a captured project."""
        limit = self.capture_max_bytes
        self.capture = {"request": bytes(body[:limit]), "request_truncated": len(body) > limit,
                        "response": bytearray(), "response_truncated": False}

    # ---- the response ------------------------------------------------------------------------------

    def start_response(self, status: int, headers: dict[str, str]) -> None:
        """Headers are lower-cased names. Never raises: a failure is the record's `decode_failure`."""
        self.status = status
        self.response_request_id = headers.get("request-id") or headers.get("x-amzn-requestid")
        try:
            self.plan = snapshots(headers.items(), time.time(), provider=self.provider.name,
                                  account=self.key_fingerprint) or None
        except Exception as exc:  # never: the parser swallows what it cannot read; a bug costs the snapshot only
            log.error("reading rate-limit headers failed", error=type(exc).__name__)
        try:
            self.parser = self.provider.response_parser_for(self.endpoint, self.facts, status, headers)
            # A parser may take more than the default cap when it keeps only the ends of a huge body.
            cap = getattr(self.parser, "decoded_cap", DEFAULT_DECODED_CAP)
            self.decoder = BodyDecoder(headers.get("content-encoding"), cap=cap)
            rewriter = self.provider.response_rewriter(self.endpoint, self.facts, status, headers)
            if rewriter is not None:
                if self.decoder.identity and "content-length" not in headers:
                    self.rewriter = rewriter
                else:  # cannot change bytes of a compressed or length-framed body: forward untouched
                    self.facts.extra["rewrite_skipped"] = "compressed or length-framed response"
        except UnsupportedEncoding as exc:
            # The token is the provider's header value: named only when it is an identifier.
            self.decode_failure = "unsupported content-encoding" + (f" {exc}" if is_identifier(str(exc)) else "")
        except Exception as exc:  # the exception's text may echo the response: only its type is kept
            self.decode_failure = f"parser setup failed: {type(exc).__name__}"

    def feed(self, chunk: bytes) -> None:
        """One network read into the parser (decoded, in slices, within the time budget); `b""`: the end."""
        if chunk and self.first_byte_mono is None:
            self.first_byte_mono = self.clock()
        if self.decode_failure is not None or self.parser is None or self.decoder is None:
            return
        try:
            pieces = self.decoder.pieces(chunk) if chunk else self.decoder.flush_pieces()
            started = time.perf_counter()
            for data in pieces:
                for offset in range(0, len(data), PARSE_SLICE):
                    self.parser.feed(data[offset:offset + PARSE_SLICE])  # type: ignore[attr-defined]
                    if self.parse_budget is not None and time.perf_counter() - started > self.parse_budget:
                        raise ParseBudgetExceeded
                if self.capture is not None:
                    self._capture_response(data)
        except ParseBudgetExceeded:
            # A read that decodes into a flood of tiny events (a compression bomb of `data: x`) would hold
            # the event loop, and every other call, for seconds: stop reading this body instead.
            self.decode_failure = "unparsed_oversize"
            self.facts.extra["parse_budget_exceeded"] = True
        except DecodeLimitExceeded:
            self.decode_failure = "unparsed_oversize"
        except Exception as exc:
            self.decode_failure = f"undecodable body: {type(exc).__name__}"

    def rewrite(self, chunk: bytes) -> bytes | list[bytes]:
        """What the client gets for this read: the rewriter's output, or the chunk untouched."""
        if self.rewriter is None:
            return chunk
        try:
            out = self.rewriter.rewrite(chunk) if chunk else self.rewriter.flush()
        except Exception as exc:  # a rewriter bug must not corrupt the stream: stop rewriting, flag the record
            log.error("stream rewriter failed; forwarding untouched", error=f"{type(exc).__name__}: {exc}")
            self.rewriter = None
            self.facts.extra["rewrite_failed"] = type(exc).__name__
            return chunk
        # An empty list, not b"": an empty chunk must never reach the client's framing.
        return [out] if out else []

    def tee(self, chunk: bytes) -> bytes | list[bytes]:
        """`feed` then `rewrite`: the addon's `flow.response.stream` callback."""
        self.feed(chunk)
        return self.rewrite(chunk)

    def _capture_response(self, data: bytes) -> None:
        captured = self.capture["response"]  # type: ignore[index]
        room = self.capture_max_bytes - len(captured)  # type: ignore[arg-type]
        if room > 0:
            captured += data[:room]  # type: ignore[operator]
        if len(data) > room:
            self.capture["response_truncated"] = True  # type: ignore[index]

    # ---- the record --------------------------------------------------------------------------------

    def finish(self, eof: bool, *, connection_error: str | None = None, shutdown: bool = False) -> CallRecord:
        """The call's record. `eof`: the body ended as its framing said it should. Never raises: when the
        record cannot be built, the degraded record says so (`internal: <exception type>`)."""
        self.finished = True
        try:
            record = self._record(eof, connection_error, shutdown)
        except Exception as exc:  # never lose the call: write what we know
            log.error("building record failed", error=f"{type(exc).__name__}: {exc}")
            record = self.degraded(f"internal: {type(exc).__name__}")
        if self.capture is not None:
            record.capture = self.capture  # raw for now: decided and redacted once the project is known
        return record

    def _record(self, eof: bool, connection_error: str | None, shutdown: bool) -> CallRecord:
        now = self.clock()
        outcome = ParseOutcome()
        if self.parser is not None:
            outcome = self.parser.finish(eof and self.decode_failure is None)  # type: ignore[attr-defined]
        self.outcome = outcome
        for key in RECORD_FACTS:  # facts the record should show
            if self.facts.extra.get(key):
                outcome.extra[key] = self.facts.extra[key]
        sent = self.sent_mono if self.sent_mono is not None else self.started_mono
        seen = Observed(
            method=self.method,
            host=self.host,
            path=self.path,
            started_at=self.started_at,
            ended_at=self.wall(),
            status=self.status,
            eof=eof,
            latency_ms=round((now - sent) * 1000, 3),
            ttft_ms=round((self.first_byte_mono - sent) * 1000, 3) if self.first_byte_mono is not None else None,
            decode_failure=self.decode_failure,
            request_problem=self.request_problem,
            connection_error=connection_error,
            client_gone=bool(connection_error and "client" in connection_error.lower()),
            shutdown=shutdown,
            response_request_id=self.response_request_id,
            user_agent=self.user_agent,
        )
        record = build_record(self.provider, self.endpoint, self.facts, outcome, seen, record_id=self.record_id)
        record.key_fingerprint = self.key_fingerprint
        record.plan = self.plan
        if self.refused_by is not None:  # visible as a row, costing nothing
            record.error_type, record.billable, record.complete = "budget_exceeded", False, True
            record.cost_nanos, record.priced, record.price_source = 0, True, "budget"
            record.extra = {**record.extra, "budget": self.refused_by}
        return record

    def degraded(self, reason: str) -> CallRecord:
        """The record of a call whose full record could not be built: what is known without the parser."""
        return CallRecord(
            id=self.record_id,
            started_at=self.started_at,
            ended_at=self.wall(),
            provider=self.provider.name,
            endpoint_kind=self.endpoint.kind,
            host=self.host,
            method=self.method,
            path=stored_path(self.provider, self.bare_path),
            status=self.status,
            incomplete_reason=reason,
            user_agent=self.user_agent,
            client=client_family(self.user_agent),
            key_fingerprint=self.key_fingerprint,
            billing=self.facts.billing or self.provider.billing,
            price_provider_id=self.facts.price_provider_id or self.provider.price_provider_id,
        )
