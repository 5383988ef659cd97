"""Google Vertex AI (docs/providers/vertex.md): Claude through rawPredict / streamRawPredict, Gemini through
generateContent / streamGenerateContent, on regional, global and express-mode paths.

List prices per MTok. Claude (Anthropic's list, the same on Vertex's global endpoint): Sonnet 4.5 input $3, output
$15, cache read $0.30, 5-minute cache write $3.75; Haiku 4.5 $1 / $5 / $0.10 / $1.25; Opus 4.1 $15 / $75. Anthropic
documents a 10% premium on regional and multi-region endpoints for Sonnet 4.5 and later models ("Claude on Vertex
AI", https://platform.claude.com/docs/en/build-with-claude/claude-on-vertex-ai), so at `us-east5` Sonnet 4.5 is
$3.30 / $16.50 / $0.33 / $4.125 and Haiku 4.5 $1.10 / $5.50; older models (Opus 4.1) keep their price.
Gemini (https://cloud.google.com/vertex-ai/generative-ai/pricing): 2.5 Flash $0.30 in, $0.03 cached, $2.50 out;
2.5 Pro $1.25 / $0.125 / $10.
"""

from __future__ import annotations

import json
from typing import Any

from corpus import Case, per_million, sse

REGIONAL = "us-east5-aiplatform.googleapis.com"
EUROPE = "europe-west1-aiplatform.googleapis.com"
GLOBAL = "aiplatform.googleapis.com"
PROJECT = "acme-prod-4711"
TOKEN_HEADER = {"authorization": "Bearer ya29.CANARY-vertex-access-token-0000000000"}
SONNET_ID, SONNET = "claude-sonnet-4-5@20250929", "claude-sonnet-4-5-20250929"
HAIKU_ID, HAIKU = "claude-haiku-4-5@20251001", "claude-haiku-4-5-20251001"
OPUS_41_ID, OPUS_41 = "claude-opus-4-1@20250805", "claude-opus-4-1-20250805"
FLASH, PRO = "gemini-2.5-flash", "gemini-2.5-pro"
MSG_ID = "msg_vrtx_01Hq8xJmZzL4kQGd3YpTnW"
RESPONSE_ID = "q2TvaNKrFpO1nvgPwKfnyQo"
CLAUDE_REQUEST = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 1024,
                  "messages": [{"role": "user", "content": "PROMPT-CANARY: how does a meter read Vertex?"}]}
CLAUDE_STREAM_REQUEST = {**CLAUDE_REQUEST, "stream": True}
GEMINI_REQUEST = {"contents": [{"role": "user", "parts": [{"text": "PROMPT-CANARY: explain metering."}]}]}
SONNET_REGIONAL = dict(input="3.30", output="16.50", read="0.33", write="4.125")


def dumps(obj: Any, indent: int | None = None) -> bytes:
    if indent is None:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return json.dumps(obj, indent=indent, ensure_ascii=False).encode()


def claude_path(model: str, method: str, location: str = "us-east5", version: str = "v1") -> str:
    return f"/{version}/projects/{PROJECT}/locations/{location}/publishers/anthropic/models/{model}:{method}"


def gemini_path(model: str, method: str, location: str = "europe-west1", query: str = "") -> str:
    return f"/v1/projects/{PROJECT}/locations/{location}/publishers/google/models/{model}:{method}{query}"


# ---- Claude bodies (Anthropic Messages, as Vertex returns them: `msg_vrtx_` ids, dated model ids) ----------------


def claude_usage(inp: int, out: int, read: int = 0, write: int = 0) -> dict[str, Any]:
    return {"input_tokens": inp, "cache_creation_input_tokens": write, "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": write, "ephemeral_1h_input_tokens": 0},
            "output_tokens": out}


def claude_message(model: str, usage: dict[str, Any]) -> bytes:
    return dumps({"id": MSG_ID, "type": "message", "role": "assistant", "model": model,
                  "content": [{"type": "text", "text": "It reads the usage — “ünïcode” ✓"}],
                  "stop_reason": "end_turn", "stop_sequence": None, "usage": usage})


def claude_stream(model: str, start: dict[str, Any], delta: dict[str, Any],
                  texts: tuple[str, ...] = ("Hel", "lo ✓")) -> list[bytes]:
    events = [
        sse({"type": "message_start", "message": {"id": MSG_ID, "type": "message", "role": "assistant",
             "model": model, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start}},
            "message_start"),
        sse({"type": "ping"}, "ping"),
        sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start"),
    ]
    events += [sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
                   "content_block_delta") for t in texts]
    events += [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": delta},
            "message_delta"),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    return events


def rpc_error(code: int, status: str, message: str) -> bytes:
    return dumps({"error": {"code": code, "message": message, "status": status}}, indent=2)


# ---- Gemini bodies -------------------------------------------------------------------------------


def meta(prompt: int, candidates: int, thoughts: int | None = None, cached: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
                            "totalTokenCount": prompt + candidates + (thoughts or 0), "trafficType": "ON_DEMAND",
                            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
                            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": candidates}]}
    if cached is not None:
        body["cachedContentTokenCount"] = cached
    if thoughts is not None:
        body["thoughtsTokenCount"] = thoughts
    return body


def gemini_chunk(text: str, finish: str | None, usage: dict[str, Any] | None, model: str = FLASH) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    if finish:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        body["usageMetadata"] = usage
    body.update(modelVersion=model, createTime="2026-11-22T12:00:00.123456Z", responseId=RESPONSE_ID)
    return body


def array_stream(chunks: list[dict[str, Any]]) -> list[bytes]:
    """Vertex's JSON-array stream: `[{…}`, then `,\\r\\n{…}` per element, then `]`."""
    pieces = [b"[" + dumps(chunks[0], indent=2)]
    pieces += [b",\r\n" + dumps(c, indent=2) for c in chunks[1:]]
    return [*pieces, b"\n]"]


FLASH_STREAM = [
    gemini_chunk("Un", None, meta(4096, 5, cached=2048)),
    gemini_chunk(" mètre", None, meta(4096, 40, cached=2048)),
    gemini_chunk(" ✓", "STOP", meta(4096, 77, cached=2048)),
]
PRO_STREAM = [
    gemini_chunk("Reading", None, meta(900, 10, thoughts=512), model=PRO),
    gemini_chunk(" the last usageMetadata.", "STOP", meta(900, 130, thoughts=512), model=PRO),
]

CLAUDE = dict(provider="vertex", endpoint_kind="messages", billable=True, billing="api")
GEMINI = dict(provider="vertex", endpoint_kind="generate_content", billable=True, billing="api",
              cache_write_tokens=0)
ARRAY_CT = "application/json; charset=UTF-8"

CASES = [
    # ---- Claude ----
    Case(
        name="vertex/claude-json-regional-sonnet-4-5-premium",
        host=REGIONAL, path=claude_path(SONNET_ID, "rawPredict"), request=CLAUDE_REQUEST,
        request_headers=TOKEN_HEADER,
        response=claude_message(SONNET, claude_usage(1200, 340, read=5000, write=2000)),
        expect=dict(**CLAUDE, model=SONNET, model_requested=SONNET_ID, streamed=False, complete=True,
                    usage_reported=True, input_tokens=1200, output_tokens=340, cache_read_tokens=5000,
                    cache_write_tokens=2000, cache_write_1h_tokens=0, reasoning_tokens=None, error_type=None,
                    provider_request_id=MSG_ID, priced=True,
                    extra={"price_as": f"anthropic/{SONNET}", "regional_premium_pct": 10},
                    cost_nanos=per_million((1200, SONNET_REGIONAL["input"]), (340, SONNET_REGIONAL["output"]),
                                           (5000, SONNET_REGIONAL["read"]), (2000, SONNET_REGIONAL["write"]))),
    ),
    Case(
        # The global endpoint: no premium. The model id is percent-encoded as some clients send it.
        name="vertex/claude-stream-global-endpoint-no-premium",
        host=GLOBAL, path=claude_path("claude-sonnet-4-5%4020250929", "streamRawPredict", location="global"),
        request=CLAUDE_STREAM_REQUEST, sse=True, request_headers=TOKEN_HEADER,
        response=claude_stream(SONNET, claude_usage(25, 1, read=1500), {"output_tokens": 88}),
        expect=dict(**CLAUDE, model=SONNET, model_requested=SONNET_ID, streamed=True, complete=True,
                    usage_reported=True, input_tokens=25, output_tokens=88, cache_read_tokens=1500,
                    cache_write_tokens=0, incomplete_reason=None, provider_request_id=MSG_ID,
                    extra={"price_as": f"anthropic/{SONNET}"},
                    cost_nanos=per_million((25, "3"), (88, "15"), (1500, "0.30"))),
    ),
    Case(
        name="vertex/claude-stream-v1beta1-haiku-4-5-regional",
        host=EUROPE, path=claude_path(HAIKU_ID, "streamRawPredict", location="europe-west1", version="v1beta1"),
        request=CLAUDE_STREAM_REQUEST, sse=True,
        response=claude_stream(HAIKU, claude_usage(400, 1), {"output_tokens": 120}),
        expect=dict(**CLAUDE, model=HAIKU, model_requested=HAIKU_ID, streamed=True, complete=True,
                    input_tokens=400, output_tokens=120,
                    extra={"price_as": f"anthropic/{HAIKU}", "regional_premium_pct": 10},
                    cost_nanos=per_million((400, "1.10"), (120, "5.50"))),
    ),
    Case(
        # Opus 4.1 predates the global/regional split: a regional endpoint costs the same.
        name="vertex/claude-json-older-model-regional-no-premium",
        host=REGIONAL, path=claude_path(OPUS_41_ID, "rawPredict"), request=CLAUDE_REQUEST,
        response=claude_message(OPUS_41, claude_usage(100, 50)),
        expect=dict(**CLAUDE, model=OPUS_41, model_requested=OPUS_41_ID, complete=True, input_tokens=100,
                    output_tokens=50, extra={"price_as": f"anthropic/{OPUS_41}"},
                    cost_nanos=per_million((100, "15"), (50, "75"))),
    ),
    Case(
        name="vertex/claude-stream-truncated-keeps-message-start-usage",
        host=REGIONAL, path=claude_path(SONNET_ID, "streamRawPredict"), request=CLAUDE_STREAM_REQUEST, sse=True,
        cut=True, response=claude_stream(SONNET, claude_usage(300, 1), {"output_tokens": 90})[:4],
        expect=dict(**CLAUDE, streamed=True, complete=False, incomplete_reason="upstream_truncated",
                    usage_reported=True, input_tokens=300, output_tokens=1,
                    cost_nanos=per_million((300, "3.30"), (1, "16.50"))),
    ),
    Case(
        name="vertex/claude-stream-overloaded-error-event",
        host=REGIONAL, path=claude_path(SONNET_ID, "streamRawPredict"), request=CLAUDE_STREAM_REQUEST, sse=True,
        response=[*claude_stream(SONNET, claude_usage(50, 1), {"output_tokens": 9})[:4],
                  sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")],
        expect=dict(**CLAUDE, streamed=True, complete=False, error_type="overloaded_error",
                    incomplete_reason="stream_error", usage_reported=True, input_tokens=50, output_tokens=1,
                    cost_nanos=per_million((50, "3.30"), (1, "16.50"))),
    ),
    Case(
        # Vertex's front end answers quota errors itself, as a Google RPC error.
        name="vertex/claude-429-google-rpc-quota-error",
        host=REGIONAL, path=claude_path(SONNET_ID, "rawPredict"), request=CLAUDE_REQUEST, status=429,
        response=rpc_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com/"
                           "online_prediction_input_tokens_per_minute_per_base_model with base model: "
                           "anthropic-claude-sonnet-4-5. Please submit a quota increase request."),
        expect=dict(provider="vertex", status=429, error_type="RESOURCE_EXHAUSTED", billable=False,
                    usage_reported=False, complete=True, cost_nanos=0, priced=True, model=SONNET_ID,
                    model_requested=SONNET_ID, extra={}),
    ),
    Case(
        name="vertex/claude-400-anthropic-error",
        host=REGIONAL, path=claude_path(SONNET_ID, "rawPredict"), request=CLAUDE_REQUEST, status=400,
        response=dumps({"type": "error", "error": {"type": "invalid_request_error",
                                                   "message": "max_tokens: Field required"}}),
        expect=dict(status=400, error_type="invalid_request_error", billable=False, usage_reported=False,
                    cost_nanos=0),
    ),
    Case(
        name="vertex/claude-count-tokens-not-billable",
        host=GLOBAL, path=claude_path("count-tokens", "rawPredict", location="global"),
        request={"model": SONNET_ID, "anthropic_version": "vertex-2023-10-16",
                 "messages": CLAUDE_REQUEST["messages"]},
        response=dumps({"input_tokens": 19}),
        expect=dict(provider="vertex", endpoint_kind="count_tokens", billable=False, usage_reported=False,
                    model_requested=SONNET_ID, input_tokens=0, cost_nanos=0, complete=True,
                    extra={"counted_input_tokens": 19}),
    ),
    # ---- Gemini ----
    Case(
        name="vertex/gemini-json-flash-implicit-cache",
        host=EUROPE, path=gemini_path(FLASH, "generateContent"), request=GEMINI_REQUEST, request_headers=TOKEN_HEADER,
        response=dumps(gemini_chunk("A meter ✓", "STOP", meta(12000, 300, thoughts=700, cached=8000)), indent=2),
        expect=dict(**GEMINI, model=FLASH, model_requested=FLASH, streamed=False, complete=True, usage_reported=True,
                    input_tokens=4000, cache_read_tokens=8000, output_tokens=1000, reasoning_tokens=700,
                    provider_request_id=RESPONSE_ID, extra={"traffic_type": "ON_DEMAND"},
                    cost_nanos=per_million((4000, "0.30"), (8000, "0.03"), (1000, "2.50"))),
    ),
    Case(
        name="vertex/gemini-sse-global-2-5-pro",
        host=GLOBAL, path=gemini_path(PRO, "streamGenerateContent", location="global", query="?alt=sse"),
        request=GEMINI_REQUEST, sse=True, content_type="text/event-stream",
        response=[sse(c, eol="\r\n") for c in PRO_STREAM],
        expect=dict(**GEMINI, model=PRO, model_requested=PRO, streamed=True, complete=True, input_tokens=900,
                    output_tokens=642, reasoning_tokens=512, extra={"traffic_type": "ON_DEMAND"},
                    cost_nanos=per_million((900, "1.25"), (642, "10"))),
    ),
    Case(
        name="vertex/gemini-array-stream",
        host=EUROPE, path=gemini_path(FLASH, "streamGenerateContent"), request=GEMINI_REQUEST,
        content_type=ARRAY_CT, response=array_stream(FLASH_STREAM),
        expect=dict(**GEMINI, model=FLASH, streamed=True, complete=True, input_tokens=2048, cache_read_tokens=2048,
                    output_tokens=77, extra={"traffic_type": "ON_DEMAND"},
                    cost_nanos=per_million((2048, "0.30"), (2048, "0.03"), (77, "2.50"))),
    ),
    Case(
        name="vertex/gemini-array-stream-truncated",
        host=EUROPE, path=gemini_path(FLASH, "streamGenerateContent"), request=GEMINI_REQUEST,
        content_type=ARRAY_CT, cut=True, response=array_stream(FLASH_STREAM)[:2],
        # The second element is whole (its closing brace arrived): its running totals are the last ones read.
        expect=dict(streamed=True, complete=False, incomplete_reason="upstream_truncated", output_tokens=40,
                    cost_nanos=per_million((2048, "0.30"), (2048, "0.03"), (40, "2.50"))),
    ),
    Case(
        name="vertex/gemini-429-resource-exhausted",
        host=EUROPE, path=gemini_path(FLASH, "generateContent"), request=GEMINI_REQUEST, status=429,
        response=rpc_error(429, "RESOURCE_EXHAUSTED", "Resource exhausted. Please try again later."),
        expect=dict(status=429, error_type="RESOURCE_EXHAUSTED", billable=False, cost_nanos=0, model=FLASH),
    ),
    Case(
        name="vertex/gemini-count-tokens-not-billable",
        host=EUROPE, path=gemini_path(FLASH, "countTokens"), request=GEMINI_REQUEST,
        response=dumps({"totalTokens": 9, "totalBillableCharacters": 30}),
        expect=dict(endpoint_kind="count_tokens", billable=False, cost_nanos=0, extra={"counted_input_tokens": 9}),
    ),
    Case(
        # Express mode: an API key instead of a token, no project or location in the path.
        name="vertex/gemini-express-mode-key-redacted",
        host=GLOBAL,
        path=f"/v1/publishers/google/models/{FLASH}:generateContent?key=AIzaSyCANARY0123456789abcdefghijklmn",
        request=GEMINI_REQUEST,
        response=dumps(gemini_chunk("Hi", "STOP", meta(8, 2))),
        expect=dict(path=f"/v1/publishers/google/models/{FLASH}:generateContent?key=REDACTED", model=FLASH,
                    input_tokens=8, output_tokens=2, cost_nanos=per_million((8, "0.30"), (2, "2.50"))),
    ),
    Case(
        name="vertex/openai-compatible-chat",
        host=REGIONAL, path=f"/v1/projects/{PROJECT}/locations/us-east5/endpoints/openapi/chat/completions",
        request={"model": f"google/{FLASH}", "messages": [{"role": "user", "content": "PROMPT-CANARY"}]},
        response=dumps({"id": "chatcmpl-vtx1", "object": "chat.completion", "created": 1763812800,
                        "model": f"google/{FLASH}",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "Hello ✓"}}],
                        "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}}),
        expect=dict(provider="vertex", endpoint_kind="chat.completions", model=f"google/{FLASH}",
                    model_requested=f"google/{FLASH}", billable=True, input_tokens=30, output_tokens=12,
                    cost_nanos=per_million((30, "0.30"), (12, "2.50"))),
    ),
    Case(
        # Another publisher's model: a paid call whose usage is not read (billable, cost unknown, never $0).
        name="vertex/other-publisher-billable-cost-unknown",
        host=REGIONAL, path=f"/v1/projects/{PROJECT}/locations/us-east5/publishers/meta/models/"
                            "llama-4-maverick-17b-128e-instruct-maas:rawPredict",
        request={"model": "meta/llama-4", "messages": [{"role": "user", "content": "PROMPT-CANARY"}]},
        response=dumps({"choices": [{"message": {"role": "assistant", "content": "Hi"}}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 2}}),
        expect=dict(provider="vertex", endpoint_kind="usage_not_read", billable=True, usage_reported=False,
                    cost_nanos=None, priced=False),
    ),
    Case(
        name="vertex/list-endpoints-not-inference",
        host=REGIONAL, path=f"/v1/projects/{PROJECT}/locations/us-east5/endpoints", method="GET", request=None,
        response=dumps({"endpoints": []}),
        expect=dict(provider="vertex", endpoint_kind="other", billable=False, model=None, cost_nanos=0),
    ),
]
