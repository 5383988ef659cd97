"""xAI (docs/providers/xai.md): Chat Completions and Responses on `api.x.ai`.

xAI list prices per million tokens (input / cached input / output): grok-4 (grok-4-0709) $3 / $0.75 / $15;
grok-3-mini $0.30 / $0.075 / $0.50; grok-4-fast-reasoning $0.20 / $0.05 / $0.50. Reasoning tokens are
billed at the output rate. On Chat Completions xAI reports them outside `completion_tokens`
(total = prompt + completion + reasoning). `cost_in_usd_ticks` is what xAI says it charged (1e10 ticks per
USD); the fixtures use the list-price cost, so the two agree.
"""

from __future__ import annotations

from typing import Any

from corpus import Case, per_million, sse
from corpus.openai import chat_stream, dumps, injected, response_object, responses_stream

HOST = "api.x.ai"
MESSAGES = [{"role": "user", "content": "What is 101 * 3?"}]


def xai_chat_usage(prompt: int, completion: int, reasoning: int, cached: int = 0, ticks: int | None = None,
                   sources: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion + reasoning,
        "prompt_tokens_details": {"text_tokens": prompt, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        "num_sources_used": sources,
    }
    if ticks is not None:
        usage["cost_in_usd_ticks"] = ticks
    return usage


def chat_completion(model: str, usage: dict[str, Any]) -> bytes:
    return dumps({"id": "3f1e7c9a-0b52-4c8e-9a3d-5b2f0e6d7c11", "object": "chat.completion", "created": 1752019200,
                  "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": "303",
                                                                       "refusal": None}, "finish_reason": "stop"}],
                  "usage": usage, "system_fingerprint": "fp_3a40c2ab65"})


# grok-4: 26 uncached * $3 + 6 cached * $0.75 + (9 + 144) output * $15 = $0.0023775 = 23,775,000 ticks
_GROK4_USAGE = xai_chat_usage(32, 9, 144, cached=6, ticks=23_775_000)
# grok-3-mini: 200 * $0.30 + 40 * $0.50 + reasoning 300 * $0.50 = $0.00023 = 2,300,000 ticks
_stream, _stream_view = chat_stream("grok-3-mini", ("3", "03"), xai_chat_usage(200, 40, 300, ticks=2_300_000),
                                    include_usage=True, service_tier="omit", system_fingerprint="fp_3a40c2ab65")
STREAM_REQUEST = {"model": "grok-3-mini", "messages": MESSAGES, "stream": True}

CASES = [
    Case(
        name="xai/chat-json-reasoning-outside-completion",
        host=HOST, path="/v1/chat/completions", request={"model": "grok-4", "messages": MESSAGES},
        response=chat_completion("grok-4-0709", _GROK4_USAGE),
        expect=dict(provider="xai", endpoint_kind="chat.completions", model="grok-4-0709", model_requested="grok-4",
                    complete=True, billable=True, usage_reported=True, input_tokens=26, cache_read_tokens=6,
                    output_tokens=153, reasoning_tokens=144, error_type=None,
                    extra={"cost_in_usd_ticks": 23_775_000, "reported_cost_usd": "0.0023775000",
                           "num_sources_used": 0},
                    cost_nanos=per_million((26, "3"), (6, "0.75"), (153, "15"))),
    ),
    Case(
        name="xai/chat-stream-include-usage-injected",
        host=HOST, path="/v1/chat/completions", request=STREAM_REQUEST, sse=True,
        upstream_request=injected(STREAM_REQUEST),
        response=_stream, client_view=_stream_view,
        expect=dict(streamed=True, complete=True, usage_reported=True, model="grok-3-mini", input_tokens=200,
                    output_tokens=340, reasoning_tokens=300,
                    extra={"usage_injected": True, "cost_in_usd_ticks": 2_300_000,
                           "reported_cost_usd": "0.0002300000", "num_sources_used": 0},
                    cost_nanos=per_million((200, "0.30"), (340, "0.50"))),
    ),
    Case(
        name="xai/chat-error-400-grpc-code",
        host=HOST, path="/v1/chat/completions", request={"model": "grok-4", "messages": MESSAGES}, status=400,
        response=dumps({"code": "Client specified an invalid argument",
                        "error": "Incorrect API key provided: xa***ry. You can obtain an API key from https://console.x.ai."}),
        expect=dict(status=400, error_type="invalid_argument", billable=False, usage_reported=False, cost_nanos=0),
    ),
    Case(
        name="xai/responses-stream-completed",
        host=HOST, path="/v1/responses", sse=True,
        request={"model": "grok-4-fast-reasoning", "input": "What is 101 * 3?", "stream": True},
        response=responses_stream(
            "grok-4-fast-reasoning", "response.completed",
            response_object("grok-4-fast-reasoning", rid="resp_xai_01",
                            usage={"input_tokens": 5000, "input_tokens_details": {"cached_tokens": 4000},
                                   "output_tokens": 700, "output_tokens_details": {"reasoning_tokens": 650},
                                   "total_tokens": 5700, "num_sources_used": 2, "cost_in_usd_ticks": 507_500_000})),
        expect=dict(endpoint_kind="responses", streamed=True, complete=True, model="grok-4-fast-reasoning",
                    input_tokens=1000, cache_read_tokens=4000, output_tokens=700, reasoning_tokens=650,
                    provider_request_id="resp_xai_01",
                    extra={"service_tier": "default", "cost_in_usd_ticks": 507_500_000,
                           "reported_cost_usd": "0.0507500000", "num_sources_used": 2},
                    # Tokens: 1000 * $0.20 + 4000 * $0.05 + 700 * $0.50 = $0.00075. xAI's own figure adds two
                    # live-search sources at $25 per 1,000 ($0.05), which list-price token pricing cannot see.
                    cost_nanos=per_million((1000, "0.20"), (4000, "0.05"), (700, "0.50"))),
    ),
    Case(
        name="xai/responses-stream-truncated",
        host=HOST, path="/v1/responses", sse=True, cut=True,
        request={"model": "grok-4-fast-reasoning", "input": "Hi", "stream": True},
        response=responses_stream("grok-4-fast-reasoning", None, None),
        expect=dict(streamed=True, complete=False, incomplete_reason="upstream_truncated", usage_reported=False,
                    billable=True, cost_nanos=None, priced=False),
    ),
    Case(
        name="xai/responses-error-event",
        host=HOST, path="/v1/responses", sse=True,
        request={"model": "grok-4-fast-reasoning", "input": "Hi", "stream": True},
        response=responses_stream("grok-4-fast-reasoning", None, None, tail=[sse(
            {"type": "error", "code": "server_error", "message": "Internal error", "param": None,
             "sequence_number": 7}, "error")]),
        expect=dict(streamed=True, complete=False, error_type="server_error", incomplete_reason="stream_error",
                    billable=True, cost_nanos=None, priced=False),
    ),
]
