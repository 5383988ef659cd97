"""OpenAI (docs/providers/openai.md, docs/providers/index.md): Chat Completions, Responses, Embeddings on `api.openai.com`.

List prices, USD per million tokens (input / cached input / output), as published by OpenAI:
gpt-4o $2.50 / $1.25 / $10; gpt-4o-mini $0.15 / $0.075 / $0.60; gpt-4.1 $2 / $0.50 / $8;
gpt-5 $1.25 / $0.125 / $10, Flex tier $0.625 / $0.0625 / $5; o4-mini $1.10 / $0.275 / $4.40;
o3 $2 / $0.50 / $8; text-embedding-3-small $0.02 (input only).

Chat streams whose client did not ask for usage get `stream_options.include_usage` added on the way up,
and the usage chunk plus every `"usage":null` taken out on the way down: `upstream_request` and
`client_view` say exactly what each side must see.
"""

from __future__ import annotations

import json
from typing import Any

from corpus import Case, per_million, sse

HOST = "api.openai.com"
CHAT_PATH = "/v1/chat/completions"
CHAT_ID = "chatcmpl-CiKIfaJe92tvtH3QZModD64Qz5uvn"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello — “ünïcode” ✓"}]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# ---- Chat Completions ----------------------------------------------------------------------------


def chat_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0, total: int | None = None,
               **more: Any) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion if total is None else total,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        **more,
    }


def chat_completion(model: str, usage: dict[str, Any], text: str = "Hello! “ünïcode” ✓ \u2028 ok",
                    service_tier: str = "default") -> bytes:
    return dumps({
        "id": CHAT_ID, "object": "chat.completion", "created": 1764680501, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                             "annotations": []}, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage, "service_tier": service_tier, "system_fingerprint": "fp_1a97b5aa6c",
    })


def chat_chunk(model: str, delta: dict[str, Any] | None, finish: str | None = None, *, usage: Any = "omit",
               choices: list[Any] | None = None, obfuscation: str | None = None, **envelope: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": CHAT_ID, "object": "chat.completion.chunk", "created": 1764680501, "model": model,
        "service_tier": "default", "system_fingerprint": "fp_1a97b5aa6c", **envelope,
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
        if choices is None else choices,
    }
    body = {k: v for k, v in body.items() if v != "omit"}  # an envelope field a vendor does not send
    if usage != "omit":
        body["usage"] = usage
    if obfuscation is not None:
        body["obfuscation"] = obfuscation
    return body


def chat_stream(model: str, texts: tuple[str, ...], usage: dict[str, Any] | None, *, include_usage: bool,
                eol: str = "\n", obfuscate: bool = False, done: bool = True,
                **envelope: Any) -> tuple[list[bytes], bytes]:
    """(what the provider writes, what a client that never asked for usage would have received).

    With `include_usage` every chunk carries `"usage":null` and a usage-only chunk (empty `choices`) comes
    before `[DONE]`; without it neither exists. Obfuscation padding (OpenAI, since 2025) follows `usage`."""

    def pad(i: int) -> str | None:
        return f"pad{i}" * (i + 1) if obfuscate else None

    deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": "", "refusal": None}, None)]
    deltas += [({"content": t}, None) for t in texts]
    deltas.append(({}, "stop"))
    upstream, plain = [], []
    for i, (delta, finish) in enumerate(deltas):
        upstream.append(sse(chat_chunk(model, delta, finish, usage=None if include_usage else "omit",
                                       obfuscation=pad(i), **envelope), eol=eol))
        plain.append(sse(chat_chunk(model, delta, finish, obfuscation=pad(i), **envelope), eol=eol))
    if include_usage and usage is not None:
        upstream.append(sse(chat_chunk(model, None, choices=[], usage=usage, obfuscation=pad(len(deltas)),
                                       **envelope), eol=eol))
    if done:
        upstream.append(f"data: [DONE]{eol}{eol}".encode())
        plain.append(f"data: [DONE]{eol}{eol}".encode())
    return upstream, b"".join(plain)


def injected(request: dict[str, Any]) -> dict[str, Any]:
    return {"stream_options": {"include_usage": True}, **request}


# ---- Responses -----------------------------------------------------------------------------------


def responses_usage(inp: int, out: int, cached: int = 0, reasoning: int = 0, **more: Any) -> dict[str, Any]:
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": inp + out, **more}


def response_object(model: str, status: str = "completed", usage: dict[str, Any] | None = None,
                    output_text: str | None = "Hello! ✓", error: dict[str, Any] | None = None,
                    incomplete: str | None = None, service_tier: str = "default", rid: str = "resp_68af") -> dict:
    output: list[dict[str, Any]] = [{"id": "rs_01", "type": "reasoning", "summary": []}]
    if output_text is not None:
        output.append({"id": "msg_01", "type": "message", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": output_text}]})
    return {
        "id": rid, "object": "response", "created_at": 1756315657, "status": status, "background": False,
        "error": error, "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": None, "max_output_tokens": None, "model": model,
        "output": output if status != "in_progress" else [], "parallel_tool_calls": True,
        "previous_response_id": None, "reasoning": {"effort": "medium", "summary": None},
        "service_tier": service_tier, "store": True, "temperature": 1.0, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None, "metadata": {},
    }


def responses_stream(model: str, terminal: str | None, final: dict[str, Any] | None,
                     texts: tuple[str, ...] = ("Hel", "lo ✓"), eol: str = "\n", tail: list[bytes] | None = None,
                     service_tier: str = "auto") -> list[bytes]:
    """Named events with `sequence_number`; the terminal event (if any) carries the final Response."""
    seq = iter(range(1000))
    start = response_object(model, status="in_progress", service_tier=service_tier)

    def event(kind: str, **fields: Any) -> bytes:
        return sse({"type": kind, "sequence_number": next(seq), **fields}, kind, eol)

    events = [event("response.created", response=start), event("response.in_progress", response=start),
              event("response.output_item.added", output_index=0,
                    item={"id": "msg_01", "type": "message", "status": "in_progress", "content": [],
                          "role": "assistant"}),
              event("response.content_part.added", item_id="msg_01", output_index=0, content_index=0,
                    part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""})]
    events += [event("response.output_text.delta", item_id="msg_01", output_index=0, content_index=0, delta=t,
                     logprobs=[], obfuscation="xY") for t in texts]
    if terminal is not None:
        events.append(event(terminal, response=final))
    return events + (tail or [])


# ---- Embeddings ----------------------------------------------------------------------------------

EMBEDDING_B64 = "AAAAAAAAgD8AAABAAABAQA=="  # four little-endian float32s, as the SDK's base64 format returns


def embeddings_body(model: str, vectors: int, prompt_tokens: int) -> bytes:
    return dumps({"object": "list",
                  "data": [{"object": "embedding", "index": i, "embedding": EMBEDDING_B64} for i in range(vectors)],
                  "model": model, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})


def error_body(message: str, type_: str | None, code: str | None, param: str | None = None) -> bytes:
    return dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


# ---- the cases -----------------------------------------------------------------------------------

CHAT_REQUEST = {"model": "gpt-4o", "messages": MESSAGES}
STREAM_REQUEST = {"model": "gpt-4o", "messages": MESSAGES, "stream": True, "temperature": 0.2}

_injected_lf, _injected_lf_view = chat_stream(
    "gpt-4o-2024-08-06", ("Hello", " — “ünïcode” ✓ \u2028 ", "\U0001F600"),
    chat_usage(1234, 56, cached=1024), include_usage=True, obfuscate=True)
_injected_crlf, _injected_crlf_view = chat_stream(
    "gpt-4o-mini-2024-07-18", ("Hi", " there"), chat_usage(20, 9), include_usage=True, eol="\r\n")
_client_usage, _ = chat_stream("gpt-4.1-2025-04-14", ("Hel", "lo"), chat_usage(3000, 250, cached=2048),
                               include_usage=True)
_truncated, _ = chat_stream("gpt-4o-2024-08-06", ("Hel", "lo", " there"), chat_usage(10, 3), include_usage=True)

CASES = [
    # ---- Chat Completions ----
    Case(
        name="openai/chat-json-o4-mini-cached-and-reasoning",
        host=HOST, path=CHAT_PATH, request={"model": "o4-mini", "messages": MESSAGES},
        response=chat_completion("o4-mini-2025-04-16", chat_usage(2006, 300, cached=1920, reasoning=192)),
        expect=dict(provider="openai", endpoint_kind="chat.completions", model="o4-mini-2025-04-16",
                    model_requested="o4-mini", streamed=False, complete=True, billable=True, usage_reported=True,
                    estimated=False, billing="api", input_tokens=86, cache_read_tokens=1920, cache_write_tokens=0,
                    output_tokens=300, reasoning_tokens=192, error_type=None, incomplete_reason=None,
                    provider_request_id=CHAT_ID, extra={"service_tier": "default"},
                    cost_nanos=per_million((86, "1.10"), (1920, "0.275"), (300, "4.40"))),
    ),
    Case(
        name="openai/chat-json-gzip",
        host=HOST, path=CHAT_PATH, request=CHAT_REQUEST, encoding="gzip",
        response=chat_completion("gpt-4o-2024-08-06", chat_usage(19, 10)),
        expect=dict(model="gpt-4o-2024-08-06", complete=True, input_tokens=19, output_tokens=10,
                    reasoning_tokens=0, cost_nanos=per_million((19, "2.50"), (10, "10"))),
    ),
    Case(
        # The client did not ask for usage: the meter asks, then hides the usage chunk and every
        # `"usage":null` (here before OpenAI's obfuscation padding) so the client sees its own stream.
        name="openai/chat-stream-include-usage-injected",
        host=HOST, path=CHAT_PATH, request=STREAM_REQUEST, sse=True,
        upstream_request=injected(STREAM_REQUEST),
        response=_injected_lf, client_view=_injected_lf_view,
        expect=dict(streamed=True, complete=True, usage_reported=True, estimated=False, billable=True,
                    model="gpt-4o-2024-08-06", input_tokens=210, cache_read_tokens=1024, output_tokens=56,
                    reasoning_tokens=0, incomplete_reason=None,
                    extra={"service_tier": "default", "usage_injected": True},
                    cost_nanos=per_million((210, "2.50"), (1024, "1.25"), (56, "10"))),
    ),
    Case(
        name="openai/chat-stream-include-usage-injected-crlf",
        host=HOST, path=CHAT_PATH, request={**STREAM_REQUEST, "model": "gpt-4o-mini"}, sse=True,
        upstream_request=injected({**STREAM_REQUEST, "model": "gpt-4o-mini"}),
        response=_injected_crlf, client_view=_injected_crlf_view,
        expect=dict(streamed=True, complete=True, model="gpt-4o-mini-2024-07-18", input_tokens=20, output_tokens=9,
                    cost_nanos=per_million((20, "0.15"), (9, "0.60"))),
    ),
    Case(
        # The client asked for usage itself: nothing is rewritten either way.
        name="openai/chat-stream-client-asked-for-usage",
        host=HOST, path=CHAT_PATH, sse=True,
        request={**STREAM_REQUEST, "model": "gpt-4.1", "stream_options": {"include_usage": True}},
        response=_client_usage,
        expect=dict(streamed=True, complete=True, usage_reported=True, model="gpt-4.1-2025-04-14",
                    input_tokens=952, cache_read_tokens=2048, output_tokens=250, extra={"service_tier": "default"},
                    cost_nanos=per_million((952, "2"), (2048, "0.50"), (250, "8"))),
    ),
    Case(
        name="openai/chat-stream-truncated-before-usage",
        host=HOST, path=CHAT_PATH, sse=True, cut=True,
        request={**STREAM_REQUEST, "stream_options": {"include_usage": True}},
        response=_truncated[:3],
        expect=dict(streamed=True, complete=False, incomplete_reason="upstream_truncated", usage_reported=False,
                    billable=True, input_tokens=0, output_tokens=0, cost_nanos=None, priced=False),
    ),
    Case(
        name="openai/chat-stream-error-chunk-mid-stream",
        host=HOST, path=CHAT_PATH, sse=True, request={**STREAM_REQUEST, "stream_options": {"include_usage": True}},
        response=[*_truncated[:2], sse({"error": {"message": "The server had an error while processing your request.",
                                                  "type": "server_error", "param": None, "code": None}})],
        expect=dict(streamed=True, complete=False, error_type="server_error", incomplete_reason="stream_error",
                    usage_reported=False, billable=True, cost_nanos=None, priced=False),
    ),
    Case(
        # `code: null`: the error id falls back to `type`. A stream was asked for (so usage was injected),
        # but the answer is a JSON error: nothing to rewrite on the way back.
        name="openai/chat-error-400-code-null",
        host=HOST, path=CHAT_PATH, request=STREAM_REQUEST, status=400,
        upstream_request=injected(STREAM_REQUEST),
        response=error_body("Invalid value for 'temperature': must be between 0 and 2.",
                            "invalid_request_error", None, "temperature"),
        expect=dict(status=400, streamed=False, complete=True, error_type="invalid_request_error", billable=False,
                    usage_reported=False, model="gpt-4o", cost_nanos=0, extra={"usage_injected": True}),
    ),
    Case(
        name="openai/chat-error-429-insufficient-quota",
        host=HOST, path=CHAT_PATH, request=CHAT_REQUEST, status=429,
        response=error_body("You exceeded your current quota, please check your plan and billing details.",
                            "insufficient_quota", "insufficient_quota"),
        expect=dict(status=429, error_type="insufficient_quota", billable=False, cost_nanos=0),
    ),
    # ---- Responses ----
    Case(
        name="openai/responses-json-cached-and-reasoning",
        host=HOST, path="/v1/responses", request={"model": "gpt-5", "input": "Say hello", "store": True},
        response=dumps(response_object("gpt-5-2025-08-07", usage=responses_usage(5000, 900, cached=4096,
                                                                                  reasoning=640))),
        expect=dict(provider="openai", endpoint_kind="responses", model="gpt-5-2025-08-07", model_requested="gpt-5",
                    streamed=False, complete=True, billable=True, usage_reported=True, input_tokens=904,
                    cache_read_tokens=4096, output_tokens=900, reasoning_tokens=640, error_type=None,
                    provider_request_id="resp_68af", extra={"service_tier": "default"},
                    cost_nanos=per_million((904, "1.25"), (4096, "0.125"), (900, "10"))),
    ),
    Case(
        # Flex processing: the Response says which tier ran it, and that tier's prices apply.
        name="openai/responses-json-flex-tier",
        host=HOST, path="/v1/responses", request={"model": "gpt-5", "input": "Summarise", "service_tier": "flex"},
        response=dumps(response_object("gpt-5-2025-08-07", usage=responses_usage(12000, 2000, cached=8000,
                                                                                  reasoning=1500),
                                       service_tier="flex")),
        expect=dict(input_tokens=4000, cache_read_tokens=8000, output_tokens=2000, reasoning_tokens=1500,
                    extra={"service_tier": "flex"},
                    cost_nanos=per_million((4000, "0.625"), (8000, "0.0625"), (2000, "5"))),
    ),
    Case(
        name="openai/responses-stream-completed",
        host=HOST, path="/v1/responses", sse=True,
        request={"model": "gpt-4.1", "input": "Say hello", "stream": True},
        response=responses_stream("gpt-4.1-2025-04-14", "response.completed",
                                  response_object("gpt-4.1-2025-04-14", usage=responses_usage(1500, 40, cached=1024))),
        expect=dict(endpoint_kind="responses", streamed=True, complete=True, usage_reported=True,
                    model="gpt-4.1-2025-04-14", input_tokens=476, cache_read_tokens=1024, output_tokens=40,
                    reasoning_tokens=0, incomplete_reason=None, extra={"service_tier": "default"},
                    cost_nanos=per_million((476, "2"), (1024, "0.50"), (40, "8"))),
    ),
    Case(
        # max_output_tokens reached while reasoning: billed, final, and flagged as incomplete.
        name="openai/responses-stream-incomplete-max-output-tokens",
        host=HOST, path="/v1/responses", sse=True,
        request={"model": "o4-mini", "input": "Prove it", "stream": True, "max_output_tokens": 256},
        response=responses_stream("o4-mini-2025-04-16", "response.incomplete",
                                  response_object("o4-mini-2025-04-16", status="incomplete", output_text=None,
                                                  incomplete="max_output_tokens",
                                                  usage=responses_usage(300, 256, reasoning=256)),
                                  texts=(), eol="\r\n"),
        expect=dict(streamed=True, complete=True, usage_reported=True, billable=True, error_type=None,
                    incomplete_reason=None, input_tokens=300, output_tokens=256, reasoning_tokens=256,
                    extra={"service_tier": "default", "response_status": "incomplete",
                           "incomplete_details": "max_output_tokens"},
                    cost_nanos=per_million((300, "1.10"), (256, "4.40"))),
    ),
    Case(
        name="openai/responses-stream-failed",
        host=HOST, path="/v1/responses", sse=True, request={"model": "o3", "input": "Hi", "stream": True},
        response=responses_stream("o3-2025-04-16", "response.failed",
                                  response_object("o3-2025-04-16", status="failed", output_text=None,
                                                  error={"code": "server_error",
                                                         "message": "The model failed to generate a response."})),
        expect=dict(streamed=True, complete=True, error_type="server_error", usage_reported=False, billable=False,
                    model="o3-2025-04-16", cost_nanos=0,
                    extra={"service_tier": "default", "response_status": "failed"}),
    ),
    Case(
        name="openai/responses-stream-error-event",
        host=HOST, path="/v1/responses", sse=True, request={"model": "gpt-4.1", "input": "Hi", "stream": True},
        response=responses_stream("gpt-4.1-2025-04-14", None, None, tail=[sse(
            {"type": "error", "code": "rate_limit_exceeded", "message": "Rate limit reached for gpt-4.1",
             "param": None, "sequence_number": 7}, "error")]),
        expect=dict(streamed=True, complete=False, error_type="rate_limit_exceeded", incomplete_reason="stream_error",
                    usage_reported=False, billable=True, cost_nanos=None, priced=False),
    ),
    Case(
        name="openai/responses-stream-truncated",
        host=HOST, path="/v1/responses", sse=True, cut=True,
        request={"model": "gpt-4.1", "input": "Hi", "stream": True},
        response=responses_stream("gpt-4.1-2025-04-14", None, None),
        expect=dict(streamed=True, complete=False, incomplete_reason="upstream_truncated", usage_reported=False,
                    billable=True, model="gpt-4.1-2025-04-14", cost_nanos=None, priced=False),
    ),
    Case(
        name="openai/responses-error-json-404",
        host=HOST, path="/v1/responses", request={"model": "gpt-9", "input": "Hi"}, status=404,
        response=error_body("The model `gpt-9` does not exist or you do not have access to it.",
                            "invalid_request_error", "model_not_found"),
        expect=dict(status=404, error_type="model_not_found", billable=False, model="gpt-9", cost_nanos=0),
    ),
    Case(
        name="openai/responses-input-tokens-not-billable",
        host=HOST, path="/v1/responses/input_tokens", request={"model": "gpt-5", "input": "Tell me a joke."},
        response=b'{"object":"response.input_tokens","input_tokens":11}',
        expect=dict(endpoint_kind="count_tokens", billable=False, usage_reported=False, input_tokens=0,
                    cost_nanos=0, extra={"counted_input_tokens": 11}),
    ),
    # ---- Embeddings ----
    Case(
        name="openai/embeddings-base64",
        host=HOST, path="/v1/embeddings",
        request={"input": "The food was delicious", "model": "text-embedding-3-small", "encoding_format": "base64"},
        response=embeddings_body("text-embedding-3-small", 1, 5),
        expect=dict(endpoint_kind="embeddings", model="text-embedding-3-small", complete=True, billable=True,
                    usage_reported=True, input_tokens=5, output_tokens=0, cache_read_tokens=0, reasoning_tokens=None,
                    cost_nanos=per_million((5, "0.02"))),
    ),
    Case(
        name="openai/embeddings-batch-brotli",
        host=HOST, path="/v1/embeddings", encoding="br",
        request={"input": ["alpha", "beta", "ünïcode ✓"], "model": "text-embedding-3-small",
                 "encoding_format": "base64"},
        response=embeddings_body("text-embedding-3-small", 3, 2_000_000),
        expect=dict(input_tokens=2_000_000, output_tokens=0, cost_nanos=per_million((2_000_000, "0.02"))),
    ),
    Case(
        name="openai/embeddings-error-400-code-null",
        host=HOST, path="/v1/embeddings", status=400,
        request={"input": "x" * 40, "model": "text-embedding-3-small", "encoding_format": "base64"},
        response=error_body("This model's maximum context length is 8192 tokens, however you requested 9000 tokens.",
                            "invalid_request_error", None),
        expect=dict(status=400, error_type="invalid_request_error", billable=False, usage_reported=False,
                    cost_nanos=0),
    ),
    Case(
        name="openai/models-list-not-inference",
        host=HOST, path="/v1/models", method="GET", request=None,
        response=b'{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"}]}',
        expect=dict(endpoint_kind="other", billable=False, usage_reported=False, cost_nanos=0, error_type=None),
    ),
]
