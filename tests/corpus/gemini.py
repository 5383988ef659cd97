"""Google Gemini API (docs/providers/gemini.md, docs/providers/index.md). List prices per MTok (https://ai.google.dev/gemini-api/docs/pricing),
output including thinking:
  gemini-2.5-pro        input $1.25, cache read $0.125, output $10; prompts > 200k tokens: $2.50 / $0.25 / $15
  gemini-2.5-flash      input $0.30, cache read $0.03, output $2.50
  gemini-2.5-flash-lite input $0.10, cache read $0.01, output $0.40
  gemini-2.0-flash      input $0.10, cache read $0.025, output $0.40
The long-context tier depends on the whole prompt (promptTokenCount, cached tokens included).
Embedding responses carry no usage, so embeddings are billable with unknown cost.
"""

from __future__ import annotations

import json
from typing import Any

from corpus import Case, per_million, sse

HOST = "generativelanguage.googleapis.com"
PRO, FLASH, LITE, FLASH_20 = "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash"
RESPONSE_ID = "kS3VaK2yIcOxz7IPkuWlgQk"
REQUEST = {
    "contents": [{"role": "user", "parts": [{"text": "Explain how a proxy meters tokens."}]}],
    "generationConfig": {"thinkingConfig": {"thinkingBudget": 2048}},
}
API_KEY_HEADER = {"x-goog-api-key": "AIzaSyCANARYHEADERKEY0000000000000000000"}
CANARY_KEY = "AIzaSyD-CANARY0123456789abcdefghijklmnop"
ARRAY_CT = "application/json; charset=UTF-8"
GOOGLE_SSE_CT = "text/event-stream"


def dumps(obj: Any, indent: int | None = None) -> str:
    if indent is None:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(obj, indent=indent, ensure_ascii=False)


def meta(prompt: int, candidates: int | None = None, thoughts: int | None = None, cached: int | None = None,
         tool: int | None = None) -> dict[str, Any]:
    """usageMetadata as the API writes it: zero/absent counts omitted, per-modality details alongside."""
    body: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        body["candidatesTokenCount"] = candidates
    body["totalTokenCount"] = prompt + (candidates or 0) + (thoughts or 0) + (tool or 0)
    if cached is not None:
        body["cachedContentTokenCount"] = cached
        body["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    body["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if tool is not None:
        body["toolUsePromptTokenCount"] = tool
        body["toolUsePromptTokensDetails"] = [{"modality": "TEXT", "tokenCount": tool}]
    if thoughts is not None:
        body["thoughtsTokenCount"] = thoughts
    return body


def chunk(text: str | None, finish: str | None = None, usage: dict[str, Any] | None = None, model: str = FLASH,
          **more: Any) -> dict[str, Any]:
    """One GenerateContentResponse (a whole body, or one stream element)."""
    candidate: dict[str, Any] = {}
    if text is not None:
        candidate["content"] = {"parts": [{"text": text}], "role": "model"}
    if finish:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    body: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        body["usageMetadata"] = usage
    body["modelVersion"] = model
    body["responseId"] = RESPONSE_ID
    body.update(more)
    return body


def body(obj: Any) -> bytes:
    return dumps(obj, indent=2).encode()


def sse_events(chunks: list[dict[str, Any]], eol: str = "\r\n") -> list[bytes]:
    return [sse(c, eol=eol) for c in chunks]


def array_stream(chunks: list[dict[str, Any]]) -> list[bytes]:
    """The JSON-array stream as the API writes it: `[{…}` first, then `,\\r\\n{…}` per element, then `]`."""
    pieces = [f"[{dumps(chunks[0], indent=2)}".encode()]
    pieces += [f",\r\n{dumps(c, indent=2)}".encode() for c in chunks[1:]]
    return [*pieces, b"\n]"]


def resplit(pieces: list[bytes], size: int) -> list[bytes]:
    """The same bytes written in pieces that ignore element boundaries."""
    data = b"".join(pieces)
    return [data[i:i + size] for i in range(0, len(data), size)]


def rpc_error(code: int, status: str, message: str, **more: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **more}}


def path(model: str, method: str, query: str = "", version: str = "v1beta") -> str:
    return f"/{version}/models/{model}:{method}{query}"


BASE = dict(provider="gemini", host=HOST, billing="api", error_type=None)
GENERATED = dict(**BASE, endpoint_kind="generate_content", billable=True, usage_reported=True,
                 cache_write_tokens=0, cache_write_1h_tokens=0)

# 2.5-style stream: running totals on every chunk. Summing them would give 4 × 5000 prompt tokens.
PRO_STREAM = [
    chunk("**Metering", usage=meta(5000, 10, thoughts=1300), model=PRO),
    chunk(" tokens** starts with reading `usageMetadata`", usage=meta(5000, 150, thoughts=1300), model=PRO),
    chunk(" on every chunk,", usage=meta(5000, 300, thoughts=1300), model=PRO),
    chunk(" and keeping the last.", "STOP", usage=meta(5000, 420, thoughts=1300), model=PRO),
]
FLASH_STREAM = [
    chunk("Un", usage=meta(2048, 12, cached=1024)),
    chunk("proxy", usage=meta(2048, 31, cached=1024)),
    chunk(" cuenta tokens.", "STOP", usage=meta(2048, 60, cached=1024)),
]
# Older models: usageMetadata only on the final chunk.
FLASH_20_STREAM = [
    chunk("A meter", model=FLASH_20),
    chunk(" sits between", model=FLASH_20),
    chunk(" client and API.", "STOP", usage=meta(812, 96), model=FLASH_20),
]
UNICODE_TEXTS = ("ü · 日本語 · 😀", " line\u2028separator\u2029paragraph\u0085next", " \"quoted\" \\ done")
LONG_TEXT = "All work and no play makes a long stream. " * 19  # ~800 bytes per event

CASES = [
    Case(
        name="gemini/json-2.5-flash-thinking",
        host=HOST, path=path(FLASH, "generateContent"), request=REQUEST, request_headers=API_KEY_HEADER,
        response=body(chunk("A proxy reads the usage.", "STOP", usage=meta(1200, 340, thoughts=900))),
        expect=dict(**GENERATED, model=FLASH, model_requested=FLASH, streamed=False, complete=True,
                    status=200, input_tokens=1200, output_tokens=1240, cache_read_tokens=0, reasoning_tokens=900,
                    incomplete_reason=None, provider_request_id=RESPONSE_ID, priced=True,
                    cost_nanos=per_million((1200, "0.30"), (1240, "2.50"))),
    ),
    Case(
        name="gemini/sse-crlf-usage-on-every-chunk-last-wins",
        host=HOST, path=path(PRO, "streamGenerateContent", "?alt=sse"), request=REQUEST, sse=True,
        content_type=GOOGLE_SSE_CT, response=sse_events(PRO_STREAM),
        expect=dict(**GENERATED, model=PRO, model_requested=PRO, streamed=True, complete=True,
                    input_tokens=5000, output_tokens=1720, cache_read_tokens=0, reasoning_tokens=1300,
                    incomplete_reason=None, provider_request_id=RESPONSE_ID,
                    cost_nanos=per_million((5000, "1.25"), (1720, "10"))),
    ),
    Case(
        name="gemini/array-stream-written-across-element-boundaries",
        host=HOST, path=path(FLASH, "streamGenerateContent"), request=REQUEST, content_type=ARRAY_CT,
        response=resplit(array_stream(FLASH_STREAM), 97),
        expect=dict(**GENERATED, model=FLASH, streamed=True, complete=True, input_tokens=1024,
                    cache_read_tokens=1024, output_tokens=60, reasoning_tokens=None, incomplete_reason=None,
                    cost_nanos=per_million((1024, "0.30"), (1024, "0.03"), (60, "2.50"))),
    ),
    Case(
        name="gemini/array-stream-v1-usage-only-on-last-chunk",
        host=HOST, path=path(FLASH_20, "streamGenerateContent", version="v1"), request=REQUEST,
        content_type=ARRAY_CT, response=array_stream(FLASH_20_STREAM),
        expect=dict(**GENERATED, model=FLASH_20, model_requested=FLASH_20, streamed=True, complete=True,
                    input_tokens=812, output_tokens=96, reasoning_tokens=None,
                    cost_nanos=per_million((812, "0.10"), (96, "0.40"))),
    ),
    Case(
        name="gemini/json-v1-2.0-flash",
        host=HOST, path=path(FLASH_20, "generateContent", version="v1"), request=REQUEST,
        response=body(chunk("Short.", "STOP", usage=meta(40, 3), model=FLASH_20)),
        expect=dict(**GENERATED, model=FLASH_20, streamed=False, complete=True, input_tokens=40, output_tokens=3,
                    cost_nanos=per_million((40, "0.10"), (3, "0.40"))),
    ),
    Case(
        name="gemini/json-implicit-cache-hit-2.5-pro",
        host=HOST, path=path(PRO, "generateContent"), request=REQUEST,
        response=body(chunk("Cached.", "STOP", usage=meta(120_000, 800, thoughts=400, cached=100_000), model=PRO)),
        expect=dict(**GENERATED, model=PRO, input_tokens=20_000, cache_read_tokens=100_000, output_tokens=1200,
                    reasoning_tokens=400,
                    cost_nanos=per_million((20_000, "1.25"), (100_000, "0.125"), (1200, "10"))),
    ),
    Case(
        # 100k uncached alone is under the threshold; with 150k cached the prompt is 250k: every bucket at the
        # long-context rate.
        name="gemini/long-context-tier-counts-cached-tokens",
        host=HOST, path=path(PRO, "generateContent"), request=REQUEST,
        response=body(chunk("Long.", "STOP", usage=meta(250_000, 1000, thoughts=2000, cached=150_000), model=PRO)),
        expect=dict(input_tokens=100_000, cache_read_tokens=150_000, output_tokens=3000, reasoning_tokens=2000,
                    cost_nanos=per_million((100_000, "2.50"), (150_000, "0.25"), (3000, "15"))),
    ),
    Case(
        name="gemini/tier-boundary-200k-prompt-is-base-rate",
        host=HOST, path=path(PRO, "generateContent"), request=REQUEST,
        response=body(chunk("Edge.", "STOP", usage=meta(200_000, 100), model=PRO)),
        expect=dict(input_tokens=200_000, output_tokens=100,
                    cost_nanos=per_million((200_000, "1.25"), (100, "10"))),
    ),
    Case(
        # Google Search grounding: the search results fed back in are reported as toolUsePromptTokenCount,
        # beside (not inside) promptTokenCount, and priced as input.
        name="gemini/sse-grounding-tool-use-prompt-tokens",
        host=HOST, path=path(FLASH, "streamGenerateContent", "?alt=sse"), sse=True,
        request={**REQUEST, "tools": [{"google_search": {}}]},
        response=sse_events([
            chunk("Searching", usage=meta(50, 2, thoughts=120, tool=1500)),
            chunk(" done: it rained.", "STOP", usage=meta(50, 200, thoughts=120, tool=1500),
                  groundingMetadata={"webSearchQueries": ["weather today"]}),
        ]),
        expect=dict(**GENERATED, complete=True, input_tokens=1550, output_tokens=320, reasoning_tokens=120,
                    extra={"tool_use_prompt_tokens": 1500},
                    cost_nanos=per_million((1550, "0.30"), (320, "2.50"))),
    ),
    Case(
        name="gemini/sse-truncated-keeps-last-usage",
        host=HOST, path=path(PRO, "streamGenerateContent", "?alt=sse"), request=REQUEST, sse=True, cut=True,
        # The last piece is half an event: never dispatched, whether or not it reaches the meter.
        response=[*sse_events(PRO_STREAM)[:2], sse_events(PRO_STREAM)[2][:40]],
        expect=dict(**GENERATED, streamed=True, complete=False, incomplete_reason="upstream_truncated",
                    input_tokens=5000, output_tokens=1450, reasoning_tokens=1300,
                    cost_nanos=per_million((5000, "1.25"), (1450, "10"))),
    ),
    Case(
        name="gemini/array-stream-truncated-before-closing-bracket",
        host=HOST, path=path(FLASH, "streamGenerateContent"), request=REQUEST, content_type=ARRAY_CT, cut=True,
        response=[*array_stream(FLASH_STREAM)[:2], array_stream(FLASH_STREAM)[2][:50]],
        expect=dict(**GENERATED, streamed=True, complete=False, incomplete_reason="upstream_truncated",
                    input_tokens=1024, cache_read_tokens=1024, output_tokens=31,
                    cost_nanos=per_million((1024, "0.30"), (1024, "0.03"), (31, "2.50"))),
    ),
    Case(
        # Every chunk, including the one with finishReason, arrived: only the closing `]` is missing.
        name="gemini/array-stream-cut-after-final-chunk-is-incomplete",
        host=HOST, path=path(FLASH, "streamGenerateContent"), request=REQUEST, content_type=ARRAY_CT, cut=True,
        response=array_stream(FLASH_STREAM)[:3],
        expect=dict(complete=False, incomplete_reason="upstream_truncated", output_tokens=60),
    ),
    Case(
        name="gemini/error-429-resource-exhausted",
        host=HOST, path=path(PRO, "generateContent"), request=REQUEST, status=429,
        response=body(rpc_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your "
                                "plan and billing details.", details=[
                                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                                        {"quotaMetric": "generativelanguage.googleapis.com/"
                                                        "generate_content_free_tier_requests",
                                         "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                                         "quotaValue": "5"}]},
                                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"}])),
        expect=dict(provider="gemini", status=429, error_type="RESOURCE_EXHAUSTED", billable=False,
                    usage_reported=False, complete=True, cost_nanos=0, priced=True, model=PRO, model_requested=PRO,
                    input_tokens=0, output_tokens=0),
    ),
    Case(
        name="gemini/array-stream-http-400-error-as-array",
        host=HOST, path=path(FLASH, "streamGenerateContent"), request=REQUEST, status=400, content_type=ARRAY_CT,
        response=array_stream([rpc_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")]),
        expect=dict(status=400, error_type="INVALID_ARGUMENT", billable=False, usage_reported=False,
                    complete=True, cost_nanos=0, incomplete_reason=None),
    ),
    Case(
        name="gemini/array-stream-error-element-mid-stream",
        host=HOST, path=path(FLASH, "streamGenerateContent"), request=REQUEST, content_type=ARRAY_CT,
        response=array_stream([FLASH_STREAM[0], FLASH_STREAM[1],
                               rpc_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")]),
        expect=dict(status=200, streamed=True, complete=False, error_type="UNAVAILABLE",
                    incomplete_reason="stream_error", usage_reported=True, billable=True, input_tokens=1024,
                    cache_read_tokens=1024, output_tokens=31,
                    cost_nanos=per_million((1024, "0.30"), (1024, "0.03"), (31, "2.50"))),
    ),
    Case(
        name="gemini/sse-error-event-mid-stream",
        host=HOST, path=path(PRO, "streamGenerateContent", "?alt=sse"), request=REQUEST, sse=True,
        response=[*sse_events(PRO_STREAM[:1]), sse(rpc_error(500, "INTERNAL", "An internal error has occurred."),
                                                    eol="\r\n")],
        expect=dict(status=200, complete=False, error_type="INTERNAL", incomplete_reason="stream_error",
                    usage_reported=True, input_tokens=5000, output_tokens=1310,
                    cost_nanos=per_million((5000, "1.25"), (1310, "10"))),
    ),
    Case(
        # A blocked prompt has no candidates and so no finishReason: its promptFeedback chunk is the last one.
        name="gemini/sse-prompt-blocked-is-complete",
        host=HOST, path=path(FLASH, "streamGenerateContent", "?alt=sse"), request=REQUEST, sse=True,
        response=sse_events([{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                              "usageMetadata": meta(12), "modelVersion": FLASH, "responseId": RESPONSE_ID}]),
        expect=dict(complete=True, usage_reported=True, billable=True, input_tokens=12, output_tokens=0,
                    reasoning_tokens=None, cost_nanos=per_million((12, "0.30"))),
    ),
    Case(
        name="gemini/count-tokens-not-billable",
        host=HOST, path=path(FLASH, "countTokens"), request={"contents": REQUEST["contents"]},
        response=body({"totalTokens": 31, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]}),
        expect=dict(**BASE, endpoint_kind="count_tokens", billable=False, usage_reported=False, input_tokens=0,
                    model=FLASH, model_requested=FLASH, complete=True, cost_nanos=0,
                    extra={"counted_input_tokens": 31}),
    ),
    Case(
        name="gemini/embed-content-billable-cost-unknown",
        host=HOST, path=path("gemini-embedding-001", "embedContent"),
        request={"content": {"parts": [{"text": "What is the meaning of life?"}]}},
        response=body({"embedding": {"values": [0.0123, -0.0456, 0.0789, 0.0012]}}),
        expect=dict(**BASE, endpoint_kind="embeddings", billable=True, usage_reported=False, complete=True,
                    model="gemini-embedding-001", cost_nanos=None, priced=False),
    ),
    Case(
        name="gemini/batch-embed-contents-billable-cost-unknown",
        host=HOST, path=path("gemini-embedding-001", "batchEmbedContents"),
        request={"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": t}]}}
                              for t in ("one", "two")]},
        response=body({"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]}),
        expect=dict(endpoint_kind="embeddings", billable=True, usage_reported=False, cost_nanos=None,
                    priced=False, model_requested="gemini-embedding-001"),
    ),
    Case(
        name="gemini/key-in-query-is-redacted",
        host=HOST, path=path(FLASH, "generateContent", f"?key={CANARY_KEY}"), request=REQUEST,
        response=body(chunk("Hi.", "STOP", usage=meta(8, 2))),
        expect=dict(path="/v1beta/models/gemini-2.5-flash:generateContent?key=REDACTED", input_tokens=8,
                    output_tokens=2, cost_nanos=per_million((8, "0.30"), (2, "2.50"))),
    ),
    Case(
        name="gemini/sse-key-after-alt-is-redacted",
        host=HOST, path=path(FLASH, "streamGenerateContent", f"?alt=sse&key={CANARY_KEY}"), request=REQUEST,
        sse=True, response=sse_events(FLASH_STREAM, eol="\n"),
        expect=dict(path="/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=REDACTED",
                    streamed=True, complete=True, output_tokens=60),
    ),
    Case(
        name="gemini/json-gzip-2.5-flash-lite",
        host=HOST, path=path(LITE, "generateContent"), request=REQUEST, encoding="gzip",
        response=body(chunk("Compressed.", "STOP", usage=meta(300, 50), model=LITE)),
        expect=dict(**GENERATED, model=LITE, complete=True, input_tokens=300, output_tokens=50,
                    cost_nanos=per_million((300, "0.10"), (50, "0.40"))),
    ),
    Case(
        # Raw U+2028/U+2029/U+0085 inside JSON strings must not be taken for line breaks.
        name="gemini/sse-unicode-text",
        host=HOST, path=path(FLASH, "streamGenerateContent", "?alt=sse"), request=REQUEST, sse=True,
        response=sse_events([chunk(t, usage=meta(20, 5 * (i + 1))) for i, t in enumerate(UNICODE_TEXTS[:-1])]
                            + [chunk(UNICODE_TEXTS[-1], "STOP", usage=meta(20, 15))]),
        expect=dict(complete=True, input_tokens=20, output_tokens=15,
                    cost_nanos=per_million((20, "0.30"), (15, "2.50"))),
    ),
    Case(
        name="gemini/sse-long-output-many-events",
        host=HOST, path=path(FLASH, "streamGenerateContent", "?alt=sse"), request=REQUEST, sse=True,
        response=sse_events([chunk(f"{i}: {LONG_TEXT}", "STOP" if i == 399 else None, usage=meta(40, 20 * (i + 1)))
                             for i in range(400)], eol="\n"),
        expect=dict(complete=True, input_tokens=40, output_tokens=8000,
                    cost_nanos=per_million((40, "0.30"), (8000, "2.50"))),
    ),
    Case(
        name="gemini/long-output-array-stream",
        host=HOST, path=path(FLASH, "streamGenerateContent"), request=REQUEST, content_type=ARRAY_CT,
        response=array_stream([chunk(f"{i}: {LONG_TEXT}", "STOP" if i == 299 else None,
                                     usage=meta(40, 20 * (i + 1))) for i in range(300)]),
        expect=dict(streamed=True, complete=True, input_tokens=40, output_tokens=6000,
                    cost_nanos=per_million((40, "0.30"), (6000, "2.50"))),
    ),
    Case(
        # A tuned model has no list price: counted, billable, cost unknown (never $0).
        name="gemini/tuned-model-unpriced",
        host=HOST, path="/v1beta/tunedModels/my-model-123:generateContent", request=REQUEST,
        response=body({"candidates": [{"content": {"parts": [{"text": "Tuned."}], "role": "model"},
                                       "finishReason": "STOP", "index": 0}], "usageMetadata": meta(30, 4)}),
        expect=dict(**GENERATED, model="my-model-123", model_requested="my-model-123", input_tokens=30,
                    output_tokens=4, complete=True, cost_nanos=None, priced=False),
    ),
    Case(
        name="gemini/list-models-not-inference",
        host=HOST, path="/v1beta/models?pageSize=50", method="GET", request=None,
        response=body({"models": [{"name": "models/gemini-2.5-flash", "version": "001",
                                    "inputTokenLimit": 1048576, "outputTokenLimit": 65536}]}),
        expect=dict(**BASE, endpoint_kind="other", billable=False, usage_reported=False, model=None,
                    model_requested=None, cost_nanos=0),
    ),
    Case(
        # Cache creation reports the cached size in usageMetadata; it is not a generate call.
        name="gemini/cached-contents-create-not-inference",
        host=HOST, path="/v1beta/cachedContents", request={"model": "models/gemini-2.5-flash",
                                                           "contents": REQUEST["contents"], "ttl": "300s"},
        response=body({"name": "cachedContents/abc123", "model": "models/gemini-2.5-flash",
                       "usageMetadata": {"totalTokenCount": 4096}, "expireTime": "2026-11-22T12:05:00Z"}),
        expect=dict(endpoint_kind="other", billable=False, usage_reported=False, input_tokens=0, cost_nanos=0),
    ),
    Case(
        name="gemini/openai-compatible-chat-stream",
        host=HOST, path="/v1beta/openai/chat/completions", sse=True,
        request={"model": "gemini-2.5-flash", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
        response=[sse({"choices": [{"delta": {"content": "Hel", "role": "assistant"}, "index": 0}],
                       "created": 1763812800, "id": "cmpl-1", "model": FLASH, "object": "chat.completion.chunk",
                       "usage": {"completion_tokens": 1, "prompt_tokens": 20, "total_tokens": 21}}),
                  sse({"choices": [{"delta": {"content": "lo", "role": "assistant"}, "finish_reason": "stop",
                                    "index": 0}],
                       "created": 1763812800, "id": "cmpl-1", "model": FLASH, "object": "chat.completion.chunk",
                       "usage": {"completion_tokens": 30, "prompt_tokens": 20, "total_tokens": 50}}),
                  sse("[DONE]")],
        expect=dict(provider="gemini", endpoint_kind="chat.completions", model=FLASH, model_requested=FLASH,
                    streamed=True, complete=True, billable=True, input_tokens=20, output_tokens=30,
                    cost_nanos=per_million((20, "0.30"), (30, "2.50"))),
    ),
]
