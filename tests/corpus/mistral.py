"""Mistral (docs/providers/mistral.md). Prices per MTok as genai-prices' `mistral` entries give them for
2026-11-22 (checked against mistral.ai/pricing where it publishes them): mistral-large-2512 (Large 3)
input $0.50, output $1.50; mistral-medium-latest input $1.50, cached $0.15, output $7.50;
mistral-small-latest input $0.15, cached $0.015, output $0.60; codestral-latest input $0.30, output
$0.90; mistral-embed input $0.10. Cached prompt tokens bill at 10% of input."""

from __future__ import annotations

import json
from typing import Any

from corpus import Case, per_million, sse

HOST = "api.mistral.ai"
PATH = "/v1/chat/completions"
LARGE = "mistral-large-2512"
MEDIUM = "mistral-medium-latest"
SMALL = "mistral-small-latest"
REQUEST = {"model": LARGE, "messages": [{"role": "user", "content": "Salut"}]}
STREAM_REQUEST = {**REQUEST, "model": SMALL, "stream": True}
CHAT_ID = "cmpl-e5cc70bb28c444948073e77776eb30ef"


def usage(prompt: int, completion: int, cached: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt_tokens": prompt, "total_tokens": prompt + completion,
                            "completion_tokens": completion}
    if cached is not None:
        body["prompt_tokens_details"] = {"cached_tokens": cached}
    return body


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def completion(model: str = LARGE, text: str = "Salut ! Comment puis-je vous aider ?", **u: Any) -> bytes:
    return dumps({"id": CHAT_ID, "object": "chat.completion", "created": 1763812800, "model": model,
                  "choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": None, "content": text},
                               "finish_reason": "stop"}],
                  "usage": usage(**u)})


def chunk(delta: dict[str, Any], finish: str | None = None, model: str = SMALL, **extra: Any) -> dict[str, Any]:
    return {"id": CHAT_ID, "object": "chat.completion.chunk", "created": 1763812800, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def stream(texts: tuple[str, ...], final_usage: dict[str, Any], model: str = SMALL) -> list[bytes]:
    """Mistral's stream: usage rides on the chunk with finish_reason, no separate usage chunk."""
    events = [sse(chunk({"role": "assistant", "content": ""}, model=model))]
    events += [sse(chunk({"content": t}, model=model)) for t in texts]
    events.append(sse(chunk({"content": ""}, "stop", model=model, usage=final_usage)))
    events.append(b"data: [DONE]\n\n")
    return events


CASES = [
    Case(
        name="mistral/json-large-2512",
        host=HOST, path=PATH, request=REQUEST,
        response=completion(prompt=50, completion=120),
        expect=dict(provider="mistral", endpoint_kind="chat.completions", model=LARGE, model_requested=LARGE,
                    streamed=False, complete=True, billable=True, usage_reported=True, billing="api",
                    input_tokens=50, output_tokens=120, cache_read_tokens=0, cache_write_tokens=0,
                    reasoning_tokens=None, error_type=None, provider_request_id=CHAT_ID, priced=True,
                    cost_nanos=per_million((50, "0.50"), (120, "1.50"))),
    ),
    Case(
        name="mistral/stream-usage-on-finish-chunk-unicode",
        host=HOST, path=PATH, request=STREAM_REQUEST, sse=True,
        response=stream(("Voilà", " — « ça marche » ", "日本 \u2028 ✓ 🙂"), usage(prompt=20, completion=30)),
        expect=dict(model=SMALL, streamed=True, complete=True, usage_reported=True, input_tokens=20,
                    output_tokens=30, incomplete_reason=None,
                    cost_nanos=per_million((20, "0.15"), (30, "0.60"))),
    ),
    Case(
        name="mistral/stream-medium-cached-tokens",
        host=HOST, path=PATH, request={**STREAM_REQUEST, "model": MEDIUM, "prompt_cache_key": "repo-42"}, sse=True,
        response=stream(("ok",), usage(prompt=4000, completion=100, cached=3000), model=MEDIUM),
        expect=dict(model=MEDIUM, complete=True, input_tokens=1000, cache_read_tokens=3000, output_tokens=100,
                    cost_nanos=per_million((1000, "1.50"), (3000, "0.15"), (100, "7.50"))),
    ),
    Case(
        name="mistral/stream-truncated-before-finish-chunk",
        host=HOST, path=PATH, request=STREAM_REQUEST, sse=True, cut=True,
        response=stream(("Hel", "lo"), usage(prompt=8, completion=2))[:3],
        expect=dict(complete=False, incomplete_reason="upstream_truncated", usage_reported=False, billable=True,
                    cost_nanos=None, priced=False),
    ),
    Case(
        name="mistral/error-429-rate-limited",
        host=HOST, path=PATH, request=REQUEST, status=429,
        response=b'{"object":"error","message":"Rate limit exceeded","type":"rate_limited","param":null,"code":"1300","raw_status_code":429}',
        expect=dict(status=429, error_type="rate_limited", billable=False, usage_reported=False, complete=True,
                    model=LARGE, cost_nanos=0, priced=True, extra={"error_code": "1300"}),
    ),
    Case(
        name="mistral/error-422-validation-gzip",
        host=HOST, path=PATH, request=REQUEST, status=422, encoding="gzip",
        response=dumps({"object": "error", "message": {"detail": [
            {"type": "extra_forbidden", "loc": ["body", "stream_options"], "msg": "Extra inputs are not permitted",
             "input": {"include_usage": True}}]}, "type": "invalid_request_error", "param": None, "code": None}),
        expect=dict(status=422, error_type="invalid_request_error", billable=False, cost_nanos=0, extra={}),
    ),
    Case(
        name="mistral/fim-codestral",
        host=HOST, path="/v1/fim/completions",
        request={"model": "codestral-latest", "prompt": "def add(a, b):", "suffix": "\n"},
        response=completion(model="codestral-latest", text="\n    return a + b", prompt=30, completion=12),
        expect=dict(endpoint_kind="fim.completions", model="codestral-latest", billable=True, complete=True,
                    input_tokens=30, output_tokens=12, cost_nanos=per_million((30, "0.30"), (12, "0.90"))),
    ),
    Case(
        name="mistral/embeddings",
        host=HOST, path="/v1/embeddings", request={"model": "mistral-embed", "input": ["Embed this sentence."]},
        response=dumps({"id": "embd-aad6fc62b17349b192ef09225058bc45", "object": "list",
                        "data": [{"object": "embedding", "embedding": [-0.0165, 0.0701, 0.0312], "index": 0}],
                        "model": "mistral-embed", "usage": {"prompt_tokens": 9, "total_tokens": 9,
                                                            "completion_tokens": 0}}),
        expect=dict(endpoint_kind="embeddings", model="mistral-embed", billable=True, usage_reported=True,
                    input_tokens=9, output_tokens=0, cost_nanos=per_million((9, "0.10"))),
    ),
]
