"""DeepSeek (docs/providers/deepseek.md).

Prices: genai-prices prices deepseek-chat and deepseek-reasoner by time of day (UTC 00:30–16:30 standard,
otherwise a discount), and a call replayed through the real proxy is priced at the wall-clock time it ran,
so these cases assert `priced` only; tests/test_provider_chat_vendors.py replays them at fixed peak and
off-peak timestamps against hand-computed costs. Usage: input = prompt_cache_miss_tokens, cache_read =
prompt_cache_hit_tokens.
"""

from __future__ import annotations

import json
from typing import Any

from corpus import Case, sse

HOST = "api.deepseek.com"
CHAT = "deepseek-chat"
REASONER = "deepseek-reasoner"
REQUEST = {"model": CHAT, "messages": [{"role": "user", "content": "Hi"}]}
STREAM_REQUEST = {**REQUEST, "stream": True, "stream_options": {"include_usage": True}}
CHAT_ID = "930c60df-bf64-41c9-a88e-3ec75f81e00e"


def usage(hit: int, miss: int, completion: int, reasoning: int | None = None, mirror: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt_tokens": hit + miss, "completion_tokens": completion,
                            "total_tokens": hit + miss + completion}
    if mirror:  # undocumented OpenAI-style mirror of the hit count
        body["prompt_tokens_details"] = {"cached_tokens": hit}
    if reasoning is not None:
        body["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    body["prompt_cache_hit_tokens"] = hit
    body["prompt_cache_miss_tokens"] = miss
    return body


def completion(model: str = CHAT, text: str = "Hello! How can I help you today?", **u: Any) -> bytes:
    body = {"id": CHAT_ID, "object": "chat.completion", "created": 1763812800, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": "stop"}],
            "usage": usage(**u), "system_fingerprint": "fp_8802369eaa_prod0623_fp8_kvcache"}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, model: str = CHAT,
          choices: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": CHAT_ID, "object": "chat.completion.chunk", "created": 1763812800, "model": model,
            "system_fingerprint": "fp_8802369eaa_prod0623_fp8_kvcache",
            "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
            if choices is None else choices, **extra}


KEEP_ALIVE = b": keep-alive\n\n"


def stream(reasoning: tuple[str, ...], texts: tuple[str, ...], final: dict[str, Any] | None,
           model: str = CHAT, usage_null: bool = True) -> list[bytes]:
    """With include_usage every chunk carries `"usage":null` and a usage chunk (no choices) ends it."""
    null: dict[str, Any] = {"usage": None} if usage_null else {}
    events = [sse(chunk({"role": "assistant", "content": None, "reasoning_content": ""}, model=model, **null))]
    events += [sse(chunk({"content": None, "reasoning_content": r}, model=model, **null)) for r in reasoning]
    events += [sse(chunk({"content": t, "reasoning_content": None}, model=model, **null)) for t in texts]
    events.append(sse(chunk({"content": ""}, "stop", model=model, **null)))
    if final is not None:
        events.append(sse(chunk(choices=[], model=model, usage=final)))
    events.append(b"data: [DONE]\n\n")
    return events


CASES = [
    Case(
        name="deepseek/json-chat-cache-hit-miss",
        host=HOST, path="/chat/completions", request=REQUEST,
        response=completion(hit=1280, miss=220, completion=80),
        expect=dict(provider="deepseek", endpoint_kind="chat.completions", model=CHAT, model_requested=CHAT,
                    streamed=False, complete=True, billable=True, usage_reported=True, billing="api",
                    input_tokens=220, cache_read_tokens=1280, cache_write_tokens=0, output_tokens=80,
                    reasoning_tokens=None, error_type=None, provider_request_id=CHAT_ID, priced=True),
    ),
    Case(
        # Under load DeepSeek sends bare blank lines before the delayed JSON body.
        name="deepseek/json-leading-keepalive-blank-lines",
        host=HOST, path="/v1/chat/completions", request=REQUEST,
        response=[b"\n", b"\n\n", b"\n", completion(hit=0, miss=35, completion=12, text="Привет, 世界 ✓")],
        expect=dict(complete=True, usage_reported=True, input_tokens=35, cache_read_tokens=0, output_tokens=12,
                    incomplete_reason=None, priced=True),
    ),
    Case(
        name="deepseek/json-gzip-v1-path",
        host=HOST, path="/v1/chat/completions", request=REQUEST, encoding="gzip",
        response=completion(hit=64, miss=1000, completion=400, mirror=False),
        expect=dict(complete=True, input_tokens=1000, cache_read_tokens=64, output_tokens=400, priced=True),
    ),
    Case(
        name="deepseek/stream-reasoner-keepalive-comments",
        host=HOST, path="/chat/completions", request={**STREAM_REQUEST, "model": REASONER}, sse=True,
        response=[KEEP_ALIVE, KEEP_ALIVE,
                  *stream(("Okay, the user", " says hi."), ("Hi", " there! 😊"),
                          usage(hit=512, miss=17, completion=230, reasoning=198), model=REASONER)],
        expect=dict(model=REASONER, streamed=True, complete=True, usage_reported=True, input_tokens=17,
                    cache_read_tokens=512, output_tokens=230, reasoning_tokens=198, incomplete_reason=None,
                    priced=True),
    ),
    Case(
        # The client did not ask for usage: DeepSeek would send none, so the OpenAI-compatible base asks
        # for it upstream and the client still sees the stream it asked for.
        name="deepseek/stream-include-usage-injected",
        host=HOST, path="/chat/completions", request={**REQUEST, "stream": True}, sse=True,
        response=[KEEP_ALIVE, *stream((), ("Hi", " there ✓"), usage(hit=128, miss=6, completion=4))],
        upstream_request={**REQUEST, "stream": True, "stream_options": {"include_usage": True}},
        client_view=b"".join([KEEP_ALIVE, *stream((), ("Hi", " there ✓"), None, usage_null=False)]),
        expect=dict(streamed=True, complete=True, usage_reported=True, input_tokens=6, cache_read_tokens=128,
                    output_tokens=4, extra={"usage_injected": True}, priced=True),
    ),
    Case(
        name="deepseek/stream-truncated-after-keepalive",
        host=HOST, path="/chat/completions", request=STREAM_REQUEST, sse=True, cut=True,
        response=[KEEP_ALIVE, *stream((), ("Hel", "lo"), usage(hit=0, miss=9, completion=2))[:3]],
        expect=dict(streamed=True, complete=False, incomplete_reason="upstream_truncated", usage_reported=False,
                    billable=True, cost_nanos=None, priced=False),
    ),
    Case(
        name="deepseek/error-402-insufficient-balance",
        host=HOST, path="/chat/completions", request=REQUEST, status=402,
        response=b'{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}',
        expect=dict(status=402, error_type="invalid_request_error", billable=False, usage_reported=False,
                    complete=True, model=CHAT, cost_nanos=0, priced=True),
    ),
]
