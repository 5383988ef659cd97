"""OpenRouter (docs/providers/openrouter.md). Prices per MTok from genai-prices' `openrouter` entries, which follow
the vendors' list prices: anthropic/claude-sonnet-4.5 input $3, cache read $0.30, cache write $3.75,
output $15 (≤200k prompt); openai/gpt-4o-mini input $0.15, cached $0.075, output $0.60;
google/gemini-2.5-flash input $0.30, output $2.50. x-ai/grok-4 has no `openrouter` entry, so it is priced
at xAI's own list price ($3 / $15), and the price source says so; OpenRouter's own `usage.cost` is kept in
extra either way."""

from __future__ import annotations

import json
from typing import Any

from corpus import Case, per_million, sse

HOST = "openrouter.ai"
PATH = "/api/v1/chat/completions"
SONNET = "anthropic/claude-sonnet-4.5"
SONNET_SNAPSHOT = "anthropic/claude-4.5-sonnet-20250929"
MINI = "openai/gpt-4o-mini"
REQUEST = {"model": SONNET, "messages": [{"role": "user", "content": "Hi"}]}
GEN_ID = "gen-1763812800-Qm9vT3BlblJvdXRlcg"


def usage(prompt: int, completion: int, cached: int = 0, written: int = 0, reasoning: int = 0,
          cost: float | None = None, byok: bool = False, upstream: float | None = None) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "cost": cost, "is_byok": byok,
            "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written, "audio_tokens": 0},
            "cost_details": {"upstream_inference_cost": upstream},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "image_tokens": 0}}


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def completion(model: str, provider: str, **u: Any) -> bytes:
    return dumps({"id": GEN_ID, "provider": provider, "model": model, "object": "chat.completion",
                  "created": 1763812800,
                  "choices": [{"logprobs": None, "finish_reason": "stop", "native_finish_reason": "end_turn",
                               "index": 0, "message": {"role": "assistant", "content": "Hello — “hi” ✓",
                                                       "refusal": None, "reasoning": None}}],
                  "usage": usage(**u)})


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, model: str = MINI,
          choices: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": GEN_ID, "provider": "OpenAI", "model": model, "object": "chat.completion.chunk",
            "created": 1763812800,
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, "native_finish_reason": finish,
                         "logprobs": None}] if choices is None else choices, **extra}


PROCESSING = b": OPENROUTER PROCESSING\n\n"


def stream(texts: tuple[str, ...], final_usage: dict[str, Any] | None, model: str = MINI) -> list[bytes]:
    events = [PROCESSING, PROCESSING, sse(chunk({"role": "assistant", "content": ""}, model=model))]
    events += [sse(chunk({"role": "assistant", "content": t}, model=model)) for t in texts]
    events.append(sse(chunk({"role": "assistant", "content": ""}, "stop", model=model)))
    if final_usage is not None:
        events.append(sse(chunk(choices=[], model=model, usage=final_usage)))
    events.append(b"data: [DONE]\n\n")
    return events


CASES = [
    Case(
        # prompt_tokens (12000) holds 8000 cache reads and 3000 cache writes: 1000 uncached input.
        name="openrouter/json-claude-cache-write-and-cost",
        host=HOST, path=PATH, request=REQUEST,
        response=completion(SONNET_SNAPSHOT, "Anthropic", prompt=12000, completion=500, cached=8000, written=3000,
                            cost=0.02415),
        expect=dict(provider="openrouter", endpoint_kind="chat.completions", model=SONNET_SNAPSHOT,
                    model_requested=SONNET, streamed=False, complete=True, billable=True, usage_reported=True,
                    billing="api", input_tokens=1000, cache_read_tokens=8000, cache_write_tokens=3000,
                    cache_write_1h_tokens=0, output_tokens=500, reasoning_tokens=0, error_type=None,
                    provider_request_id=GEN_ID, priced=True,
                    extra={"upstream_provider": "Anthropic", "reported_cost_usd": "0.02415", "is_byok": False},
                    cost_nanos=per_million((1000, "3"), (8000, "0.30"), (3000, "3.75"), (500, "15"))),
    ),
    Case(
        name="openrouter/stream-processing-comments-usage-chunk",
        host=HOST, path=PATH, request={"model": MINI, "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
        sse=True,
        response=stream(("Hel", "lo ", "日本 🙂"), usage(prompt=2500, completion=120, cached=1536, cost=0.0003318)),
        expect=dict(model=MINI, streamed=True, complete=True, usage_reported=True, input_tokens=964,
                    cache_read_tokens=1536, cache_write_tokens=0, output_tokens=120, incomplete_reason=None,
                    extra={"upstream_provider": "OpenAI", "reported_cost_usd": "0.0003318", "is_byok": False},
                    cost_nanos=per_million((964, "0.15"), (1536, "0.075"), (120, "0.60"))),
    ),
    Case(
        # The upstream failed after the stream began: an `error` data event, no usage.
        name="openrouter/stream-mid-stream-error-event",
        host=HOST, path=PATH, request={"model": MINI, "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
        sse=True,
        response=[*stream(("Hel", "lo"), None)[:4],
                  sse(chunk({"content": ""}, "error", error={"code": "server_error",
                                                             "message": "Provider disconnected unexpectedly"})),
                  b"data: [DONE]\n\n"],
        expect=dict(status=200, streamed=True, complete=False, error_type="server_error",
                    incomplete_reason="stream_error", usage_reported=False),
    ),
    Case(
        name="openrouter/json-byok-gemini-reasoning-brotli",
        host=HOST, path=PATH, request={**REQUEST, "model": "google/gemini-2.5-flash"}, encoding="br",
        response=completion("google/gemini-2.5-flash", "Google AI Studio", prompt=800, completion=1500,
                            reasoning=1100, cost=0.0001995, byok=True, upstream=0.00399),
        expect=dict(model="google/gemini-2.5-flash", input_tokens=800, output_tokens=1500, reasoning_tokens=1100,
                    extra={"upstream_provider": "Google AI Studio", "reported_cost_usd": "0.0001995",
                           "is_byok": True, "upstream_inference_cost_usd": "0.00399"},
                    cost_nanos=per_million((800, "0.30"), (1500, "2.50"))),
    ),
    Case(
        name="openrouter/json-model-missing-from-its-list-priced-at-vendor-list",
        host=HOST, path=PATH, request={**REQUEST, "model": "x-ai/grok-4"},
        response=completion("x-ai/grok-4", "xAI", prompt=1000, completion=300, reasoning=250, cost=0.0075),
        expect=dict(model="x-ai/grok-4", billable=True, usage_reported=True, input_tokens=1000, output_tokens=300,
                    reasoning_tokens=250, cost_nanos=per_million((1000, "3"), (300, "15")), priced=True,
                    extra={"upstream_provider": "xAI", "reported_cost_usd": "0.0075", "is_byok": False}),
    ),
    Case(
        name="openrouter/error-402-insufficient-credits",
        host=HOST, path=PATH, request=REQUEST, status=402,
        response=b'{"error":{"code":402,"message":"Insufficient credits. Add more using https://openrouter.ai/settings/credits"}}',
        expect=dict(status=402, error_type="402", billable=False, usage_reported=False, complete=True,
                    model=SONNET, cost_nanos=0, priced=True),
    ),
    Case(
        name="openrouter/stream-truncated",
        host=HOST, path=PATH, request={"model": MINI, "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
        sse=True, cut=True,
        response=stream(("Hel", "lo"), usage(prompt=10, completion=2, cost=0.0000027))[:5],
        expect=dict(complete=False, incomplete_reason="upstream_truncated", usage_reported=False, billable=True,
                    cost_nanos=None, priced=False),
    ),
]
