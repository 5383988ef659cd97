"""Response bodies shaped exactly like the ones Anthropic and OpenAI send, as bytes.

Every token count passed in appears verbatim in the body, in the field the provider uses for it, so a
test can assert the meter's numbers against its own arguments. The field semantics follow the providers'
API references and SDK types (Anthropic Messages API, OpenAI Chat Completions):

* Anthropic: `input_tokens` is the *uncached* input; `cache_write` is `cache_creation_input_tokens` (all
  TTLs), of which `cache_write_1h` is the `ephemeral_1h_input_tokens` part; `cache_read` is
  `cache_read_input_tokens`.
* OpenAI Chat Completions: `prompt_tokens` is the whole prompt *including* `cached_tokens`;
  `completion_tokens` includes `reasoning_tokens`; `total_tokens` is prompt + completion.

Stream builders return one `bytes` per SSE event, each ending in a blank line, so a test can hand them to
`Reply(pieces=...)` and pause or cut between events:

    from halton_meter.testing import bodies
    from halton_meter.testing.fake_provider import Pause, Reply

    events = bodies.anthropic_stream_events(input_tokens=10, output_tokens=5, chunks=("Hi", "!"))
    reply = Reply(pieces=[events[0], Pause(0.1), *events[1:]], sse=True)

JSON is serialised the way each provider does on the wire: Anthropic compact, OpenAI pretty-printed for
whole bodies (2-space indent for completions, 4 for errors) and compact inside SSE `data:` lines.

Why this module is long: it is the whole wire vocabulary of the two providers the fake serves (messages,
streams, errors, embeddings), one small builder per body shape, kept in one place so `bodies.X` is all a
test needs to import.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"
OPENAI_MODEL = "gpt-4o-2024-08-06"

_ANTHROPIC_MESSAGE_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
_ANTHROPIC_REQUEST_ID = "req_011CSHoEeqs5C3sYkJt4uQ4q"
_OPENAI_COMPLETION_ID = "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
_OPENAI_CREATED = 1741569952
_OPENAI_FINGERPRINT = "fp_f9f4fb6dbf"

__all__ = [
    "ANTHROPIC_MODEL",
    "OPENAI_MODEL",
    "anthropic_error",
    "anthropic_message",
    "anthropic_stream_error_event",
    "anthropic_stream_events",
    "openai_chat",
    "openai_chat_stream_events",
    "openai_embeddings",
    "openai_error",
]


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _check_counts(**counts: int | None) -> None:
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Anthropic Messages API
# --------------------------------------------------------------------------------------------------


def _anthropic_usage(
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
    cache_write_1h: int,
    service_tier: str,
    web_search_requests: int | None,
    thinking_tokens: int | None,
) -> dict[str, Any]:
    _check_counts(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read=cache_read,
        cache_write=cache_write,
        cache_write_1h=cache_write_1h,
        web_search_requests=web_search_requests,
        thinking_tokens=thinking_tokens,
    )
    if cache_write_1h > cache_write:
        raise ValueError(
            f"cache_write_1h ({cache_write_1h}) is part of cache_write ({cache_write}), not extra"
        )
    if thinking_tokens is not None and thinking_tokens > output_tokens:
        raise ValueError(f"thinking_tokens ({thinking_tokens}) is part of output_tokens ({output_tokens})")
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache_write - cache_write_1h,
            "ephemeral_1h_input_tokens": cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": service_tier,
    }
    if thinking_tokens is not None:
        usage["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
    if web_search_requests is not None:
        usage["server_tool_use"] = {"web_search_requests": web_search_requests}
    return usage


def anthropic_message(
    *,
    model: str = ANTHROPIC_MODEL,
    input_tokens: int = 25,
    output_tokens: int = 12,
    cache_read: int = 0,
    cache_write: int = 0,
    cache_write_1h: int = 0,
    text: str = "Hello!",
    stop_reason: str = "end_turn",
    service_tier: str = "standard",
    web_search_requests: int | None = None,
    thinking_tokens: int | None = None,
    message_id: str = _ANTHROPIC_MESSAGE_ID,
) -> bytes:
    """A non-streaming `POST /v1/messages` answer (a `Message` object).

    `web_search_requests` adds `usage.server_tool_use`, `thinking_tokens` adds
    `usage.output_tokens_details`; both are absent unless given, as in older responses.
    """
    usage = _anthropic_usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read=cache_read,
        cache_write=cache_write,
        cache_write_1h=cache_write_1h,
        service_tier=service_tier,
        web_search_requests=web_search_requests,
        thinking_tokens=thinking_tokens,
    )
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    return _compact(message).encode()


def _anthropic_event(name: str, data: dict[str, Any], *, spaced: bool = False) -> bytes:
    payload = json.dumps(data) if spaced else _compact(data)
    return f"event: {name}\ndata: {payload}\n\n".encode()


def anthropic_stream_events(
    *,
    model: str = ANTHROPIC_MODEL,
    input_tokens: int = 25,
    output_tokens: int = 12,
    cache_read: int = 0,
    cache_write: int = 0,
    cache_write_1h: int = 0,
    chunks: Sequence[str] = ("Hel", "lo!"),
    stop_reason: str = "end_turn",
    service_tier: str = "standard",
    web_search_requests: int | None = None,
    thinking_tokens: int | None = None,
    legacy_delta_usage: bool = False,
    message_id: str = _ANTHROPIC_MESSAGE_ID,
) -> list[bytes]:
    """The SSE events of a streaming `POST /v1/messages`, one complete event per element.

    Order: `message_start`, `content_block_start`, `ping`, one `content_block_delta` per chunk,
    `content_block_stop`, `message_delta`, `message_stop`. `message_start` carries the final input and
    cache numbers but only a provisional `output_tokens` (at most 1, as the API does); the final count
    arrives in `message_delta.usage`, which is cumulative. Current API versions repeat the input and
    cache fields there too; `legacy_delta_usage=True` sends only `output_tokens`, like older versions.
    The TTL split (`cache_creation`) exists only in `message_start`, as in the real stream.
    """
    usage = _anthropic_usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read=cache_read,
        cache_write=cache_write,
        cache_write_1h=cache_write_1h,
        service_tier=service_tier,
        web_search_requests=web_search_requests,
        thinking_tokens=thinking_tokens,
    )
    start_usage = {k: v for k, v in usage.items() if k not in ("output_tokens_details", "server_tool_use")}
    start_usage["output_tokens"] = min(1, output_tokens)

    delta_usage: dict[str, Any] = {"output_tokens": output_tokens}
    if not legacy_delta_usage:
        delta_usage = {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "output_tokens": output_tokens,
        }
    for optional in ("output_tokens_details", "server_tool_use"):
        if optional in usage:
            delta_usage[optional] = usage[optional]

    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    events = [
        _anthropic_event("message_start", {"type": "message_start", "message": message}),
        _anthropic_event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        # The API really does serialise ping with spaces, unlike every other event.
        _anthropic_event("ping", {"type": "ping"}, spaced=True),
    ]
    events += [
        _anthropic_event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": chunk}},
        )
        for chunk in chunks
    ]
    events += [
        _anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _anthropic_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": delta_usage,
            },
        ),
        _anthropic_event("message_stop", {"type": "message_stop"}),
    ]
    return events


def anthropic_error(
    *, type: str = "overloaded_error", message: str = "Overloaded", request_id: str = _ANTHROPIC_REQUEST_ID
) -> bytes:
    """An Anthropic error body (pair it with the matching status: 529 overloaded, 429 rate limit, ...)."""
    return _compact(
        {"type": "error", "error": {"type": type, "message": message}, "request_id": request_id}
    ).encode()


def anthropic_stream_error_event(*, type: str = "overloaded_error", message: str = "Overloaded") -> bytes:
    """An `event: error` that Anthropic sends inside a 200 stream instead of a 529/500 status."""
    return _anthropic_event("error", {"type": "error", "error": {"type": type, "message": message}})


# --------------------------------------------------------------------------------------------------
# OpenAI Chat Completions
# --------------------------------------------------------------------------------------------------


def _openai_usage(
    *, prompt_tokens: int, completion_tokens: int, cached_tokens: int, reasoning_tokens: int
) -> dict[str, Any]:
    _check_counts(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached_tokens,
        reasoning_tokens=reasoning_tokens,
    )
    if cached_tokens > prompt_tokens:
        raise ValueError(f"cached_tokens ({cached_tokens}) is part of prompt_tokens ({prompt_tokens})")
    if reasoning_tokens > completion_tokens:
        raise ValueError(
            f"reasoning_tokens ({reasoning_tokens}) is part of completion_tokens ({completion_tokens})"
        )
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def openai_chat(
    *,
    model: str = OPENAI_MODEL,
    prompt_tokens: int = 19,
    completion_tokens: int = 10,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    text: str = "Hi",
    finish_reason: str = "stop",
    service_tier: str = "default",
    completion_id: str = _OPENAI_COMPLETION_ID,
    created: int = _OPENAI_CREATED,
) -> bytes:
    """A non-streaming `POST /v1/chat/completions` answer (a `chat.completion` object)."""
    completion = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": _openai_usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            reasoning_tokens=reasoning_tokens,
        ),
        "service_tier": service_tier,
        "system_fingerprint": _OPENAI_FINGERPRINT,
    }
    return (json.dumps(completion, indent=2, ensure_ascii=False) + "\n").encode()


def openai_chat_stream_events(
    *,
    model: str = OPENAI_MODEL,
    prompt_tokens: int = 19,
    completion_tokens: int = 10,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    include_usage: bool = True,
    chunks: Sequence[str] = ("Hi", "!"),
    finish_reason: str = "stop",
    service_tier: str = "default",
    completion_id: str = _OPENAI_COMPLETION_ID,
    created: int = _OPENAI_CREATED,
) -> list[bytes]:
    """The SSE events of a streaming chat completion, one `data:` event per element, ending in `[DONE]`.

    With `include_usage` (the request's `stream_options.include_usage`) every chunk carries
    `"usage": null` and an extra chunk with empty `choices` and the full usage precedes `[DONE]`;
    without it no chunk has a `usage` key at all, so the call's usage is unknowable, as with the real API.
    """
    usage = _openai_usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached_tokens,
        reasoning_tokens=reasoning_tokens,
    )

    def chunk(choices: list[dict[str, Any]], chunk_usage: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": service_tier,
            "system_fingerprint": _OPENAI_FINGERPRINT,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = chunk_usage
        return f"data: {_compact(body)}\n\n".encode()

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    events = [chunk(choice({"role": "assistant", "content": "", "refusal": None}))]
    events += [chunk(choice({"content": text})) for text in chunks]
    events.append(chunk(choice({}, finish_reason)))
    if include_usage:
        events.append(chunk([], usage))
    events.append(b"data: [DONE]\n\n")
    return events


def openai_error(
    *,
    code: str | None = "rate_limit_exceeded",
    type: str = "requests",
    message: str = (
        "Rate limit reached for gpt-4o in organization org-fake on requests per min (RPM): "
        "Limit 500, Used 500, Requested 1. Please try again in 120ms. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    ),
    param: str | None = None,
) -> bytes:
    """An OpenAI-style error body (also what xAI, Groq, DeepSeek, Mistral and OpenRouter send)."""
    error = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return (json.dumps(error, indent=4, ensure_ascii=False) + "\n").encode()


def openai_embeddings(inputs: int = 2048, dims: int = 1536, *, seed: int = 7,
                      model: str = "text-embedding-3-small", prompt_tokens: int = 98304) -> bytes:
    """An OpenAI embeddings response as the API writes it (pretty-printed, float32 values): with the
    defaults, 2,048 × 1,536 floats, about 68 MiB — far past any whole-body parse budget, with `usage` and
    `model` at its end."""
    import random
    import struct

    rnd = random.Random(seed)
    values = [struct.unpack("f", struct.pack("f", rnd.uniform(-0.1, 0.1)))[0] for _ in range(dims)]
    vector = ",\n        ".join(f"{v:.9g}" for v in values)
    parts = ['{\n  "object": "list",\n  "data": [\n']
    for i in range(inputs):
        parts.append(f'    {{\n      "object": "embedding",\n      "index": {i},\n      "embedding": [\n'
                     f'        {vector}\n      ]\n    }}{",\n" if i < inputs - 1 else "\n"}')
    parts.append(f'  ],\n  "model": "{model}",\n'
                 f'  "usage": {{\n    "prompt_tokens": {prompt_tokens},\n    "total_tokens": {prompt_tokens}\n  }}\n}}\n')
    return "".join(parts).encode()
