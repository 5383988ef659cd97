"""ChatGPT / Codex backend (docs/providers/codex.md): `chatgpt.com/backend-api/codex/responses`, Responses SSE.

Calls are covered by the ChatGPT plan (billing "subscription"); the cost is the OpenAI list-price
equivalent. gpt-5-codex is listed at gpt-5's prices: $1.25 input, $0.125 cached input, $10 output per
million tokens.
"""

from __future__ import annotations

from corpus import Case, per_million, sse
from corpus.openai import dumps, response_object, responses_stream, responses_usage

HOST = "chatgpt.com"
PATH = "/backend-api/codex/responses"
MODEL = "gpt-5-codex"
HEADERS = {
    "authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.CANARYCHATGPTJWT.sig",
    "chatgpt-account-id": "CANARY-ACCOUNT-0000",
    "originator": "codex_cli_rs",
    "openai-beta": "responses=experimental",
    "session_id": "0199c1a2-7d3e-7000-8000-000000000001",
    "accept": "text/event-stream",
}
REQUEST = {
    "model": MODEL,
    "instructions": "You are Codex, a coding agent.",
    "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the tests"}]}],
    "tools": [],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0199c1a2-7d3e-7000-8000-000000000001",
}

CASES = [
    Case(
        name="codex/stream-completed-subscription",
        host=HOST, path=PATH, request=REQUEST, request_headers=HEADERS, sse=True,
        response=responses_stream(MODEL, "response.completed",
                                  response_object(MODEL, usage=responses_usage(24_000, 1_800, cached=19_968,
                                                                                reasoning=1_216),
                                                  rid="resp_codex_01"),
                                  texts=("I'll run ", "the tests ✓")),
        expect=dict(provider="codex", endpoint_kind="responses", model=MODEL, model_requested=MODEL, streamed=True,
                    complete=True, billable=True, usage_reported=True, billing="subscription",
                    input_tokens=4_032, cache_read_tokens=19_968, output_tokens=1_800, reasoning_tokens=1_216,
                    error_type=None, provider_request_id="resp_codex_01", extra={"service_tier": "default"},
                    cost_nanos=per_million((4_032, "1.25"), (19_968, "0.125"), (1_800, "10"))),
    ),
    Case(
        # The plan's limit: no tokens, not billable, and when it resets.
        name="codex/usage-limit-reached-429",
        host=HOST, path=PATH, request=REQUEST, request_headers=HEADERS, status=429,
        response_headers={"x-codex-primary-used-percent": "100", "x-codex-primary-window-minutes": "300"},
        response=dumps({"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                                  "plan_type": "plus", "resets_at": 1_795_000_000}}),
        expect=dict(status=429, streamed=False, complete=True, billable=False, usage_reported=False,
                    billing="subscription", error_type="usage_limit_reached", model=MODEL, cost_nanos=0,
                    extra={"plan_type": "plus", "resets_at": 1_795_000_000}),
    ),
    Case(
        name="codex/stream-failed-context-window",
        host=HOST, path=PATH, request=REQUEST, request_headers=HEADERS, sse=True,
        response=responses_stream(MODEL, "response.failed",
                                  response_object(MODEL, status="failed", output_text=None,
                                                  error={"code": "context_length_exceeded",
                                                         "message": "Your input exceeds the context window."}),
                                  texts=()),
        expect=dict(streamed=True, complete=True, error_type="context_length_exceeded", usage_reported=False,
                    billable=False, billing="subscription", cost_nanos=0),
    ),
    Case(
        name="codex/stream-error-event",
        host=HOST, path=PATH, request=REQUEST, request_headers=HEADERS, sse=True,
        response=responses_stream(MODEL, None, None, tail=[sse(
            {"type": "error", "code": "server_error", "message": "An error occurred while processing your request.",
             "param": None, "sequence_number": 7}, "error")]),
        expect=dict(streamed=True, complete=False, error_type="server_error", incomplete_reason="stream_error",
                    billable=True, cost_nanos=None, priced=False),
    ),
    Case(
        name="codex/stream-truncated",
        host=HOST, path=PATH, request=REQUEST, request_headers=HEADERS, sse=True, cut=True,
        response=responses_stream(MODEL, None, None, texts=("I'll ", "run")),
        expect=dict(streamed=True, complete=False, incomplete_reason="upstream_truncated", usage_reported=False,
                    billable=True, billing="subscription", cost_nanos=None, priced=False),
    ),
    Case(
        name="codex/models-list-not-inference",
        host=HOST, path="/backend-api/codex/models?client_version=0.46.0", method="GET", request=None,
        request_headers=HEADERS,
        response=b'{"models":[{"slug":"gpt-5-codex","display_name":"gpt-5-codex"}]}',
        expect=dict(provider="codex", endpoint_kind="other", billable=False, usage_reported=False, cost_nanos=0,
                    path="/backend-api/codex/models?client_version=0.46.0"),
    ),
]
