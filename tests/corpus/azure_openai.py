"""Azure OpenAI (docs/providers/azure-openai.md): the deployment form, the v1 API, the preview Responses path and a
Foundry resource, on `*.openai.azure.com`, `*.cognitiveservices.azure.com` and `*.services.ai.azure.com`.

Azure's pay-as-you-go (global standard) prices are OpenAI's list prices, USD per million tokens (input / cached input /
output): gpt-4o $2.50 / $1.25 / $10; gpt-4o-mini $0.15 / $0.075 / $0.60; o4-mini $1.10 / $0.275 / $4.40;
text-embedding-3-small $0.02 (input only). Claude Sonnet 4.5 on Foundry: Anthropic's list, $3 in / $15 out.

Azure writes its JSON with members in alphabetical order, opens a Chat stream with a content-filter chunk whose
`choices` is empty and whose `id` and `model` are empty strings, and annotates every choice with
`content_filter_results`. The `my-gpt` and `legacy-chat` deployments are mapped to models by `CONFIG`.
"""

from __future__ import annotations

import json
from typing import Any

from corpus import Case, per_million, sse

HOST = "contoso.openai.azure.com"
COGNITIVE = "contoso-ai.cognitiveservices.azure.com"
FOUNDRY = "contoso-foundry.services.ai.azure.com"
API_VERSION = "2024-10-21"
KEY_HEADER = {"api-key": "CANARYazureKEY0123456789abcdef0"}
ENTRA_HEADER = {"authorization": "Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.CANARY.entra-token"}
GPT4O = "gpt-4o-2024-11-20"
MINI = "gpt-4o-mini-2024-07-18"
CHAT_ID = "chatcmpl-CKaz7Lm2Qx9Rt4Vb6Nc8Wd0YeUf"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "PROMPT-CANARY say hi ✓"}]

CONFIG = """
[plugins.azure-openai.deployments]
my-gpt = "gpt-4o"
legacy-chat = "gpt-4o-mini"
"""


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


OLD_API_VERSION = "2024-06-01"
"""Before 2024-09-01-preview: chat streams do not take `stream_options`."""


def deployment(name: str, rest: str = "chat/completions", api_version: str = API_VERSION) -> str:
    return f"/openai/deployments/{name}/{rest}?api-version={api_version}"


SAFE = {"hate": {"filtered": False, "severity": "safe"}, "self_harm": {"filtered": False, "severity": "safe"},
        "sexual": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "safe"}}
PROMPT_FILTER = [{"prompt_index": 0, "content_filter_results": {**SAFE, "jailbreak": {"detected": False,
                                                                                      "filtered": False}}}]


def chat_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {"completion_tokens": completion, "completion_tokens_details": {
                "accepted_prediction_tokens": 0, "audio_tokens": 0, "reasoning_tokens": reasoning,
                "rejected_prediction_tokens": 0},
            "prompt_tokens": prompt, "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": cached},
            "total_tokens": prompt + completion}


def chat_completion(model: str | None, usage: dict[str, Any], finish: str = "stop",
                    filters: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {
        "choices": [{"content_filter_results": filters or SAFE, "finish_reason": finish, "index": 0,
                     "logprobs": None, "message": {"annotations": [], "content": "Hi! ✓", "refusal": None,
                                                   "role": "assistant"}}],
        "created": 1764680501, "id": CHAT_ID, "object": "chat.completion", "prompt_filter_results": PROMPT_FILTER,
        "system_fingerprint": "fp_ee1d74bde0", "usage": usage,
    }
    if model is not None:
        body["model"] = model
    return dumps(body)


def opening_chunk() -> bytes:
    """Azure's first stream chunk: prompt-filter results only, empty `choices`, empty `id` and `model`."""
    return sse(dumps({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                      "prompt_filter_results": PROMPT_FILTER}).decode())


def chunk(model: str, delta: dict[str, Any], finish: str | None = None, filters: dict[str, Any] | None = None,
          usage: Any = "omit") -> dict[str, Any]:
    body: dict[str, Any] = {
        "choices": [{"content_filter_results": {} if filters is None else filters, "delta": delta,
                     "finish_reason": finish, "index": 0, "logprobs": None}],
        "created": 1764680501, "id": CHAT_ID, "model": model, "object": "chat.completion.chunk",
        "system_fingerprint": "fp_ee1d74bde0",
    }
    if usage != "omit":
        body["usage"] = usage
    return body


def chat_stream(model: str, texts: tuple[str, ...], usage: dict[str, Any] | None, *, usage_null: bool = False,
                finish: str = "stop", final_filters: dict[str, Any] | None = None) -> tuple[list[bytes], bytes]:
    """(what Azure writes, what a client that never asked for usage receives). With `usage_null` every chunk
    but the opening one carries `"usage":null` (the last member, in Azure's sorted order) and a usage chunk
    with empty `choices` precedes `[DONE]`."""
    marker = None if usage_null else "omit"
    deltas: list[tuple[dict[str, Any], str | None, dict[str, Any] | None]] = [
        ({"content": "", "refusal": None, "role": "assistant"}, None, None)]
    deltas += [({"content": t}, None, SAFE) for t in texts]
    deltas.append(({}, finish, final_filters or {}))
    upstream, plain = [opening_chunk()], [opening_chunk()]
    for delta, end, filters in deltas:
        upstream.append(sse(dumps(chunk(model, delta, end, filters, usage=marker)).decode()))
        plain.append(sse(dumps(chunk(model, delta, end, filters)).decode()))
    if usage is not None:
        body = chunk(model, {}, usage=usage)
        body["choices"] = []
        upstream.append(sse(dumps(body).decode()))
    upstream.append(b"data: [DONE]\n\n")
    plain.append(b"data: [DONE]\n\n")
    return upstream, b"".join(plain)


def error_body(code: str, message: str, **more: Any) -> bytes:
    return dumps({"error": {"code": code, "message": message, **more}})


def responses_body(model: str, inp: int, out: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {"created_at": 1756315657, "error": None, "id": "resp_az01", "incomplete_details": None, "model": model,
            "object": "response", "output": [{"content": [{"annotations": [], "text": "Hi ✓", "type": "output_text"}],
                                              "id": "msg_01", "role": "assistant", "status": "completed",
                                              "type": "message"}],
            "status": "completed",
            "usage": {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": out,
                      "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": inp + out}}


STREAM_REQUEST = {"messages": MESSAGES, "stream": True}
_asked, _ = chat_stream(GPT4O, ("Hel", "lo ✓"), chat_usage(1500, 20, cached=1024), usage_null=True)
_injected, _injected_view = chat_stream(GPT4O, ("Hi", " there"), chat_usage(40, 7), usage_null=True)
_unasked, _ = chat_stream(MINI, ("Hello", " ✓"), None)
_filtered, _ = chat_stream(GPT4O, ("Once",), chat_usage(60, 3), usage_null=True, finish="content_filter",
                           final_filters={**SAFE, "violence": {"filtered": True, "severity": "medium"}})

CHAT = dict(provider="azure-openai", endpoint_kind="chat.completions", billable=True, billing="api")

CASES = [
    Case(
        # No `model` in the body: the deployment is what was asked for; the response names the model.
        name="azure/chat-json-deployment-form",
        host=HOST, path=deployment("gpt4o-prod"), request={"messages": MESSAGES}, request_headers=KEY_HEADER,
        response=chat_completion(GPT4O, chat_usage(2000, 150, cached=1536)),
        expect=dict(**CHAT, model=GPT4O, model_requested="gpt4o-prod", streamed=False, complete=True,
                    usage_reported=True, estimated=False, input_tokens=464, cache_read_tokens=1536,
                    output_tokens=150, reasoning_tokens=0, error_type=None, provider_request_id=CHAT_ID,
                    priced=True, extra={"price_as": f"openai/{GPT4O}"},
                    cost_nanos=per_million((464, "2.50"), (1536, "1.25"), (150, "10"))),
    ),
    Case(
        # The client asked for usage: the opening content-filter chunk (empty id and model) is skipped, the
        # model and id come from the first real chunk, usage from the chunk with empty `choices`.
        name="azure/chat-stream-deployment-client-asked-for-usage",
        host=HOST, path=deployment("gpt4o-prod"), sse=True, request_headers=ENTRA_HEADER,
        request={**STREAM_REQUEST, "stream_options": {"include_usage": True}}, response=_asked,
        expect=dict(**CHAT, model=GPT4O, model_requested="gpt4o-prod", streamed=True, complete=True,
                    usage_reported=True, estimated=False, input_tokens=476, cache_read_tokens=1024, output_tokens=20,
                    provider_request_id=CHAT_ID, incomplete_reason=None, extra={"price_as": f"openai/{GPT4O}"},
                    cost_nanos=per_million((476, "2.50"), (1024, "1.25"), (20, "10"))),
    ),
    Case(
        # The deployment form on an api-version that predates `stream_options` is never rewritten: a stream
        # whose client did not ask for usage is estimated, ceil(UTF-8 bytes / 4). Prompt: "Be brief." (9) +
        # "PROMPT-CANARY say hi ✓" (24) = 33 bytes → 9; output: "Hello" + " ✓" = 9 bytes → 3.
        name="azure/chat-stream-deployment-old-api-version-is-estimated",
        host=COGNITIVE, path=deployment("mini", api_version=OLD_API_VERSION), sse=True,
        request={**STREAM_REQUEST, "model": "mini"},
        response=_unasked,
        expect=dict(**CHAT, model=MINI, model_requested="mini", streamed=True, complete=True, usage_reported=False,
                    estimated=True, input_tokens=9, output_tokens=3,
                    extra={"estimator": "utf8_bytes_div_4", "estimated_input_tokens": 9,
                           "estimated_output_tokens": 3, "price_as": f"openai/{MINI}"},
                    cost_nanos=per_million((9, "0.15"), (3, "0.60"))),
    ),
    Case(
        # The deployment form on an api-version that takes `stream_options` (2024-10-21): asked for, as on v1.
        name="azure/chat-stream-deployment-usage-injected",
        host=HOST, path=deployment("gpt4o-prod"), sse=True, request=STREAM_REQUEST,
        upstream_request={"stream_options": {"include_usage": True}, **STREAM_REQUEST},
        response=_injected, client_view=_injected_view,
        expect=dict(**CHAT, model=GPT4O, model_requested="gpt4o-prod", streamed=True, complete=True,
                    usage_reported=True, estimated=False, input_tokens=40, output_tokens=7,
                    extra={"usage_injected": True, "price_as": f"openai/{GPT4O}"},
                    cost_nanos=per_million((40, "2.50"), (7, "10"))),
    ),
    Case(
        # The v1 API: the meter asks for usage and hides what that adds. `my-gpt` is mapped to gpt-4o (CONFIG).
        name="azure/chat-stream-v1-usage-injected",
        host=HOST, path="/openai/v1/chat/completions", sse=True, request={**STREAM_REQUEST, "model": "my-gpt"},
        upstream_request={"stream_options": {"include_usage": True}, **STREAM_REQUEST, "model": "my-gpt"},
        response=_injected, client_view=_injected_view,
        expect=dict(**CHAT, model=GPT4O, model_requested="my-gpt", streamed=True, complete=True, usage_reported=True,
                    estimated=False, input_tokens=40, output_tokens=7,
                    extra={"usage_injected": True, "price_as": "openai/gpt-4o"},
                    cost_nanos=per_million((40, "2.50"), (7, "10"))),
    ),
    Case(
        # A response that names no model: the CONFIG mapping prices the deployment (legacy-chat → gpt-4o-mini).
        name="azure/chat-json-mapped-deployment-without-model-in-response",
        host=HOST, path=deployment("legacy-chat"), request={"messages": MESSAGES},
        response=chat_completion(None, chat_usage(300, 40)),
        expect=dict(**CHAT, model="legacy-chat", model_requested="legacy-chat", complete=True, input_tokens=300,
                    output_tokens=40, priced=True, extra={"price_as": "openai/gpt-4o-mini"},
                    cost_nanos=per_million((300, "0.15"), (40, "0.60"))),
    ),
    Case(
        # Neither the response nor the config names a model: billable, cost unknown (never $0).
        name="azure/chat-json-unmapped-deployment-without-model-is-unpriced",
        host=HOST, path=deployment("mystery"), request={"messages": MESSAGES},
        response=chat_completion(None, chat_usage(300, 40)),
        expect=dict(**CHAT, model="mystery", model_requested="mystery", input_tokens=300, output_tokens=40,
                    priced=False, cost_nanos=None, extra={}),
    ),
    Case(
        name="azure/chat-stream-completion-filtered",
        host=HOST, path=deployment("gpt4o-prod"), sse=True,
        request={**STREAM_REQUEST, "stream_options": {"include_usage": True}}, response=_filtered,
        expect=dict(**CHAT, model=GPT4O, streamed=True, complete=True, input_tokens=60, output_tokens=3,
                    extra={"content_filtered": True, "price_as": f"openai/{GPT4O}"},
                    cost_nanos=per_million((60, "2.50"), (3, "10"))),
    ),
    Case(
        name="azure/chat-400-prompt-blocked-by-content-filter",
        host=HOST, path=deployment("gpt4o-prod"), request={"messages": MESSAGES}, status=400,
        response=error_body("content_filter", "The response was filtered due to the prompt triggering Azure "
                            "OpenAI's content management policy.", param="prompt", status=400,
                            innererror={"code": "ResponsibleAIPolicyViolation",
                                        "content_filter_result": {**SAFE, "violence": {"filtered": True,
                                                                                       "severity": "high"}}}),
        expect=dict(provider="azure-openai", status=400, error_type="content_filter", billable=False,
                    usage_reported=False, cost_nanos=0, model="gpt4o-prod"),
    ),
    Case(
        name="azure/chat-429-rate-limit",
        host=HOST, path=deployment("gpt4o-prod"), request={"messages": MESSAGES}, status=429,
        response_headers={"retry-after": "6"},
        response=error_body("429", f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
                            f"version {API_VERSION} have exceeded token rate limit of your current AIServices "
                            "S0 pricing tier. Please retry after 6 seconds."),
        expect=dict(status=429, error_type="429", billable=False, cost_nanos=0),
    ),
    Case(
        name="azure/chat-stream-truncated-before-usage",
        host=HOST, path=deployment("gpt4o-prod"), sse=True, cut=True,
        request={**STREAM_REQUEST, "stream_options": {"include_usage": True}}, response=_asked[:3],
        expect=dict(**CHAT, model=GPT4O, streamed=True, complete=False, incomplete_reason="upstream_truncated",
                    usage_reported=False, cost_nanos=None, priced=False),
    ),
    Case(
        name="azure/embeddings-deployment-form",
        host=COGNITIVE, path=deployment("embed-small", "embeddings"), request={"input": ["PROMPT-CANARY one", "two"]},
        response=dumps({"data": [{"embedding": "AAAAAAAAgD8=", "index": i, "object": "embedding"} for i in range(2)],
                        "model": "text-embedding-3-small", "object": "list",
                        "usage": {"prompt_tokens": 9, "total_tokens": 9}}),
        expect=dict(provider="azure-openai", endpoint_kind="embeddings", model="text-embedding-3-small",
                    model_requested="embed-small", billable=True, input_tokens=9, output_tokens=0,
                    extra={"price_as": "openai/text-embedding-3-small"}, cost_nanos=per_million((9, "0.02"))),
    ),
    Case(
        name="azure/responses-v1-json",
        host=HOST, path="/openai/v1/responses", request={"model": "o4-mini-dep", "input": "PROMPT-CANARY"},
        response=dumps(responses_body("o4-mini-2025-04-16", 1200, 500, cached=1024, reasoning=384)),
        expect=dict(provider="azure-openai", endpoint_kind="responses", model="o4-mini-2025-04-16",
                    model_requested="o4-mini-dep", complete=True, input_tokens=176, cache_read_tokens=1024,
                    output_tokens=500, reasoning_tokens=384, extra={"price_as": "openai/o4-mini-2025-04-16"},
                    cost_nanos=per_million((176, "1.10"), (1024, "0.275"), (500, "4.40"))),
    ),
    Case(
        name="azure/responses-preview-path-stream",
        host=HOST, path="/openai/responses?api-version=2025-04-01-preview", sse=True,
        request={"model": "o4-mini-dep", "input": "PROMPT-CANARY", "stream": True},
        response=[sse({"response": {**responses_body("o4-mini-2025-04-16", 0, 0), "status": "in_progress",
                                    "usage": None, "output": []},
                       "sequence_number": 0, "type": "response.created"}, "response.created"),
                  sse({"content_index": 0, "delta": "Hi ✓", "item_id": "msg_01", "output_index": 0,
                       "sequence_number": 1, "type": "response.output_text.delta"}, "response.output_text.delta"),
                  sse({"response": responses_body("o4-mini-2025-04-16", 80, 30), "sequence_number": 2,
                       "type": "response.completed"}, "response.completed")],
        expect=dict(provider="azure-openai", endpoint_kind="responses", model="o4-mini-2025-04-16", streamed=True,
                    complete=True, input_tokens=80, output_tokens=30,
                    cost_nanos=per_million((80, "1.10"), (30, "4.40"))),
    ),
    Case(
        # Claude deployed on a Foundry resource, through Anthropic's Messages API.
        name="azure/foundry-claude-messages",
        host=FOUNDRY, path="/anthropic/v1/messages", request_headers={"x-api-key": "CANARYfoundryKEY0123456789ab"},
        request={"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [{"role": "user",
                                                                               "content": "PROMPT-CANARY"}]},
        response=dumps({"content": [{"text": "Hi ✓", "type": "text"}], "id": "msg_01Foundry",
                        "model": "claude-sonnet-4-5-20250929", "role": "assistant", "stop_reason": "end_turn",
                        "stop_sequence": None, "type": "message",
                        "usage": {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                                  "input_tokens": 20, "output_tokens": 8}}),
        expect=dict(provider="azure-openai", endpoint_kind="messages", model="claude-sonnet-4-5-20250929",
                    model_requested="claude-sonnet-4-5", billable=True, input_tokens=20, output_tokens=8,
                    cost_nanos=per_million((20, "3"), (8, "15"))),
    ),
    Case(
        name="azure/list-models-not-inference",
        host=HOST, path=f"/openai/models?api-version={API_VERSION}", method="GET", request=None,
        response=dumps({"data": [{"id": "gpt-4o", "object": "model"}], "object": "list"}),
        expect=dict(provider="azure-openai", endpoint_kind="other", billable=False, model=None, cost_nanos=0),
    ),
]
