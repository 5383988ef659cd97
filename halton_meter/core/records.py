"""From what a provider's parser learned to a call record: the one place the record rules live.

Pure: the addon calls it with what it observed on the wire; tests call it with fixtures, so a corpus
case fed straight to a parser and the same case replayed through the proxy must give the same record.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass

from halton_meter.attribution.client_family import client_family
from halton_meter.redact import CREDENTIAL_QUERY_PARAMS, redact_path, safe_error_type, safe_extra
from halton_meter.types import CallRecord, Endpoint, ParseOutcome, Provider, RequestFacts

__all__ = [
    "CREDENTIAL_QUERY_PARAMS", "Observed", "build_record", "provisional_record", "redact_path", "stored_path",
]


def stored_path(provider: Provider, path: str) -> str:
    """The request path as a record stores it: credentials redacted by name (the built-in names and the
    provider's `secret_query_params`) and by shape (`halton_meter.redact.redact_path`). Cached: a call's
    provisional and final records, and every call to the same endpoint, ask for the same path."""
    return _stored_path(path, frozenset(CREDENTIAL_QUERY_PARAMS | {p.lower() for p in provider.secret_query_params}))


@functools.lru_cache(maxsize=1024)
def _stored_path(path: str, secret_params: frozenset[str]) -> str:
    return redact_path(path, secret_params)


@dataclass(slots=True)
class Observed:
    """What the core saw of one call, besides the parser's outcome."""

    method: str
    host: str
    path: str
    started_at: str
    ended_at: str
    status: int | None
    eof: bool
    """The response body ended as its framing said it should."""
    latency_ms: float | None = None
    ttft_ms: float | None = None
    decode_failure: str | None = None
    """`unparsed_oversize`, or why the body could not be decoded for parsing."""
    request_problem: str | None = None
    connection_error: str | None = None
    client_gone: bool = False
    shutdown: bool = False
    """The core was stopping and the grace period ran out before the call ended."""
    response_request_id: str | None = None
    user_agent: str | None = None


def build_record(
    provider: Provider, endpoint: Endpoint, facts: RequestFacts, outcome: ParseOutcome, seen: Observed,
    record_id: str | None = None,
) -> CallRecord:
    # Parsers fill `extra` and `error_type` from provider responses: only labels and identifiers are kept,
    # whatever a plugin put there (halton_meter.redact). The core's own diagnostics are added below.
    extra = safe_extra(outcome.extra)
    complete = outcome.complete and seen.eof and seen.decode_failure is None
    incomplete_reason = outcome.incomplete_reason
    if seen.decode_failure is not None:
        incomplete_reason = "unparsed_oversize" if seen.decode_failure == "unparsed_oversize" else "parse_error"
        extra["decode_failure"] = seen.decode_failure
    if seen.request_problem is not None:
        extra["request_problem"] = seen.request_problem
    error_type = outcome.error_type
    if seen.status is None:
        error_type = error_type or "network"
        incomplete_reason = incomplete_reason or "no_response"
    elif not seen.eof:
        if seen.shutdown:
            incomplete_reason = "shutdown"
        elif seen.client_gone:
            incomplete_reason = "client_disconnected"
        if seen.connection_error:
            extra.setdefault("connection_error", seen.connection_error[:200])
    error_type = safe_error_type(error_type, seen.status, incomplete_reason)
    if seen.status is not None and seen.status >= 400 and error_type is None:
        error_type = f"http_{seen.status}"
    if complete:
        incomplete_reason = None
    usage = outcome.usage if outcome.usage_reported or outcome.estimated else None
    # Billable: this kind of call costs tokens, and either usage was reported, or the provider accepted the
    # request (HTTP success) without closing its accounting as a failure. So a stream cut or broken after a
    # 200 without usage is billable with unknown cost (it may well have been charged for what it generated:
    # never a silent $0), while a terminal failure event without usage (`response.failed`) is not.
    accepted = seen.status is not None and seen.status < 400
    failed_with_final_accounting = outcome.complete and outcome.error_type is not None
    billable = endpoint.billable and (outcome.usage_reported or (accepted and not failed_with_final_accounting))
    if facts.usage_injected:
        extra["usage_injected"] = True
    return CallRecord(
        id=record_id or str(uuid.uuid4()),
        started_at=seen.started_at,
        ended_at=seen.ended_at,
        provider=provider.name,
        endpoint_kind=endpoint.kind,
        host=seen.host,
        method=seen.method,
        path=stored_path(provider, seen.path),
        model=outcome.model or facts.model_requested,
        model_requested=facts.model_requested,
        streamed=outcome.streamed,
        status=seen.status,
        complete=complete,
        billable=billable,
        usage_reported=outcome.usage_reported,
        estimated=outcome.estimated,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cache_read_tokens=usage.cache_read_tokens if usage else 0,
        cache_write_tokens=usage.cache_write_tokens if usage else 0,
        cache_write_1h_tokens=usage.cache_write_1h_tokens if usage else 0,
        reasoning_tokens=usage.reasoning_tokens if usage else None,
        error_type=error_type,
        incomplete_reason=incomplete_reason,
        billing=facts.billing or provider.billing,
        latency_ms=seen.latency_ms,
        ttft_ms=seen.ttft_ms if outcome.streamed else None,
        client=client_family(seen.user_agent),
        user_agent=seen.user_agent,
        provider_request_id=outcome.provider_request_id or seen.response_request_id,
        extra=extra,
        price_provider_id=facts.price_provider_id or provider.price_provider_id,
        session_id=facts.session_id,
    )


def provisional_record(record_id: str, provider: Provider, endpoint: Endpoint, facts: RequestFacts,
                       method: str, host: str, path: str, started_at: str) -> CallRecord:
    """The row written when a request is forwarded, replaced by the final one when the call ends; if the
    core dies first, start-up marks it `core_crash`, so a crash leaves a visibly incomplete row."""
    return CallRecord(
        id=record_id,
        started_at=started_at,
        provider=provider.name,
        endpoint_kind=endpoint.kind,
        host=host,
        method=method,
        path=stored_path(provider, path),
        model=facts.model_requested,
        model_requested=facts.model_requested,
        billable=endpoint.billable,
        incomplete_reason="in_progress",
        billing=facts.billing or provider.billing,
        price_provider_id=facts.price_provider_id or provider.price_provider_id,
        session_id=facts.session_id,
    )
