"""Anthropic Messages provider: routing, request facts and the response parser.

Normative references: docs/providers/index.md, docs/providers/anthropic.md and docs/concepts/tokens.md (Anthropic row: input =
`input_tokens`, cache_read = `cache_read_input_tokens`, cache_write = `cache_creation_input_tokens` with its
1h part from `cache_creation.ephemeral_1h_input_tokens`, output = `output_tokens`, reasoning =
`output_tokens_details.thinking_tokens` else null; stream usage: `message_start` overridden field by field by
`message_delta`, never added).

Bodies are written the way api.anthropic.com sends them: compact JSON, `event:` + `data:` lines, LF endings.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halton_meter.testing.providers import compress, parse_call
from halton_meter.types import Endpoint, ParseOutcome, RequestFacts, Usage
from halton_meter_plugins.providers.anthropic import AnthropicCompatibleProvider

SSE = "text/event-stream; charset=utf-8"
JSON_CT = "application/json"
MODEL = "claude-sonnet-4-5-20250929"
MSG_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"

# --------------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------------


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def event(name: str, data: Any, eol: str = "\n") -> bytes:
    payload = data if isinstance(data, str) else dumps(data)
    return f"event: {name}{eol}data: {payload}{eol}{eol}".encode()


def message_start(usage: dict[str, Any], model: str = MODEL, msg_id: str = MSG_ID) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        },
    }


def message_delta(usage: dict[str, Any], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": usage}


START_USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 1500,
    "cache_read_input_tokens": 30000,
    "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000},
    "output_tokens": 1,
    "service_tier": "standard",
}


def text_blocks(eol: str = "\n") -> bytes:
    return b"".join(
        [
            event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}}, eol),
            event("ping", {"type": "ping"}, eol),
            event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": "Hello"}}, eol),
            event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                "type": "text_delta", "text": "! line\u2028sep \u00e9\U0001f600"}}, eol),
            event("content_block_stop", {"type": "content_block_stop", "index": 0}, eol),
        ]
    )


def stream(
    start_usage: dict[str, Any] | None = None,
    delta_usage: dict[str, Any] | None = None,
    *,
    eol: str = "\n",
    stop: bool = True,
    delta: bool = True,
) -> bytes:
    parts = [
        event("message_start", message_start(START_USAGE if start_usage is None else start_usage), eol),
        text_blocks(eol),
    ]
    if delta:
        parts.append(event("message_delta", message_delta({"output_tokens": 15} if delta_usage is None
                                                          else delta_usage), eol))
    if stop:
        parts.append(event("message_stop", {"type": "message_stop"}, eol))
    return b"".join(parts)


def message_json(usage: dict[str, Any], model: str = MODEL, **extra: Any) -> bytes:
    body = {
        "id": MSG_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Hi! My name is Claude."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
        **extra,
    }
    return dumps(body).encode()


def error_json(kind: str, message: str = "x") -> bytes:
    return dumps({"type": "error", "error": {"type": kind, "message": message},
                  "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}).encode()


REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, world"}],
}


def run(
    body: bytes,
    *,
    status: int = 200,
    content_type: str = SSE,
    path: str = "/v1/messages",
    method: str = "POST",
    request: dict[str, Any] | None = None,
    chunks: list[bytes] | None = None,
    eof: bool = True,
    provider: AnthropicCompatibleProvider | None = None,
) -> ParseOutcome:
    """The parser's outcome for `body` (or `chunks`, one per network read) through the test kit."""
    req = dict(REQUEST, stream=content_type.startswith("text/event-stream")) if request is None else request
    return parse_call(provider or AnthropicCompatibleProvider(), body if chunks is None else chunks, path=path,
                      method=method, request=req, status=status, response_headers={"content-type": content_type},
                      eof=eof).outcome


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --------------------------------------------------------------------------------------------------
# routing and request facts
# --------------------------------------------------------------------------------------------------

P = AnthropicCompatibleProvider()


@pytest.mark.parametrize(
    "method,path,kind,billable,inference",
    [
        ("POST", "/v1/messages", "messages", True, True),
        ("POST", "/v1/messages/", "messages", True, True),
        ("POST", "/v1/messages/count_tokens", "count_tokens", False, False),
        ("POST", "/v1/messages/batches", "batches", False, False),
        ("GET", "/v1/messages/batches", "batches", False, False),
        ("GET", "/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d", "batches", False, False),
        ("GET", "/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d/results", "batches.results", False, False),
        ("POST", "/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d/cancel", "batches", False, False),
        ("GET", "/v1/models", "other", False, False),
        ("GET", "/v1/models/claude-sonnet-4-5", "other", False, False),
        ("GET", "/v1/messages", "other", False, False),
        ("POST", "/v1/complete", "other", False, False),
        ("POST", "/v1/files", "other", False, False),
        ("POST", "/", "other", False, False),
        ("POST", "/v2/messages", "other", False, False),
        ("POST", "/v1messages", "other", False, False),
    ],
)
def test_route(method, path, kind, billable, inference):
    endpoint = P.route(method, path)
    assert isinstance(endpoint, Endpoint)
    assert (endpoint.kind, endpoint.billable, endpoint.inference) == (kind, billable, inference)


def test_route_claude_code_beta_query_is_stripped_by_caller():
    # Claude Code sends POST /v1/messages?beta=true; the core strips the query before route().
    path_with_query = "/v1/messages?beta=true"
    path = path_with_query.split("?", 1)[0]
    assert P.route("POST", path).kind == "messages"
    assert P.route("POST", "/v1/messages/count_tokens?beta=true".split("?", 1)[0]).kind == "count_tokens"


def test_route_custom_path_prefix():
    provider = AnthropicCompatibleProvider(id="provider.x", name="x", hosts=("api.x.example",),
                                           path_prefix="/anthropic/v1/")
    assert provider.route("POST", "/anthropic/v1/messages").kind == "messages"
    assert provider.route("POST", "/anthropic/v1/messages/count_tokens").kind == "count_tokens"
    assert provider.route("POST", "/v1/messages").kind == "other"


def test_provider_identity():
    assert P.id == "provider.anthropic"
    assert P.name == "anthropic"
    assert "api.anthropic.com" in P.hosts
    assert P.price_provider_id == "anthropic"


@pytest.mark.parametrize(
    "body,model,stream",
    [
        (dumps(dict(REQUEST, stream=True)).encode(), "claude-sonnet-4-5", True),
        (dumps(REQUEST).encode(), "claude-sonnet-4-5", False),
        (dumps(dict(REQUEST, stream="true")).encode(), "claude-sonnet-4-5", False),
        (dumps(dict(REQUEST, model=42)).encode(), None, False),
        (b"", None, False),
        (b"not json", None, False),
        (b"[1,2]", None, False),
    ],
)
def test_inspect_request(body, model, stream):
    facts = P.inspect_request(P.route("POST", "/v1/messages"), "/v1/messages", body)
    assert isinstance(facts, RequestFacts)
    assert facts.model_requested == model
    assert facts.stream_requested is stream


# --------------------------------------------------------------------------------------------------
# non-stream JSON
# --------------------------------------------------------------------------------------------------


def test_json_message_with_cache_read_write_and_1h_split():
    usage = dict(START_USAGE, output_tokens=503)
    out = run(message_json(usage), content_type=JSON_CT)
    assert out.usage == Usage(
        input_tokens=12,
        output_tokens=503,
        cache_read_tokens=30000,
        cache_write_tokens=1500,
        cache_write_1h_tokens=1000,
        reasoning_tokens=None,
    )
    assert out.usage_reported is True
    assert out.complete is True
    assert out.streamed is False
    assert out.model == MODEL
    assert out.error_type is None
    assert out.incomplete_reason is None
    assert out.provider_request_id == MSG_ID
    assert out.extra.get("service_tier") == "standard"
    assert "web_search_requests" not in out.extra


def test_json_message_plain_usage_without_cache_fields():
    out = run(message_json({"input_tokens": 2095, "output_tokens": 503}), content_type=JSON_CT)
    assert out.usage == Usage(input_tokens=2095, output_tokens=503)
    assert out.usage.reasoning_tokens is None
    assert out.usage_reported and out.complete


def test_json_message_null_cache_fields_are_zero():
    usage = {"input_tokens": 10, "cache_creation_input_tokens": None, "cache_read_input_tokens": None,
             "cache_creation": None, "output_tokens": 3, "server_tool_use": None, "service_tier": "standard"}
    out = run(message_json(usage), content_type=JSON_CT)
    assert out.usage == Usage(input_tokens=10, output_tokens=3)


def test_json_message_only_5m_cache_write():
    usage = {"input_tokens": 4, "cache_creation_input_tokens": 2048, "cache_read_input_tokens": 0,
             "cache_creation": {"ephemeral_5m_input_tokens": 2048, "ephemeral_1h_input_tokens": 0},
             "output_tokens": 9}
    out = run(message_json(usage), content_type=JSON_CT)
    assert out.usage.cache_write_tokens == 2048
    assert out.usage.cache_write_1h_tokens == 0


def test_json_message_thinking_tokens_as_reasoning():
    usage = {"input_tokens": 50, "output_tokens": 1200, "output_tokens_details": {"thinking_tokens": 900}}
    out = run(message_json(usage), content_type=JSON_CT)
    assert out.usage.output_tokens == 1200  # thinking is inside output_tokens, never added again
    assert out.usage.reasoning_tokens == 900
    assert out.usage.total_tokens == 1250


def test_json_message_thinking_tokens_zero_is_zero_not_none():
    usage = {"input_tokens": 5, "output_tokens": 7, "output_tokens_details": {"thinking_tokens": 0}}
    assert run(message_json(usage), content_type=JSON_CT).usage.reasoning_tokens == 0


def test_json_message_web_search_requests_in_extra():
    usage = {"input_tokens": 6039, "output_tokens": 931, "cache_read_input_tokens": 0,
             "cache_creation_input_tokens": 0,
             "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 0}}
    out = run(message_json(usage), content_type=JSON_CT)
    assert out.extra["web_search_requests"] == 3
    assert out.usage == Usage(input_tokens=6039, output_tokens=931)


def test_json_message_priority_tier():
    out = run(message_json({"input_tokens": 1, "output_tokens": 1, "service_tier": "priority"}),
              content_type=JSON_CT)
    assert out.extra["service_tier"] == "priority"


def test_json_message_gzip_encoded_body_decoded_first():
    body = message_json(dict(START_USAGE, output_tokens=77))
    whole = run(body, content_type=JSON_CT)
    out = parse_call(AnthropicCompatibleProvider(), pieces(compress(body, "gzip"), 5), path="/v1/messages",
                     request=dict(REQUEST, stream=False),
                     response_headers={"content-type": JSON_CT, "content-encoding": "gzip"}).outcome
    assert out == whole
    assert out.usage.output_tokens == 77 and out.usage.cache_write_1h_tokens == 1000


def test_json_message_cut_connection_is_not_parsed():
    body = message_json(dict(START_USAGE, output_tokens=77))
    out = run(body[: len(body) // 2], content_type=JSON_CT, eof=False)
    assert out.complete is False
    assert out.usage_reported is False
    assert out.incomplete_reason == "upstream_truncated"
    # even a complete document counts as truncated when the connection was cut
    out = run(body, content_type=JSON_CT, eof=False)
    assert out.complete is False and out.incomplete_reason == "upstream_truncated"


def test_json_message_garbage_body_on_200_is_parse_error():
    out = run(b"<html>bad gateway</html>", content_type=JSON_CT)
    assert out.incomplete_reason == "parse_error"
    assert out.complete is False
    assert out.usage_reported is False


def test_json_message_with_leading_blank_lines():
    out = run(b"\n\n\r\n" + message_json({"input_tokens": 3, "output_tokens": 4}), content_type=JSON_CT)
    assert out.usage == Usage(input_tokens=3, output_tokens=4)


def test_json_message_oversize_body():
    # Past the decoder's cap the core stops parsing: the record says so, whatever the parser made of it.
    call = parse_call(AnthropicCompatibleProvider(), [b" " * (1 << 20)] * 17, path="/v1/messages",
                      request=REQUEST, response_headers={"content-type": JSON_CT})
    assert call.record.incomplete_reason == "unparsed_oversize"
    assert call.record.complete is False
    assert call.record.usage_reported is False


# --------------------------------------------------------------------------------------------------
# error bodies (docs/providers/index.md, "Error bodies")
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,kind",
    [
        (529, "overloaded_error"),
        (429, "rate_limit_error"),
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (500, "api_error"),
    ],
)
def test_json_error_body(status, kind):
    out = run(error_json(kind, "Overloaded"), status=status, content_type=JSON_CT)
    assert out.error_type == kind
    assert out.usage_reported is False
    assert out.usage == Usage()
    assert out.model is None  # the core falls back to model_requested
    assert out.streamed is False


def test_stream_requested_but_json_error_returned():
    out = run(error_json("overloaded_error"), status=529, content_type="application/json",
              request=dict(REQUEST, stream=True))
    assert out.streamed is False
    assert out.error_type == "overloaded_error"
    assert out.usage_reported is False


def test_error_body_without_json_on_5xx_is_not_a_parse_error():
    out = run(b"upstream connect error", status=503, content_type="text/plain")
    assert out.incomplete_reason is None
    assert out.usage_reported is False


# --------------------------------------------------------------------------------------------------
# streams
# --------------------------------------------------------------------------------------------------


def test_stream_basic_output_override_from_message_delta():
    out = run(stream())
    assert out.streamed is True
    assert out.complete is True
    assert out.incomplete_reason is None
    assert out.usage_reported is True
    assert out.model == MODEL
    assert out.provider_request_id == MSG_ID
    assert out.usage == Usage(
        input_tokens=12,
        output_tokens=15,  # the delta's cumulative value replaces message_start's 1, never 16
        cache_read_tokens=30000,
        cache_write_tokens=1500,
        cache_write_1h_tokens=1000,
        reasoning_tokens=None,
    )
    assert out.error_type is None
    assert "oversize_events" not in out.extra


@pytest.mark.parametrize("eol", ["\r\n", "\r"], ids=["CRLF", "CR"])
def test_stream_other_line_endings(eol):
    assert run(stream(eol=eol)) == run(stream())


def test_stream_model_from_message_start_not_request():
    out = run(stream(), request=dict(REQUEST, model="claude-sonnet-4-5", stream=True))
    assert out.model == MODEL


def test_stream_newer_delta_with_cumulative_input_and_cache_fields_overrides_never_adds():
    start = {"input_tokens": 472, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
             "output_tokens": 2, "service_tier": "standard"}
    # with server tools, message_delta's input_tokens is larger than message_start's (tool results fed back)
    delta = {"input_tokens": 10682, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
             "output_tokens": 510, "server_tool_use": {"web_search_requests": 1}}
    out = run(stream(start, delta))
    assert out.usage == Usage(input_tokens=10682, output_tokens=510)
    assert out.extra["web_search_requests"] == 1
    assert out.complete


def test_stream_delta_cache_fields_override_start():
    delta = {"input_tokens": 20, "cache_creation_input_tokens": 1600, "cache_read_input_tokens": 31000,
             "output_tokens": 40}
    out = run(stream(START_USAGE, delta))
    assert out.usage == Usage(input_tokens=20, output_tokens=40, cache_read_tokens=31000,
                              cache_write_tokens=1600, cache_write_1h_tokens=1000)


def test_stream_fields_absent_or_null_in_delta_keep_start_values():
    delta = {"output_tokens": 99, "input_tokens": None, "cache_read_input_tokens": None}
    out = run(stream(START_USAGE, delta))
    assert out.usage == Usage(input_tokens=12, output_tokens=99, cache_read_tokens=30000,
                              cache_write_tokens=1500, cache_write_1h_tokens=1000)


def test_stream_delta_zero_overrides_start():
    # override means override: a present 0 replaces the start value (no "max" or "add" logic)
    delta = {"output_tokens": 5, "cache_read_input_tokens": 0}
    out = run(stream(START_USAGE, delta))
    assert out.usage.cache_read_tokens == 0


def test_stream_ttl_split_only_from_message_start():
    # a (hypothetical) cache_creation object in the delta must not change the 1h split
    delta = {"output_tokens": 5, "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                                    "ephemeral_1h_input_tokens": 1500}}
    out = run(stream(START_USAGE, delta))
    assert out.usage.cache_write_1h_tokens == 1000


def test_stream_1h_part_never_exceeds_cache_write():
    delta = {"output_tokens": 5, "cache_creation_input_tokens": 600}
    out = run(stream(START_USAGE, delta))
    assert out.usage.cache_write_tokens == 600
    assert out.usage.cache_write_1h_tokens <= out.usage.cache_write_tokens


def test_stream_thinking_tokens_in_delta():
    delta = {"output_tokens": 1800, "output_tokens_details": {"thinking_tokens": 1500}}
    out = run(stream({"input_tokens": 40, "output_tokens": 3}, delta))
    assert out.usage == Usage(input_tokens=40, output_tokens=1800, reasoning_tokens=1500)


def test_stream_without_thinking_breakdown_reasoning_none():
    assert run(stream()).usage.reasoning_tokens is None


def test_stream_web_search_from_delta_is_cumulative():
    start = {"input_tokens": 10, "output_tokens": 1, "server_tool_use": {"web_search_requests": 0}}
    delta = {"output_tokens": 50, "server_tool_use": {"web_search_requests": 2}}
    out = run(stream(start, delta))
    assert out.extra["web_search_requests"] == 2


def test_stream_multiple_message_deltas_take_last_values():
    body = b"".join([
        event("message_start", message_start(START_USAGE)),
        event("message_delta", message_delta({"output_tokens": 10})),
        event("message_delta", message_delta({"output_tokens": 25})),
        event("message_stop", {"type": "message_stop"}),
    ])
    out = run(body)
    assert out.usage.output_tokens == 25
    assert out.complete


def test_stream_complete_requires_message_delta_and_message_stop():
    # cut after message_delta: final numbers known, but no terminal event
    out = run(stream(stop=False), eof=False)
    assert out.complete is False
    assert out.usage.output_tokens == 15
    assert out.incomplete_reason == "upstream_truncated"
    # message_stop without a message_delta is not the final accounting either
    out = run(stream(delta=False))
    assert out.complete is False
    assert out.incomplete_reason == "upstream_truncated"


def test_stream_truncated_after_message_start():
    body = event("message_start", message_start(START_USAGE)) + text_blocks()[:60]
    for eof in (False, True):
        out = run(body, eof=eof)
        assert out.complete is False
        assert out.incomplete_reason == "upstream_truncated"
        assert out.usage_reported is True
        assert out.usage == Usage(input_tokens=12, output_tokens=1, cache_read_tokens=30000,
                                  cache_write_tokens=1500, cache_write_1h_tokens=1000)
        assert out.model == MODEL


def test_stream_cut_before_any_event():
    out = run(b"event: message_start\ndata: {\"type\":\"messa", eof=False)
    assert out.usage_reported is False
    assert out.complete is False
    assert out.incomplete_reason == "upstream_truncated"
    assert out.usage == Usage()


def test_stream_empty_body_eof():
    out = run(b"")
    assert out.usage_reported is False and out.complete is False
    assert out.incomplete_reason == "upstream_truncated"


def test_stream_final_message_stop_without_blank_line():
    body = stream()
    assert body.endswith(b"\n\n")
    out = run(body[:-2], eof=True)  # the body ended cleanly: close() dispatches the last event
    assert out.complete is True
    out = run(body[:-2], eof=False)  # cut: the last event is not trusted
    assert out.complete is False
    assert out.usage.output_tokens == 15


def test_stream_mid_stream_overloaded_error():
    body = b"".join([
        event("message_start", message_start(START_USAGE)),
        text_blocks(),
        event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ])
    for eof in (True, False):
        out = run(body, eof=eof)
        assert out.error_type == "overloaded_error"
        assert out.complete is False
        assert out.incomplete_reason == "stream_error"
        assert out.usage_reported is True
        assert out.usage.input_tokens == 12 and out.usage.output_tokens == 1
        assert out.usage.cache_read_tokens == 30000
        assert out.model == MODEL


def test_stream_error_after_message_delta_keeps_delta_usage():
    body = b"".join([
        event("message_start", message_start(START_USAGE)),
        event("message_delta", message_delta({"output_tokens": 300})),
        event("error", {"type": "error", "error": {"type": "api_error", "message": "Internal"}}),
    ])
    out = run(body)
    assert out.error_type == "api_error"
    assert out.usage.output_tokens == 300
    assert out.complete is False and out.incomplete_reason == "stream_error"


def test_stream_error_before_message_start():
    body = event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    out = run(body)
    assert out.error_type == "overloaded_error"
    assert out.usage_reported is False
    assert out.complete is False
    assert out.incomplete_reason == "stream_error"


def test_stream_error_event_with_unexpected_shape():
    out = run(event("error", {"type": "error", "error": "boom"}))
    assert out.error_type is not None
    assert out.complete is False


def test_stream_comments_and_unknown_events_ignored():
    body = b": keep-alive\n\n" + stream().replace(
        b"event: ping", b": comment\nevent: ping"
    ) + event("some_future_event", {"type": "some_future_event", "usage": {"output_tokens": 1e9}})
    out = run(body)
    assert out == run(stream())


def test_stream_oversize_event_skipped_and_counted():
    huge = {"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "x" * (9 * 1024 * 1024)}}
    body = b"".join([
        event("message_start", message_start(START_USAGE)),
        event("content_block_delta", huge),
        event("message_delta", message_delta({"output_tokens": 4000})),
        event("message_stop", {"type": "message_stop"}),
    ])
    out = run(b"", chunks=pieces(body, 1 << 20))
    assert out.extra["oversize_events"] == 1
    assert out.usage.output_tokens == 4000
    assert out.complete is True


# --------------------------------------------------------------------------------------------------
# count_tokens and batches: never usage
# --------------------------------------------------------------------------------------------------


def test_count_tokens_is_not_usage():
    endpoint = P.route("POST", "/v1/messages/count_tokens")
    assert endpoint.billable is False
    out = run(b'{"input_tokens":2095}', path="/v1/messages/count_tokens", content_type=JSON_CT)
    assert out.extra["counted_input_tokens"] == 2095
    assert out.usage_reported is False
    assert out.usage == Usage()
    assert out.error_type is None
    assert out.incomplete_reason is None


def test_count_tokens_error():
    out = run(error_json("invalid_request_error"), status=400, path="/v1/messages/count_tokens",
              content_type=JSON_CT)
    assert out.error_type == "invalid_request_error"
    assert "counted_input_tokens" not in out.extra
    assert out.usage_reported is False


def test_count_tokens_unparsable_is_not_parse_error():
    out = run(b"nope", path="/v1/messages/count_tokens", content_type=JSON_CT)
    assert out.incomplete_reason is None
    assert out.usage_reported is False


def test_batch_create_has_no_usage():
    batch = {"id": "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d", "type": "message_batch",
             "processing_status": "in_progress",
             "request_counts": {"processing": 2, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
             "ended_at": None, "created_at": "2024-09-24T18:37:24.100435Z",
             "expires_at": "2024-09-25T18:37:24.100435Z", "cancel_initiated_at": None, "results_url": None}
    out = run(dumps(batch).encode(), path="/v1/messages/batches", content_type=JSON_CT)
    assert out.usage_reported is False
    assert out.usage == Usage()


@pytest.mark.parametrize("content_type", ["application/x-jsonl", "application/octet-stream", ""])
def test_batch_results_jsonl_are_not_live_usage(content_type):
    lines = [
        {"custom_id": "my-first-request", "result": {"type": "succeeded", "message": json.loads(
            message_json({"input_tokens": 11, "output_tokens": 36, "service_tier": "batch"}))}},
        {"custom_id": "my-second-request", "result": {"type": "errored", "error": {
            "type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}}},
    ]
    body = b"\n".join(dumps(line).encode() for line in lines) + b"\n"
    out = run(body, method="GET", path="/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d/results",
              content_type=content_type)
    assert out.usage_reported is False
    assert out.usage == Usage()
    assert out.error_type is None
    # Informational only: what the batch consumed, at batch rates, never counted as live usage.
    assert out.extra["batch_usage"] == {"requests": 2, "succeeded": 1, "input_tokens": 11, "output_tokens": 36,
                                        "cache_read_tokens": 0, "cache_write_tokens": 0}


def test_other_endpoint_models_list():
    body = b'{"data":[{"type":"model","id":"claude-sonnet-4-5-20250929"}],"has_more":false}'
    out = run(body, method="GET", path="/v1/models", content_type=JSON_CT)
    assert out.usage_reported is False
    assert out.incomplete_reason is None


# --------------------------------------------------------------------------------------------------
# robustness and chunking properties
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        event("message_start", {"type": "message_start", "message": [1, 2]}),
        event("message_start", {"type": "message_start", "message": {"usage": "lots"}}),
        event("message_start", {"type": "message_start", "message": {"model": 7, "usage": {
            "input_tokens": "12", "output_tokens": -5, "cache_read_input_tokens": True,
            "cache_creation": [1]}}}),
        event("message_delta", {"type": "message_delta", "usage": None}),
        event("message_delta", "[DONE]"),
        b"data: {not json}\n\n",
        b"event: message_start\ndata: null\n\n",
    ],
)
def test_stream_odd_shapes_never_raise(body):
    out = run(body)
    assert isinstance(out, ParseOutcome)
    assert out.usage.input_tokens >= 0 and out.usage.output_tokens >= 0
    assert out.complete is False


def test_odd_numeric_values_clamped():
    usage = {"input_tokens": -3, "output_tokens": 12.0, "cache_read_input_tokens": "7",
             "cache_creation_input_tokens": False}
    out = run(message_json(usage), content_type=JSON_CT)
    assert out.usage == Usage(input_tokens=0, output_tokens=12)


@settings(max_examples=60, deadline=None)
@given(junk=st.binary(max_size=400), ct=st.sampled_from([SSE, JSON_CT]), status=st.sampled_from([200, 529]),
       eof=st.booleans())
def test_parser_never_raises_on_garbage(junk, ct, status, eof):
    out = run(junk, content_type=ct, status=status, eof=eof)
    assert isinstance(out, ParseOutcome)


FULL_STREAMS = [
    stream(),
    stream(eol="\r\n"),
    stream({"input_tokens": 472, "output_tokens": 2},
           {"input_tokens": 10682, "output_tokens": 510, "server_tool_use": {"web_search_requests": 1},
            "output_tokens_details": {"thinking_tokens": 200}}),
    stream(stop=False),
    b"".join([event("message_start", message_start(START_USAGE)), text_blocks(),
              event("error", {"type": "error", "error": {"type": "overloaded_error",
                                                         "message": "Overloaded"}})]),
    b": keep-alive\n\n" + stream()[:-1],
]


@settings(max_examples=120, deadline=None)
@given(data=st.data(), index=st.integers(0, len(FULL_STREAMS) - 1), eof=st.booleans())
def test_stream_any_split_gives_identical_outcome(data, index, eof):
    body = FULL_STREAMS[index]
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(body) - 1), max_size=40))))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert run(b"", chunks=chunks, eof=eof) == run(body, eof=eof)


@pytest.mark.parametrize("index", range(len(FULL_STREAMS)))
def test_stream_one_byte_chunks_identical_outcome(index):
    body = FULL_STREAMS[index]
    assert run(b"", chunks=pieces(body, 1)) == run(body)


FULL_JSON = [
    (200, "/v1/messages", message_json(dict(START_USAGE, output_tokens=503, output_tokens_details={
        "thinking_tokens": 100}, server_tool_use={"web_search_requests": 2}))),
    (529, "/v1/messages", error_json("overloaded_error")),
    (200, "/v1/messages/count_tokens", b'{"input_tokens":2095}'),
]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), index=st.integers(0, len(FULL_JSON) - 1))
def test_json_any_split_gives_identical_outcome(data, index):
    status, path, body = FULL_JSON[index]
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(body) - 1), max_size=30))))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    kwargs = dict(status=status, path=path, content_type=JSON_CT)
    assert run(b"", chunks=chunks, **kwargs) == run(body, **kwargs)


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "deflate"])
def test_stream_compressed_sse_decoded_first(encoding):
    body = stream()
    out = parse_call(AnthropicCompatibleProvider(), pieces(compress(body, encoding), 3), path="/v1/messages",
                     request=dict(REQUEST, stream=True),
                     response_headers={"content-type": SSE, "content-encoding": encoding}).outcome
    assert out == run(body)
