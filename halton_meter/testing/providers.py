"""Test a provider plugin without a proxy: bytes in, the record the meter would write out.

Every helper here drives `halton_meter.core.pipeline.CallPipeline`, the object the running core uses for
each call (read the request, choose the parser, feed each network read, build the record), with a fixed
clock, a fixed record id and no time budget per read, so the same bytes always give the same record.

    from halton_meter.testing.providers import parse_response

    record = parse_response(MyProvider(), b'{"usage": {"input": 3, "output": 5}}',
                            path="/v1/generate", request={"model": "m-1"})
    assert (record.input_tokens, record.output_tokens, record.complete) == (3, 5, True)

* `parse_response`: a response body (whole, as a list of network reads, or split at offsets) → record.
* `replay`: a recorded exchange as it was on the wire (request and response bytes and headers) → record.
* `parse_call`: the same as both, returning the parser's outcome, the request facts and the bytes the
  client and the provider would have received, besides the record.
* `assert_any_split_gives_the_same_record`: a hypothesis property, split the body anywhere (down to one
  byte at a time) and the record must not change. `split_points` is its strategy, `comparable` the
  record without its id, for properties of your own. These two need `hypothesis` installed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from halton_meter.core.pipeline import CallPipeline
from halton_meter.types import CallRecord, ParseOutcome, Provider, RequestFacts

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "FIXED_TIME", "RECORD_ID", "ParsedCall", "assert_any_split_gives_the_same_record", "comparable", "compress",
    "parse_call", "parse_response", "replay", "split_points",
]

FIXED_TIME = "2026-11-22T12:00:00.000000Z"
"""The `started_at` and `ended_at` of every record the kit builds (prices can depend on the date)."""
RECORD_ID = "00000000-0000-4000-8000-000000000000"
JSON = "application/json"
SSE = "text/event-stream"


@dataclass
class ParsedCall:
    record: CallRecord
    outcome: ParseOutcome
    """What the provider's parser returned from `finish` (before the core's record rules)."""
    facts: RequestFacts
    """What the provider read from the request (`inspect_request`, and any request rewrite)."""
    client_bytes: bytes
    """The response body as the client would receive it (after any stream rewriter)."""
    upstream_request: bytes
    """The request body as the provider would receive it (after any request rewrite)."""


def compress(data: bytes, encoding: str) -> bytes:
    """`data` with a content-encoding applied: gzip, deflate, br or zstd, or a list of them in the order
    they were applied (`"gzip, br"`), as the header names them."""
    from halton_meter.testing.fake_provider import _compress

    for token in encoding.split(","):
        data = _compress(data, token.strip().lower())  # type: ignore[arg-type]
    return data


def _request_bytes(request: bytes | Mapping[str, Any] | None) -> bytes:
    if request is None:
        return b""
    if isinstance(request, bytes):
        return request
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode()


def _reads(response: bytes | Sequence[bytes], split: Sequence[int] | None) -> list[bytes]:
    if split is None:
        return [response] if isinstance(response, bytes) else list(response)
    whole = response if isinstance(response, bytes) else b"".join(response)
    cuts = sorted({c for c in split if 0 < c < len(whole)})
    return [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]


def parse_call(
    provider: Provider,
    response: bytes | Sequence[bytes],
    *,
    path: str,
    request: bytes | Mapping[str, Any] | None = None,
    method: str = "POST",
    host: str | None = None,
    status: int = 200,
    request_headers: Mapping[str, str] | None = None,
    response_headers: Mapping[str, str] | None = None,
    split: Sequence[int] | None = None,
    eof: bool = True,
    pricer: Any = None,
    started_at: str = FIXED_TIME,
) -> ParsedCall:
    """One call through the core's per-call pipeline. `response` is the body exactly as on the wire (already
    compressed when `response_headers` name a content-encoding): whole, or one element per network read;
    `split` re-cuts it at those offsets. `eof=False`: the connection was cut after the last byte. `path`
    includes any query string; `request` is bytes, or a dict sent as compact JSON. `pricer` (a
    `halton_meter.pricing.Pricer`) fills `cost_nanos`, `priced` and `price_source`."""
    bare = path.split("?", 1)[0]
    endpoint = provider.route(method, bare)
    if endpoint is None:
        raise AssertionError(f"{provider.name} does not route {method} {bare}")
    call = CallPipeline(provider=provider, endpoint=endpoint, method=method,
                        host=host or (provider.hosts[0] if provider.hosts else "provider.invalid"), path=path,
                        started_at=started_at, record_id=RECORD_ID, clock=lambda: 0.0,
                        wall=lambda: started_at, parse_budget=None)
    sent = _request_bytes(request)
    req_headers = {k.lower(): v for k, v in (request_headers or {}).items()}
    try:
        body = call.read_request(sent, req_headers)
        replacement = call.rewrite_request(body, req_headers)
    except Exception as exc:  # as in the core: an unreadable request is still forwarded and recorded
        call.request_failed(exc)
        replacement = None
    upstream = replacement if replacement is not None else sent
    call.request_sent()
    call.start_response(status, {k.lower(): v for k, v in (response_headers or {"content-type": JSON}).items()})
    client = bytearray()
    for piece in [*_reads(response, split), *([b""] if eof else [])]:
        out = call.tee(piece)
        client += b"".join(out) if isinstance(out, list) else out
    record = call.finish(eof)
    if pricer is not None:
        price = pricer.price(record)
        record.cost_nanos, record.priced, record.price_source = price.cost_nanos, price.priced, price.source
    return ParsedCall(record=record, outcome=call.outcome or ParseOutcome(), facts=call.facts,
                      client_bytes=bytes(client), upstream_request=upstream)


def parse_response(
    provider: Provider,
    body: bytes | Sequence[bytes],
    *,
    path: str,
    request: bytes | Mapping[str, Any] | None = None,
    content_type: str = JSON,
    status: int = 200,
    method: str = "POST",
    encoding: str | None = None,
    split: Sequence[int] | None = None,
    eof: bool = True,
    pricer: Any = None,
    **more: Any,
) -> CallRecord:
    """The record for `body` (uncompressed; `encoding` compresses it on the wire first) answered with
    `status` and `content_type` to `method path` carrying `request`. Other keywords: see `parse_call`."""
    headers = {"content-type": content_type, **more.pop("response_headers", {})}
    if encoding:
        whole = body if isinstance(body, bytes) else b"".join(body)
        body, headers["content-encoding"] = compress(whole, encoding), encoding
    return parse_call(provider, body, path=path, request=request, method=method, status=status,
                      response_headers=headers, split=split, eof=eof, pricer=pricer, **more).record


def replay(
    provider: Provider,
    request: bytes | Mapping[str, Any] | None,
    response: bytes | Sequence[bytes],
    *,
    path: str,
    request_headers: Mapping[str, str] | None = None,
    response_headers: Mapping[str, str] | None = None,
    status: int = 200,
    method: str = "POST",
    eof: bool = True,
    **more: Any,
) -> CallRecord:
    """A recorded exchange → its record: the request body and headers as the client sent them, the response
    headers and body bytes as the provider sent them (compressed if its headers say so)."""
    return parse_call(provider, response, path=path, request=request, method=method, status=status,
                      request_headers=request_headers, response_headers=response_headers, eof=eof, **more).record


def comparable(record: CallRecord) -> dict[str, Any]:
    """The record's public fields without its id: what two parses of the same call must agree on."""
    public = record.to_public()
    public.pop("id", None)
    return public


def split_points(size: int, max_splits: int = 12) -> SearchStrategy[list[int]]:
    """Offsets to cut a body of `size` bytes at: a few anywhere, or (bodies under 4 KiB) every byte."""
    from hypothesis import strategies as st

    if size <= 1:
        return st.just([])
    anywhere = st.lists(st.integers(0, size), max_size=max_splits)
    if size < 4096:
        return st.one_of(anywhere, st.just(list(range(1, size))))
    return anywhere


def assert_any_split_gives_the_same_record(provider: Provider, response: bytes | Sequence[bytes], *,
                                           max_examples: int = 50, **call: Any) -> None:
    """The property every provider's parser must have: however the network cuts the response body, the
    record is the one the whole body gives. Runs hypothesis (`max_examples` splits, plus one byte at a
    time); raises AssertionError naming the first split that changes the record. `call`: `parse_call`'s
    keywords (`path` at least)."""
    from hypothesis import HealthCheck, given, settings

    whole = response if isinstance(response, bytes) else b"".join(response)
    expected = comparable(parse_call(provider, whole, **call).record)

    @settings(max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(split=split_points(len(whole)))
    def property_(split: list[int]) -> None:
        got = comparable(parse_call(provider, whole, split=split, **call).record)
        assert got == expected, f"split at {split} changes the record"

    property_()
