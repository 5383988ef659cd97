"""Anthropic Messages API (docs/providers/anthropic.md). Sonnet 4.5 list prices per MTok: input $3, output $15,
cache read $0.30, cache write 5m $3.75, 1h $6; above 200k prompt tokens: $6 / $22.50 / $0.60 / $7.50 / $12.
Opus 4.1: $15 / $75. Haiku 3.5: $0.80 / $4."""

from __future__ import annotations

from corpus import Case, per_million, sse

MODEL = "claude-sonnet-4-5-20250929"
HOST = "api.anthropic.com"
REQUEST = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hi"}]}
STREAM_REQUEST = {**REQUEST, "stream": True}


def usage(inp: int, out: int, read: int = 0, write: int = 0, write_1h: int = 0, **more: object) -> dict:
    return {
        "input_tokens": inp,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": write - write_1h, "ephemeral_1h_input_tokens": write_1h},
        "output_tokens": out,
        "service_tier": "standard",
        **more,
    }


def message(model: str = MODEL, **u: object) -> bytes:
    import json

    body = {"id": "msg_01", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Hello — “unicode” ✓ \u2028 ok"}],
            "stop_reason": "end_turn", "stop_sequence": None, "usage": usage(**u)}  # type: ignore[arg-type]
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def stream(start_usage: dict, delta_usage: dict, texts: tuple[str, ...] = ("Hel", "lo"), eol: str = "\n",
           model: str = MODEL) -> list[bytes]:
    events = [
        sse({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
             "model": model, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}},
            "message_start", eol),
        sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start", eol),
        sse({"type": "ping"}, "ping", eol),
    ]
    events += [sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
                   "content_block_delta", eol) for t in texts]
    events += [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop", eol),
        sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": delta_usage}, "message_delta", eol),
        sse({"type": "message_stop"}, "message_stop", eol),
    ]
    return events


SONNET = dict(input="3", output="15", read="0.30", write="3.75", write_1h="6")

CASES = [
    Case(
        name="anthropic/json-cache-read-write-1h",
        host=HOST, path="/v1/messages", request=REQUEST,
        response=message(inp=1200, out=340, read=5000, write=2000, write_1h=500),
        expect=dict(provider="anthropic", endpoint_kind="messages", model=MODEL, model_requested="claude-sonnet-4-5",
                    streamed=False, complete=True, billable=True, usage_reported=True, billing="api",
                    input_tokens=1200, output_tokens=340, cache_read_tokens=5000, cache_write_tokens=2000,
                    cache_write_1h_tokens=500, reasoning_tokens=None, error_type=None,
                    cost_nanos=per_million((1200, "3"), (340, "15"), (5000, "0.30"), (1500, "3.75"), (500, "6"))),
    ),
    Case(
        name="anthropic/stream-beta-query-cumulative-delta",
        host=HOST, path="/v1/messages?beta=true", request=STREAM_REQUEST, sse=True,
        # Newer API versions repeat input and cache fields in message_delta (cumulative: they override).
        response=stream(usage(inp=10, out=1, read=300, write=40), {"input_tokens": 12, "output_tokens": 57,
                                                                   "cache_read_input_tokens": 300,
                                                                   "cache_creation_input_tokens": 40}),
        expect=dict(streamed=True, complete=True, input_tokens=12, output_tokens=57, cache_read_tokens=300,
                    cache_write_tokens=40, cache_write_1h_tokens=0, incomplete_reason=None,
                    cost_nanos=per_million((12, "3"), (57, "15"), (300, "0.30"), (40, "3.75"))),
    ),
    Case(
        name="anthropic/stream-crlf-legacy-delta-keeps-start-values",
        host=HOST, path="/v1/messages", request=STREAM_REQUEST, sse=True,
        response=stream(usage(inp=2500, out=1, write=1000, write_1h=1000), {"output_tokens": 812}, eol="\r\n",
                        texts=("ü", "日本", "\U0001F600")),
        expect=dict(complete=True, input_tokens=2500, output_tokens=812, cache_write_tokens=1000,
                    cache_write_1h_tokens=1000,
                    cost_nanos=per_million((2500, "3"), (812, "15"), (1000, "6"))),
    ),
    Case(
        name="anthropic/stream-truncated-after-start",
        host=HOST, path="/v1/messages", request=STREAM_REQUEST, sse=True, cut=True,
        response=stream(usage(inp=900, out=1), {"output_tokens": 99})[:4],
        expect=dict(complete=False, incomplete_reason="upstream_truncated", usage_reported=True, billable=True,
                    input_tokens=900, output_tokens=1, cost_nanos=per_million((900, "3"), (1, "15"))),
    ),
    Case(
        name="anthropic/stream-overloaded-mid-stream",
        host=HOST, path="/v1/messages", request=STREAM_REQUEST, sse=True,
        response=[*stream(usage(inp=300, out=1), {"output_tokens": 50})[:4],
                  sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")],
        expect=dict(status=200, complete=False, error_type="overloaded_error", incomplete_reason="stream_error",
                    usage_reported=True, input_tokens=300, output_tokens=1),
    ),
    Case(
        name="anthropic/error-529-json",
        host=HOST, path="/v1/messages", request=REQUEST, status=529,
        response=b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}',
        expect=dict(status=529, error_type="overloaded_error", billable=False, usage_reported=False,
                    complete=True, cost_nanos=0, priced=True, model="claude-sonnet-4-5"),
    ),
    Case(
        name="anthropic/error-429-gzip",
        host=HOST, path="/v1/messages", request=REQUEST, status=429, encoding="gzip",
        response=b'{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}',
        expect=dict(status=429, error_type="rate_limit_error", billable=False, cost_nanos=0),
    ),
    Case(
        name="anthropic/json-brotli-opus",
        host=HOST, path="/v1/messages", request={**REQUEST, "model": "claude-opus-4-1"}, encoding="br",
        response=message(model="claude-opus-4-1-20250805", inp=100, out=20),
        expect=dict(model="claude-opus-4-1-20250805", input_tokens=100, output_tokens=20,
                    cost_nanos=per_million((100, "15"), (20, "75"))),
    ),
    Case(
        name="anthropic/long-context-tier-counts-cached-tokens",
        host=HOST, path="/v1/messages", request=REQUEST,
        response=message(inp=150_000, out=1000, read=100_000),
        expect=dict(input_tokens=150_000, cache_read_tokens=100_000,
                    cost_nanos=per_million((150_000, "6"), (100_000, "0.60"), (1000, "22.50"))),
    ),
    Case(
        name="anthropic/count-tokens-not-billable",
        host=HOST, path="/v1/messages/count_tokens?beta=true", request=REQUEST,
        response=b'{"input_tokens":2095}',
        expect=dict(endpoint_kind="count_tokens", billable=False, usage_reported=False, input_tokens=0,
                    cost_nanos=0, extra={"counted_input_tokens": 2095}),
    ),
    Case(
        name="anthropic/oauth-subscription-login",
        host=HOST, path="/v1/messages?beta=true", request=STREAM_REQUEST, sse=True,
        request_headers={"authorization": "Bearer sk-ant-oat01-CANARYOAUTHTOKEN", "anthropic-beta": "oauth-2025-04-20"},
        response=stream(usage(inp=4, out=1, read=20000, write=300), {"output_tokens": 120}),
        expect=dict(billing="subscription", input_tokens=4, cache_read_tokens=20000,
                    cost_nanos=per_million((4, "3"), (20000, "0.30"), (300, "3.75"), (120, "15"))),
    ),
    Case(
        name="anthropic/batch-create-not-a-live-call",
        host=HOST, path="/v1/messages/batches", request={"requests": []},
        response=b'{"id":"msgbatch_01","type":"message_batch","processing_status":"in_progress"}',
        expect=dict(endpoint_kind="batches", billable=False, usage_reported=False, cost_nanos=0),
    ),
]


def _batch_line(custom_id: str, result: dict) -> bytes:
    import json

    return json.dumps({"custom_id": custom_id, "result": result}, separators=(",", ":")).encode() + b"\n"


_BATCH_OK = {"type": "succeeded", "message": {"id": "msg_b1", "type": "message", "model": MODEL, "role": "assistant",
             "content": [], "usage": {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 0,
                                      "cache_creation_input_tokens": 0, "service_tier": "batch"}}}

CASES += [
    Case(
        name="anthropic/batch-results-jsonl-informational",
        host=HOST, path="/v1/messages/batches/msgbatch_01/results", method="GET", request=None,
        content_type="application/binary",
        response=[_batch_line("a", _BATCH_OK), _batch_line("b", _BATCH_OK),
                  _batch_line("c", {"type": "errored", "error": {"type": "invalid_request"}})],
        expect=dict(endpoint_kind="batches.results", billable=False, usage_reported=False, cost_nanos=0,
                    extra={"batch_usage": {"requests": 3, "succeeded": 2, "input_tokens": 200, "output_tokens": 40,
                                           "cache_read_tokens": 0, "cache_write_tokens": 0}}),
    ),
    Case(
        name="anthropic/web-search-and-fetch",
        host=HOST, path="/v1/messages", request=REQUEST,
        response=message(inp=5000, out=400, server_tool_use={"web_search_requests": 2, "web_fetch_requests": 1}),
        expect=dict(input_tokens=5000, output_tokens=400,
                    extra={"service_tier": "standard", "web_search_requests": 2, "web_fetch_requests": 1},
                    cost_nanos=per_million((5000, "3"), (400, "15")) + 2 * 10_000_000),
    ),
]
