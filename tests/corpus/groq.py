"""Groq (docs/providers/groq.md). List prices per MTok (groq.com/pricing, checked against genai-prices' `groq`
entries): llama-3.3-70b-versatile input $0.59, output $0.79; moonshotai/kimi-k2-instruct-0905 input $1,
cached input $0.50, output $3. groq/compound has no per-token price (it bills each inner model)."""

from __future__ import annotations

import json
from typing import Any

from corpus import Case, per_million, sse

HOST = "api.groq.com"
PATH = "/openai/v1/chat/completions"
LLAMA = "llama-3.3-70b-versatile"
KIMI = "moonshotai/kimi-k2-instruct-0905"
REQUEST = {"model": LLAMA, "messages": [{"role": "user", "content": "Hi"}]}
STREAM_REQUEST = {**REQUEST, "stream": True}
CHAT_ID = "chatcmpl-7f3c2a9e-1b7d-4c55-9e0a-3f1d2c4b5a60"
REQ_ID = "req_01jq8m3v2gf0kt9wz7y5x4c3b2"


def usage(prompt: int, completion: int, cached: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"queue_time": 0.021, "prompt_tokens": prompt, "prompt_time": 0.004,
                            "completion_tokens": completion, "completion_time": 0.31,
                            "total_tokens": prompt + completion, "total_time": 0.314}
    if cached is not None:
        body["prompt_tokens_details"] = {"cached_tokens": cached}
    return body


def completion(model: str = LLAMA, **u: Any) -> bytes:
    body = {"id": CHAT_ID, "object": "chat.completion", "created": 1763812800, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! 👋"},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage(**u), "usage_breakdown": None, "system_fingerprint": "fp_3f39a4c5d1",
            "x_groq": {"id": REQ_ID}, "service_tier": "on_demand"}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, model: str = LLAMA,
          choices: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": CHAT_ID, "object": "chat.completion.chunk", "created": 1763812800, "model": model,
            "system_fingerprint": "fp_3f39a4c5d1",
            "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
            if choices is None else choices, **extra}


def stream(texts: tuple[str, ...], final_usage: dict[str, Any] | None, usage_chunk: dict[str, Any] | None = None,
           model: str = LLAMA) -> list[bytes]:
    """Groq's stream: x_groq.id on the first chunk; x_groq.{id,usage} on the finish chunk."""
    events = [sse(chunk({"role": "assistant", "content": ""}, model=model, x_groq={"id": REQ_ID}))]
    events += [sse(chunk({"content": t}, model=model)) for t in texts]
    x_groq: dict[str, Any] = {"id": REQ_ID}
    if final_usage is not None:
        x_groq["usage"] = final_usage
    events.append(sse(chunk({}, "stop", model=model, x_groq=x_groq)))
    if usage_chunk is not None:
        events.append(sse(chunk(choices=[], model=model, x_groq={"id": REQ_ID}, usage=usage_chunk)))
    events.append(b"data: [DONE]\n\n")
    return events


CASES = [
    Case(
        name="groq/json-llama-3.3-70b",
        host=HOST, path=PATH, request=REQUEST,
        response=completion(prompt=120, completion=45),
        expect=dict(provider="groq", endpoint_kind="chat.completions", model=LLAMA, model_requested=LLAMA,
                    streamed=False, complete=True, billable=True, usage_reported=True, billing="api",
                    input_tokens=120, output_tokens=45, cache_read_tokens=0, cache_write_tokens=0,
                    reasoning_tokens=None, error_type=None, provider_request_id=CHAT_ID, priced=True,
                    cost_nanos=per_million((120, "0.59"), (45, "0.79"))),
    ),
    Case(
        # The client did not ask for include_usage: x_groq.usage on the finish chunk is the only usage,
        # and nothing in the request or the stream is changed.
        name="groq/stream-x-groq-usage-only",
        host=HOST, path=PATH, request=STREAM_REQUEST, sse=True,
        response=stream(("Bonjour", " — ça va ? ", "日本語 ✓ \u2028 🙂"), usage(prompt=64, completion=211)),
        expect=dict(streamed=True, complete=True, usage_reported=True, input_tokens=64, output_tokens=211,
                    cache_read_tokens=0, incomplete_reason=None, extra={},
                    cost_nanos=per_million((64, "0.59"), (211, "0.79"))),
    ),
    Case(
        # With include_usage Groq may send the same totals twice: x_groq.usage, then a usage chunk.
        name="groq/stream-x-groq-and-usage-chunk-counted-once",
        host=HOST, path=PATH, request={**STREAM_REQUEST, "stream_options": {"include_usage": True}}, sse=True,
        response=stream(("Hel", "lo"), usage(prompt=300, completion=90), usage_chunk=usage(prompt=300, completion=90)),
        expect=dict(streamed=True, complete=True, input_tokens=300, output_tokens=90,
                    cost_nanos=per_million((300, "0.59"), (90, "0.79"))),
    ),
    Case(
        name="groq/json-kimi-cached-tokens",
        host=HOST, path=PATH, request={**REQUEST, "model": KIMI},
        response=completion(model=KIMI, prompt=3000, completion=200, cached=2048),
        expect=dict(model=KIMI, input_tokens=952, cache_read_tokens=2048, output_tokens=200,
                    cost_nanos=per_million((952, "1"), (2048, "0.50"), (200, "3"))),
    ),
    Case(
        name="groq/stream-cached-tokens-in-x-groq-usage",
        host=HOST, path=PATH, request={**STREAM_REQUEST, "model": KIMI}, sse=True,
        response=stream(("ok",), usage(prompt=5000, completion=12, cached=4608), model=KIMI),
        expect=dict(model=KIMI, complete=True, input_tokens=392, cache_read_tokens=4608, output_tokens=12,
                    cost_nanos=per_million((392, "1"), (4608, "0.50"), (12, "3"))),
    ),
    Case(
        name="groq/stream-truncated-before-final-chunk",
        host=HOST, path=PATH, request=STREAM_REQUEST, sse=True, cut=True,
        response=stream(("Hel", "lo", " there"), usage(prompt=10, completion=3))[:3],
        expect=dict(streamed=True, complete=False, incomplete_reason="upstream_truncated", usage_reported=False,
                    billable=True, input_tokens=0, output_tokens=0, cost_nanos=None, priced=False),
    ),
    Case(
        name="groq/error-429-rate-limit",
        host=HOST, path=PATH, request=REQUEST, status=429,
        response=(b'{"error":{"message":"Rate limit reached for model `llama-3.3-70b-versatile` in organization '
                  b'`org_01` service tier `on_demand` on tokens per minute (TPM): Limit 12000, Used 11800, '
                  b'Requested 950. Please try again in 3.75s.","type":"tokens","code":"rate_limit_exceeded"}}'),
        expect=dict(status=429, error_type="rate_limit_exceeded", billable=False, usage_reported=False,
                    complete=True, model=LLAMA, cost_nanos=0, priced=True),
    ),
    Case(
        name="groq/error-400-tool-use-failed-gzip",
        host=HOST, path=PATH, request=REQUEST, status=400, encoding="gzip",
        response=(b'{"error":{"message":"Failed to call a function. Please adjust your prompt.",'
                  b'"type":"invalid_request_error","code":"tool_use_failed","failed_generation":"<function=x>"}}'),
        expect=dict(status=400, error_type="tool_use_failed", billable=False, cost_nanos=0),
    ),
    Case(
        # Compound systems: the top-level usage is the total, per-model usage is kept; no per-token price.
        name="groq/json-compound-usage-breakdown-unpriced",
        host=HOST, path=PATH, request={**REQUEST, "model": "groq/compound"},
        response=json.dumps({
            "id": CHAT_ID, "object": "chat.completion", "created": 1763812800, "model": "groq/compound",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "It is 12°C."},
                         "finish_reason": "stop"}],
            "usage": usage(prompt=2100, completion=180),
            "usage_breakdown": {"models": [
                {"model": "openai/gpt-oss-120b", "usage": usage(prompt=1800, completion=150)},
                {"model": "llama-3.3-70b-versatile", "usage": usage(prompt=300, completion=30)}]},
            "x_groq": {"id": REQ_ID}}, separators=(",", ":"), ensure_ascii=False).encode(),
        expect=dict(model="groq/compound", input_tokens=2100, output_tokens=180, usage_reported=True,
                    billable=True, cost_nanos=None, priced=False,
                    extra={"usage_breakdown": [
                        {"model": "openai/gpt-oss-120b", "input_tokens": 1800, "cache_read_tokens": 0,
                         "output_tokens": 150},
                        {"model": "llama-3.3-70b-versatile", "input_tokens": 300, "cache_read_tokens": 0,
                         "output_tokens": 30}]}),
    ),
]
