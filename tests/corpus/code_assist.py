"""Gemini Code Assist, the Gemini CLI backend (docs/providers/code-assist.md). Covered by the user's plan (billing
`subscription`), but tokens are counted and priced at Google's list prices as for the Gemini API:
  gemini-2.5-pro        input $1.25, cache read $0.125, output $10 (prompts ≤ 200k tokens)
  gemini-2.5-flash      input $0.30, cache read $0.03, output $2.50
  gemini-2.5-flash-lite input $0.10, output $0.40
Bodies and SSE events wrap a GenerateContentResponse as `{"response": {...}, "traceId": ...}`; the CLI
uses `traceId` as the response id.
"""

from __future__ import annotations

from typing import Any

from corpus import Case, per_million, sse
from corpus.gemini import PRO, chunk, meta, rpc_error
from corpus.gemini import body as pretty

HOST = "cloudcode-pa.googleapis.com"
LITE, FLASH = "gemini-2.5-flash-lite", "gemini-2.5-flash"
PROJECT = "able-lantern-x7k2p"
TRACE = "8c1a5f0e2b7d4e93"
OAUTH = {"authorization": "Bearer ya29.a0CANARYOAUTHTOKEN"}


def request(model: str = PRO) -> dict[str, Any]:
    return {
        "model": model,
        "project": PROJECT,
        "user_prompt_id": "3f2b9c1e-7a4d-4c55-9e1f-2d8b6a0c4e71########0",
        "request": {
            "contents": [{"role": "user", "parts": [{"text": "Refactor main.py, keep the tests green."}]}],
            "systemInstruction": {"role": "user", "parts": [{"text": "You are an interactive CLI agent."}]},
            "generationConfig": {"temperature": 0, "thinkingConfig": {"includeThoughts": True}},
            "session_id": "b6e0f3d2-51c4-4f8a-9a77-0c3e9d1b2a45",
        },
    }


def wrapped(inner: dict[str, Any]) -> dict[str, Any]:
    inner = {k: v for k, v in inner.items() if k != "responseId"}  # Code Assist identifies calls by traceId
    return {"response": inner, "traceId": TRACE}


STREAM = [
    chunk(None, usage=meta(9000, None, thoughts=600, cached=6000), model=PRO),
    chunk("I'll start by reading", usage=meta(9000, 40, thoughts=600, cached=6000), model=PRO),
    chunk(" `main.py`.", usage=meta(9000, 120, thoughts=600, cached=6000), model=PRO),
    chunk(None, "STOP", usage=meta(9000, 150, thoughts=600, cached=6000), model=PRO,
          candidates=[{"content": {"role": "model", "parts": [{"functionCall": {
              "name": "read_file", "args": {"absolute_path": "/work/app/main.py"}}}]},
              "finishReason": "STOP", "index": 0}]),
]
STREAM_EVENTS = [sse(wrapped(c), eol="\r\n") for c in STREAM]
SUBSCRIPTION = dict(provider="code-assist", host=HOST, billing="subscription")
GENERATED = dict(**SUBSCRIPTION, endpoint_kind="generate_content", billable=True, usage_reported=True,
                 error_type=None, cache_write_tokens=0)

CASES = [
    Case(
        name="code-assist/json-wrapped-2.5-pro",
        host=HOST, path="/v1internal:generateContent", request=request(), request_headers=OAUTH,
        response=pretty(wrapped(chunk("Done.", "STOP", usage=meta(9000, 150, thoughts=600, cached=6000), model=PRO))),
        expect=dict(**GENERATED, model=PRO, model_requested=PRO, streamed=False, complete=True, status=200,
                    input_tokens=3000, cache_read_tokens=6000, output_tokens=750, reasoning_tokens=600,
                    provider_request_id=TRACE, incomplete_reason=None, priced=True,
                    cost_nanos=per_million((3000, "1.25"), (6000, "0.125"), (750, "10"))),
    ),
    Case(
        name="code-assist/sse-wrapped-crlf-usage-on-every-chunk",
        host=HOST, path="/v1internal:streamGenerateContent?alt=sse", request=request(), request_headers=OAUTH,
        sse=True, response=STREAM_EVENTS,
        expect=dict(**GENERATED, model=PRO, model_requested=PRO, streamed=True, complete=True,
                    input_tokens=3000, cache_read_tokens=6000, output_tokens=750, reasoning_tokens=600,
                    provider_request_id=TRACE, incomplete_reason=None,
                    cost_nanos=per_million((3000, "1.25"), (6000, "0.125"), (750, "10"))),
    ),
    Case(
        name="code-assist/sse-truncated-keeps-last-usage",
        host=HOST, path="/v1internal:streamGenerateContent?alt=sse", request=request(FLASH), sse=True, cut=True,
        response=[sse(wrapped(chunk("Reading", usage=meta(4000, 5, thoughts=90))), eol="\r\n"),
                  sse(wrapped(chunk(" the file", usage=meta(4000, 25, thoughts=90))), eol="\r\n"),
                  sse(wrapped(chunk(" now", usage=meta(4000, 30, thoughts=90))), eol="\r\n")[:25]],
        expect=dict(**GENERATED, model=FLASH, streamed=True, complete=False, incomplete_reason="upstream_truncated",
                    input_tokens=4000, output_tokens=115, reasoning_tokens=90,
                    cost_nanos=per_million((4000, "0.30"), (115, "2.50"))),
    ),
    Case(
        # Gemini CLI's routing classifier: a small non-streamed call on flash-lite.
        name="code-assist/json-flash-lite-classifier",
        host=HOST, path="/v1internal:generateContent", request=request(LITE),
        response=pretty(wrapped(chunk('{"model_choice": "flash"}', "STOP", usage=meta(1850, 12), model=LITE))),
        expect=dict(**GENERATED, model=LITE, model_requested=LITE, input_tokens=1850, output_tokens=12,
                    reasoning_tokens=None, cost_nanos=per_million((1850, "0.10"), (12, "0.40"))),
    ),
    Case(
        name="code-assist/count-tokens-not-billable",
        host=HOST, path="/v1internal:countTokens",
        request={"request": {"model": "models/gemini-2.5-pro", "contents": request()["request"]["contents"]}},
        response=pretty({"totalTokens": 4242}),
        expect=dict(**SUBSCRIPTION, endpoint_kind="count_tokens", billable=False, usage_reported=False,
                    model="gemini-2.5-pro", model_requested="gemini-2.5-pro", input_tokens=0, cost_nanos=0,
                    extra={"counted_input_tokens": 4242}),
    ),
    Case(
        name="code-assist/load-code-assist-not-inference",
        host=HOST, path="/v1internal:loadCodeAssist", request_headers=OAUTH,
        request={"cloudaicompanionProject": PROJECT, "metadata": {
            "ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI",
            "duetProject": PROJECT}},
        response=pretty({"currentTier": {"id": "standard-tier", "name": "Gemini Code Assist"},
                         "allowedTiers": [{"id": "standard-tier", "isDefault": True}],
                         "cloudaicompanionProject": PROJECT}),
        expect=dict(**SUBSCRIPTION, endpoint_kind="other", billable=False, usage_reported=False, model=None,
                    model_requested=None, streamed=False, cost_nanos=0, error_type=None),
    ),
    Case(
        name="code-assist/retrieve-user-quota-not-inference",
        host=HOST, path="/v1internal:retrieveUserQuota", request={"project": PROJECT},
        response=pretty({"buckets": [{"remainingFraction": 0.98, "resetTime": "2026-11-23T00:00:00Z",
                                      "tokenType": "REQUESTS", "modelId": "gemini-2.5-pro"}]}),
        expect=dict(endpoint_kind="other", billable=False, usage_reported=False, cost_nanos=0),
    ),
    Case(
        name="code-assist/event-receive-get-not-inference",
        host=HOST, path="/v1internal/event:receive", method="GET", request=None,
        response=b"{}",
        expect=dict(endpoint_kind="other", billable=False, usage_reported=False, cost_nanos=0),
    ),
    Case(
        name="code-assist/error-429-resource-exhausted",
        host=HOST, path="/v1internal:generateContent", request=request(), status=429,
        response=pretty(rpc_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Gemini 2.5 Pro "
                                  "Requests' and limit 'Gemini 2.5 Pro Requests per day per user per tier'.")),
        expect=dict(**SUBSCRIPTION, status=429, error_type="RESOURCE_EXHAUSTED", billable=False,
                    usage_reported=False, complete=True, model=PRO, cost_nanos=0),
    ),
    Case(
        # Code Assist answers an HTTP error on the SSE endpoint in JSON-array form (gemini-cli#4701).
        name="code-assist/stream-http-400-error-as-array",
        host=HOST, path="/v1internal:streamGenerateContent?alt=sse", request=request(), status=400,
        content_type="application/json; charset=UTF-8",
        response=b'[{\n  "error": {\n    "code": 400,\n    "message": "Request contains an invalid argument.",\n'
                 b'    "errors": [\n      {\n        "message": "Request contains an invalid argument.",\n'
                 b'        "domain": "global",\n        "reason": "badRequest"\n      }\n    ],\n'
                 b'    "status": "INVALID_ARGUMENT"\n  }\n}\n]',
        expect=dict(status=400, error_type="INVALID_ARGUMENT", billable=False, usage_reported=False,
                    complete=True, cost_nanos=0),
    ),
]
