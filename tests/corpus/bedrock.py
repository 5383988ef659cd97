"""AWS Bedrock Runtime (docs/providers/bedrock.md). Bytes authored from the Bedrock Runtime API reference
(InvokeModel, InvokeModelWithResponseStream, Converse, ConverseStream, TokenUsage, ConverseStreamMetadataEvent),
Anthropic's Messages format as Bedrock serves it (`msg_bdrk_` ids, bare model names, a final chunk with
`amazon-bedrock-invocationMetrics`), Meta Llama's Bedrock response fields, and the AWS event-stream framing
(smithy's amazon-eventstream specification; botocore's decoder). Stream payloads carry Bedrock's `p` padding.

Prices per MTok, AWS list (Bedrock pricing page): Claude Sonnet 4.5 on a regional or geographic endpoint
$3.30 input, $16.50 output, $0.33 cache read, $4.125 cache write (5 min), $6.60 (1 h) — 10% over the global
endpoint's $3 / $15 / $0.30 / $3.75 / $6; Claude Haiku 4.5 global $1 / $5 / $0.10 / $1.25 / $2 (1 h);
Llama 3.3 70B Instruct $0.72 / $0.72. Anthropic's own list price for Claude 2.1 (not on the AWS list the
meter bundles): $8 / $24.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from importlib.metadata import version
from typing import Any

from corpus import Case, per_million

HOST = "bedrock-runtime.us-east-1.amazonaws.com"
EU_HOST = "bedrock-runtime.eu-central-1.amazonaws.com"
EVENT_STREAM = "application/vnd.amazon.eventstream"
SONNET_ID = "anthropic.claude-sonnet-4-5-20250929-v1:0"
US_SONNET = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
GLOBAL_HAIKU = "global.anthropic.claude-haiku-4-5-20251001-v1:0"
LLAMA = "meta.llama3-3-70b-instruct-v1:0"
SONNET = "claude-sonnet-4-5-20250929"
PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
REQUEST_ID = {"x-amzn-requestid": "4f7c1a52-8d1e-4c5f-9f0e-2b1c3d4e5f60"}

# ---- AWS event-stream framing --------------------------------------------------------------------------


def header(name: str, value: str) -> bytes:
    """One string header (value type 7)."""
    raw_name, raw_value = name.encode(), value.encode()
    return bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total, headers length, CRC32 of those 8 bytes), headers, payload,
    CRC32 of everything before it."""
    head = b"".join(header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + head + payload
    return body + struct.pack(">I", zlib.crc32(body))


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    return frame({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                 compact(payload))


def exception(exception_type: str, message: str) -> bytes:
    return frame({":exception-type": exception_type, ":content-type": "application/json",
                  ":message-type": "exception"}, compact({"message": message}))


def chunk(inner: dict[str, Any]) -> bytes:
    """InvokeModelWithResponseStream: the model's own JSON event, base64-encoded in a `chunk` payload."""
    return event("chunk", {"bytes": base64.b64encode(compact(inner)).decode(), "p": PAD[:7]})


# ---- Anthropic Messages as Bedrock serves it -----------------------------------------------------------


def usage(inp: int, out: int, read: int = 0, write: int = 0, write_1h: int = 0) -> dict[str, Any]:
    return {"input_tokens": inp, "cache_creation_input_tokens": write, "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": write - write_1h, "ephemeral_1h_input_tokens": write_1h},
            "output_tokens": out}


def message(model: str = SONNET, **u: int) -> bytes:
    return compact({"id": "msg_bdrk_01Yk8nB2mZ4qRUZb1mzR7x3V", "type": "message", "role": "assistant",
                    "model": model, "content": [{"type": "text", "text": "Hello — “unicode” ✓"}],
                    "stop_reason": "end_turn", "stop_sequence": None, "usage": usage(**u)})


def anthropic_stream(start: dict[str, Any], delta_out: int, metrics: dict[str, int] | None) -> list[bytes]:
    stop: dict[str, Any] = {"type": "message_stop"}
    if metrics is not None:
        stop["amazon-bedrock-invocationMetrics"] = {**metrics, "invocationLatency": 1843, "firstByteLatency": 402}
    return [
        chunk({"type": "message_start", "message": {"id": "msg_bdrk_01Yk8nB2mZ4qRUZb1mzR7x3V", "type": "message",
                                                     "role": "assistant", "model": SONNET, "content": [],
                                                     "stop_reason": None, "stop_sequence": None, "usage": start}}),
        chunk({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo ✓"}}),
        chunk({"type": "content_block_stop", "index": 0}),
        chunk({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
               "usage": {"output_tokens": delta_out}}),
        chunk(stop),
    ]


INVOKE_REQUEST = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 1024,
                  "messages": [{"role": "user", "content": "Hi"}]}

# ---- Converse ------------------------------------------------------------------------------------------

CONVERSE_REQUEST = {"messages": [{"role": "user", "content": [{"text": "Hi"}]}], "inferenceConfig": {"maxTokens": 512}}


def token_usage(inp: int, out: int, read: int = 0, write: int = 0, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"inputTokens": inp, "outputTokens": out, "totalTokens": inp + out + read + write}
    if read or write:
        body.update(cacheReadInputTokens=read, cacheWriteInputTokens=write)
    body.update(more)
    return body


def converse_stream(metadata_usage: dict[str, Any] | None) -> list[bytes]:
    events = [
        event("messageStart", {"p": PAD[:20], "role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}, "p": PAD[:11]}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo ✓"}, "p": PAD[:5]}),
        event("contentBlockStop", {"contentBlockIndex": 0, "p": PAD[:30]}),
        event("messageStop", {"p": PAD[:14], "stopReason": "end_turn"}),
    ]
    if metadata_usage is not None:
        events.append(event("metadata", {"metrics": {"latencyMs": 812}, "p": PAD[:3], "usage": metadata_usage}))
    return events


ARN = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{GLOBAL_HAIKU}"
ARN_PATH = "/model/" + ARN.replace(":", "%3A").replace("/", "%2F") + "/converse"

SONNET_REGIONAL = {"input": "3.30", "output": "16.50", "read": "0.33", "write": "4.125", "write_1h": "6.60"}

CASES = [
    Case(
        name="bedrock/invoke-json-anthropic-in-region",
        host=HOST, path=f"/model/{SONNET_ID}/invoke", request=INVOKE_REQUEST, response_headers=REQUEST_ID,
        response=message(inp=1200, out=340, read=5000, write=2000, write_1h=500),
        expect=dict(provider="bedrock", endpoint_kind="invoke", model=SONNET_ID, model_requested=SONNET_ID,
                    streamed=False, complete=True, billable=True, usage_reported=True, input_tokens=1200,
                    output_tokens=340, cache_read_tokens=5000, cache_write_tokens=2000, cache_write_1h_tokens=500,
                    error_type=None, provider_request_id="msg_bdrk_01Yk8nB2mZ4qRUZb1mzR7x3V",
                    extra={"price_as": "anthropic/claude-sonnet-4-5-20250929"},
                    cost_nanos=per_million((1200, "3.30"), (340, "16.50"), (5000, "0.33"), (1500, "4.125"),
                                           (500, "6.60"))),
    ),
    Case(
        name="bedrock/invoke-stream-anthropic-invocation-metrics",
        # botocore percent-encodes the model id's `:` (the Anthropic SDK leaves it as is).
        host=HOST, path=f"/model/{US_SONNET.replace(':', '%3A')}/invoke-with-response-stream",
        request=INVOKE_REQUEST, content_type=EVENT_STREAM,
        response=anthropic_stream(usage(inp=10, out=1, read=300, write=40), 57,
                                  {"inputTokenCount": 10, "outputTokenCount": 57, "cacheReadInputTokenCount": 300,
                                   "cacheWriteInputTokenCount": 40}),
        expect=dict(endpoint_kind="invoke", model=US_SONNET, model_requested=US_SONNET, streamed=True, complete=True,
                    incomplete_reason=None, input_tokens=10, output_tokens=57, cache_read_tokens=300,
                    cache_write_tokens=40, cost_nanos=per_million((10, "3.30"), (57, "16.50"), (300, "0.33"),
                                                                  (40, "4.125"))),
    ),
    Case(
        name="bedrock/invoke-stream-truncated",
        host=HOST, path=f"/model/{US_SONNET}/invoke-with-response-stream", request=INVOKE_REQUEST,
        content_type=EVENT_STREAM, cut=True,
        response=anthropic_stream(usage(inp=900, out=1), 99, None)[:3],
        expect=dict(streamed=True, complete=False, incomplete_reason="upstream_truncated", usage_reported=True,
                    billable=True, input_tokens=900, output_tokens=1,
                    cost_nanos=per_million((900, "3.30"), (1, "16.50"))),
    ),
    Case(
        name="bedrock/invoke-stream-model-stream-error-mid-stream",
        host=EU_HOST, path=f"/model/eu.{SONNET_ID}/invoke-with-response-stream", request=INVOKE_REQUEST,
        content_type=EVENT_STREAM,
        response=[*anthropic_stream(usage(inp=300, out=1), 50, None)[:3],
                  exception("modelStreamErrorException", "Model stream error: the model returned an error.")],
        expect=dict(status=200, streamed=True, complete=False, error_type="modelStreamErrorException",
                    incomplete_reason="stream_error", usage_reported=True, input_tokens=300, output_tokens=1,
                    model=f"eu.{SONNET_ID}"),
    ),
    Case(
        name="bedrock/invoke-stream-llama-invocation-metrics",
        host=HOST, path=f"/model/{LLAMA}/invoke-with-response-stream", content_type=EVENT_STREAM,
        request={"prompt": "Hi", "max_gen_len": 256},
        response=[
            chunk({"generation": "Hel", "prompt_token_count": 18, "generation_token_count": 1, "stop_reason": None}),
            chunk({"generation": "lo", "prompt_token_count": None, "generation_token_count": 2, "stop_reason": None}),
            chunk({"generation": "", "prompt_token_count": None, "generation_token_count": 3, "stop_reason": "stop",
                   "amazon-bedrock-invocationMetrics": {"inputTokenCount": 18, "outputTokenCount": 3,
                                                        "invocationLatency": 312, "firstByteLatency": 201}}),
        ],
        expect=dict(model=LLAMA, streamed=True, complete=True, usage_reported=True, input_tokens=18, output_tokens=3,
                    cache_read_tokens=0, extra={"price_as": "meta/llama3-3-70b-instruct"},
                    cost_nanos=per_million((18, "0.72"), (3, "0.72"))),
    ),
    Case(
        name="bedrock/invoke-json-legacy-claude-anthropic-list-price",
        host=HOST, path="/model/anthropic.claude-v2:1/invoke", request=INVOKE_REQUEST,
        response=message(model="claude-2.1", inp=500, out=100),
        expect=dict(model="anthropic.claude-v2:1", input_tokens=500, output_tokens=100,
                    price_source=f"genai-prices {version('genai-prices')} (anthropic list price)",
                    cost_nanos=per_million((500, "8"), (100, "24"))),
    ),
    Case(
        name="bedrock/converse-arn-inference-profile-cache-1h",
        host=HOST, path=ARN_PATH, request=CONVERSE_REQUEST, response_headers=REQUEST_ID,
        response=compact({"metrics": {"latencyMs": 1204},
                          "output": {"message": {"content": [{"text": "Hi ✓"}], "role": "assistant"}},
                          "stopReason": "end_turn",
                          "usage": token_usage(4, 240, read=1500, write=800,
                                               cacheDetails=[{"inputTokens": 300, "ttl": "1h"},
                                                             {"inputTokens": 500, "ttl": "5m"}])}),
        expect=dict(endpoint_kind="converse", model=GLOBAL_HAIKU, model_requested=ARN, streamed=False, complete=True,
                    billable=True, usage_reported=True, input_tokens=4, output_tokens=240, cache_read_tokens=1500,
                    cache_write_tokens=800, cache_write_1h_tokens=300,
                    extra={"provider_latency_ms": 1204, "price_as": "anthropic/claude-haiku-4-5-20251001"},
                    cost_nanos=per_million((4, "1"), (240, "5"), (1500, "0.10"), (500, "1.25"), (300, "2"))),
    ),
    Case(
        name="bedrock/converse-stream-metadata-usage",
        host=EU_HOST, path=f"/model/{US_SONNET}/converse-stream", request=CONVERSE_REQUEST, content_type=EVENT_STREAM,
        response=converse_stream(token_usage(25, 48, read=2048)),
        expect=dict(endpoint_kind="converse", model=US_SONNET, streamed=True, complete=True, incomplete_reason=None,
                    input_tokens=25, output_tokens=48, cache_read_tokens=2048, cache_write_tokens=0,
                    cost_nanos=per_million((25, "3.30"), (48, "16.50"), (2048, "0.33"))),
    ),
    Case(
        name="bedrock/converse-stream-throttling-mid-stream",
        host=HOST, path=f"/model/{US_SONNET}/converse-stream", request=CONVERSE_REQUEST, content_type=EVENT_STREAM,
        response=[*converse_stream(None)[:2],
                  exception("throttlingException", "Too many tokens, please wait before trying again.")],
        expect=dict(status=200, streamed=True, complete=False, error_type="throttlingException",
                    incomplete_reason="stream_error", usage_reported=False, billable=True, priced=False),
    ),
    Case(
        name="bedrock/converse-stream-cut-before-metadata",
        host=HOST, path=f"/model/{US_SONNET}/converse-stream", request=CONVERSE_REQUEST, content_type=EVENT_STREAM,
        cut=True, response=converse_stream(None),
        expect=dict(streamed=True, complete=False, incomplete_reason="upstream_truncated", usage_reported=False,
                    billable=True, priced=False),
    ),
    Case(
        name="bedrock/error-400-validation",
        host=HOST, path=f"/model/{SONNET_ID}/invoke", request=INVOKE_REQUEST, status=400,
        response_headers={"x-amzn-errortype": "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
                          **REQUEST_ID},
        response=b'{"message":"Malformed input request: #: required key [messages] not found, please reformat your input and try again."}',
        # The type is only in the x-amzn-errortype header (before its `:`).
        expect=dict(status=400, error_type="ValidationException", billable=False, usage_reported=False,
                    complete=True, cost_nanos=0, model=SONNET_ID,
                    provider_request_id="4f7c1a52-8d1e-4c5f-9f0e-2b1c3d4e5f60"),
    ),
    Case(
        name="bedrock/invoke-json-llama-usage-from-headers",
        # A non-Anthropic InvokeModel body: Bedrock states the token counts in response headers.
        host=HOST, path=f"/model/{LLAMA}/invoke", request={"prompt": "Say hi", "max_gen_len": 16},
        response_headers={"x-amzn-bedrock-input-token-count": "18", "x-amzn-bedrock-output-token-count": "3",
                          "x-amzn-bedrock-invocation-latency": "211", **REQUEST_ID},
        response=b'{"generation":" Hi there!","prompt_token_count":18,"generation_token_count":3,"stop_reason":"stop"}',
        expect=dict(endpoint_kind="invoke", model=LLAMA, streamed=False, complete=True, billable=True,
                    usage_reported=True, input_tokens=18, output_tokens=3,
                    extra={"price_as": "meta/llama3-3-70b-instruct", "usage_from": "response headers"},
                    cost_nanos=per_million((18, "0.72"), (3, "0.72"))),
    ),
    Case(
        name="bedrock/count-tokens-not-billable",
        host=HOST, path=f"/model/{SONNET_ID}/count-tokens",
        request={"input": {"invokeModel": {"body": json.dumps(INVOKE_REQUEST)}}},
        response=b'{"inputTokens":123}',
        expect=dict(endpoint_kind="count_tokens", billable=False, usage_reported=False, cost_nanos=0,
                    extra={"counted_input_tokens": 123}),
    ),
]
