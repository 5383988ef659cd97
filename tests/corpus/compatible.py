"""User-declared compatible endpoints (`[[compatible]]`): a gateway speaking the OpenAI format, priced by a
local override, and a proxy speaking the Anthropic format under its own path prefix, priced at Anthropic's
public list (Sonnet 4.5: $3 in, $15 out per MTok)."""

from __future__ import annotations

import json

from corpus import Case, per_million, sse

CONFIG = """
[[compatible]]
name = "corp-gateway"
hosts = ["llm.corp.test"]
format = "openai"

[[compatible]]
name = "claude-proxy"
hosts = ["claude.corp.test"]
format = "anthropic"
path_prefix = "/anthropic/v1"
price_as = "anthropic"

[prices.corp-gateway."llama-3.3-70b"]
input = 0.6
output = 0.8
"""


def chat(model: str, prompt: int, completion: int) -> bytes:
    return json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                 "total_tokens": prompt + completion}}).encode()


def chunk(model: str, choices: list, usage: dict | None) -> bytes:
    return sse({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": choices,
                "usage": usage})


STREAM = [
    chunk("llama-3.3-70b", [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}], None),
    chunk("llama-3.3-70b", [{"index": 0, "delta": {}, "finish_reason": "stop"}], None),
    chunk("llama-3.3-70b", [], {"prompt_tokens": 2000, "completion_tokens": 300, "total_tokens": 2300}),
    b"data: [DONE]\n\n",
]

CASES = [
    Case(
        name="compatible/openai-format-gateway-priced-by-override",
        host="llm.corp.test", path="/v1/chat/completions",
        request={"model": "llama-3.3-70b", "messages": [{"role": "user", "content": "hi"}]},
        response=chat("llama-3.3-70b", 1000, 200),
        expect=dict(provider="corp-gateway", endpoint_kind="chat.completions", model="llama-3.3-70b",
                    input_tokens=1000, output_tokens=200, priced=True,
                    price_source='config prices.corp-gateway."llama-3.3-70b"',
                    cost_nanos=per_million((1000, "0.6"), (200, "0.8"))),
    ),
    Case(
        name="compatible/openai-format-gateway-stream",
        host="llm.corp.test", path="/v1/chat/completions", sse=True,
        request={"model": "llama-3.3-70b", "stream": True, "stream_options": {"include_usage": True}, "messages": []},
        response=STREAM,
        expect=dict(provider="corp-gateway", streamed=True, complete=True, input_tokens=2000, output_tokens=300,
                    cost_nanos=per_million((2000, "0.6"), (300, "0.8"))),
    ),
    Case(
        name="compatible/unknown-model-is-unpriced-not-free",
        host="llm.corp.test", path="/v1/chat/completions",
        request={"model": "house-model-7b", "messages": []},
        response=chat("house-model-7b", 50, 5),
        expect=dict(provider="corp-gateway", billable=True, input_tokens=50, output_tokens=5,
                    cost_nanos=None, priced=False, price_source="no price data for this provider"),
    ),
    Case(
        name="compatible/anthropic-format-proxy-under-a-prefix",
        host="claude.corp.test", path="/anthropic/v1/messages",
        request={"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []},
        response=json.dumps({"id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
                             "content": [], "usage": {"input_tokens": 700, "output_tokens": 70}}).encode(),
        expect=dict(provider="claude-proxy", endpoint_kind="messages", input_tokens=700, output_tokens=70,
                    cost_nanos=per_million((700, "3"), (70, "15"))),
    ),
]
