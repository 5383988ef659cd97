"""Groq, DeepSeek, Mistral and OpenRouter: the OpenAI-compatible vendors with their own usage rules.

Normative references: docs/providers/groq.md, docs/providers/openrouter.md, docs/providers/mistral.md, docs/providers/deepseek.md, docs/providers/index.md and docs/concepts/tokens.md (per-provider mapping table):
Groq usage may arrive twice in a stream (x_groq.usage and a usage chunk) and counts once; DeepSeek input
is prompt_cache_miss_tokens and cache reads prompt_cache_hit_tokens; Mistral attaches usage to the finish
chunk and has its own error object; OpenRouter's prompt_tokens includes cache reads and writes, and its
`usage.cost` is kept as a decimal string. None of Groq, Mistral or OpenRouter needs the request changed to
get usage, so they forward requests and streams untouched.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from corpus import Case, per_million, replay
from corpus import deepseek as deepseek_corpus
from corpus import groq as groq_corpus
from corpus import mistral as mistral_corpus
from corpus import openrouter as openrouter_corpus
from hypothesis import given, settings
from hypothesis import strategies as st

from halton_meter.testing.providers import comparable, parse_call
from halton_meter.types import CallRecord, Endpoint, ParseOutcome, Provider, Usage
from halton_meter_plugins.providers.deepseek import DeepSeekProvider, deepseek_usage
from halton_meter_plugins.providers.groq import GroqProvider
from halton_meter_plugins.providers.mistral import MistralProvider, mistral_error
from halton_meter_plugins.providers.openai import OpenAICompatibleProvider
from halton_meter_plugins.providers.openrouter import OpenRouterProvider, openrouter_usage, usd_text

SSE = "text/event-stream; charset=utf-8"
JSON_CT = "application/json"
GROQ, DEEPSEEK, MISTRAL, OPENROUTER = GroqProvider(), DeepSeekProvider(), MistralProvider(), OpenRouterProvider()


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def event(obj: Any) -> bytes:
    return b"data: " + (obj.encode() if isinstance(obj, str) else dumps(obj)) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def run(provider: Provider, body: bytes | list[bytes], *, path: str, request: dict[str, Any] | None = None,
        status: int = 200, content_type: str = SSE, eof: bool = True) -> ParseOutcome:
    """The parser's outcome for `body` (or one element per network read) through the test kit."""
    return parse_call(provider, body, path=path, request=request or {"model": "m", "stream": True}, status=status,
                      response_headers={"content-type": content_type}, eof=eof).outcome


def record_of(case: Case, provider: Provider, started_at: str = "2026-11-22T12:00:00.000000Z",
              split: list[int] | None = None) -> CallRecord:
    """A corpus case straight through `provider`, priced as if the call started at `started_at`."""
    return replay(case, provider, split=split, started_at=started_at)


def case_named(module: Any, name: str) -> Case:
    [case] = [c for c in module.CASES if c.name == name]
    return case


# --------------------------------------------------------------------------------------------------
# identity, hosts, routes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider,name,hosts,price_id", [
    (GROQ, "groq", ("api.groq.com",), "groq"),
    (DEEPSEEK, "deepseek", ("api.deepseek.com",), "deepseek"),
    (MISTRAL, "mistral", ("api.mistral.ai",), "mistral"),
    (OPENROUTER, "openrouter", ("openrouter.ai",), "openrouter"),
])
def test_identity(provider, name, hosts, price_id):
    assert (provider.id, provider.name, provider.hosts, provider.price_provider_id) == (
        f"provider.{name}", name, hosts, price_id)


@pytest.mark.parametrize("provider,method,path,kind,billable", [
    (GROQ, "POST", "/openai/v1/chat/completions", "chat.completions", True),
    (GROQ, "POST", "/openai/v1/chat/completions/", "chat.completions", True),
    (GROQ, "POST", "/v1/chat/completions", "other", False),
    (GROQ, "GET", "/openai/v1/models", "other", False),
    (GROQ, "POST", "/openai/v1/audio/transcriptions", "usage_not_read", True),
    (DEEPSEEK, "POST", "/chat/completions", "chat.completions", True),
    (DEEPSEEK, "POST", "/v1/chat/completions", "chat.completions", True),
    (DEEPSEEK, "POST", "/beta/chat/completions", "chat.completions", True),
    (DEEPSEEK, "POST", "/beta/completions", "completions", True),
    (DEEPSEEK, "POST", "/anthropic/v1/messages", "usage_not_read", True),
    (DEEPSEEK, "GET", "/user/balance", "other", False),
    (DEEPSEEK, "GET", "/models", "other", False),
    (MISTRAL, "POST", "/v1/chat/completions", "chat.completions", True),
    (MISTRAL, "POST", "/v1/agents/completions", "chat.completions", True),
    (MISTRAL, "POST", "/v1/fim/completions", "fim.completions", True),
    (MISTRAL, "POST", "/v1/embeddings", "embeddings", True),
    (MISTRAL, "POST", "/v1/conversations", "usage_not_read", True),
    (MISTRAL, "GET", "/v1/models", "other", False),
    (MISTRAL, "POST", "/chat/completions", "other", False),
    (OPENROUTER, "POST", "/api/v1/chat/completions", "chat.completions", True),
    (OPENROUTER, "POST", "/api/v1/completions", "completions", True),
    (OPENROUTER, "POST", "/api/v1/responses", "usage_not_read", True),
    (OPENROUTER, "POST", "/api/v1/messages", "usage_not_read", True),
    (OPENROUTER, "GET", "/api/v1/generation", "other", False),
    (OPENROUTER, "GET", "/api/v1/models", "other", False),
    (OPENROUTER, "POST", "/v1/chat/completions", "other", False),
])
def test_route(provider, method, path, kind, billable):
    endpoint = provider.route(method, path)
    assert isinstance(endpoint, Endpoint)
    assert (endpoint.kind, endpoint.billable) == (kind, billable)


def test_paid_calls_in_other_formats_are_never_recorded_as_free():
    # Groq's Responses beta is parsed by the OpenAI-compatible base when it knows the format, and is
    # otherwise billable with usage unread; either way it is not a free "other" call.
    assert GROQ.route("POST", "/openai/v1/responses").billable
    for provider, path in ((DEEPSEEK, "/anthropic/v1/messages"), (MISTRAL, "/v1/ocr"),
                           (OPENROUTER, "/api/v1/messages")):
        endpoint = provider.route("POST", path)
        assert endpoint.billable and endpoint.inference


def test_deepseek_chat_paths_are_the_base_chat_endpoint():
    # The base's include_usage handling is keyed on its own chat endpoint; DeepSeek needs it, because its
    # streams report usage only when asked.
    base = OpenAICompatibleProvider().route("POST", "/v1/chat/completions")
    for path in ("/chat/completions", "/v1/chat/completions", "/beta/chat/completions"):
        assert DEEPSEEK.route("POST", path) is base


@pytest.mark.parametrize("provider,path", [
    (GROQ, "/openai/v1/chat/completions"),
    (MISTRAL, "/v1/chat/completions"),
    (OPENROUTER, "/api/v1/chat/completions"),
])
def test_requests_and_streams_are_never_rewritten(provider, path):
    body = dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]})
    endpoint = provider.route("POST", path)
    facts = provider.inspect_request(endpoint, path, body, {})
    assert provider.rewrite_request(endpoint, facts, body) is None
    assert facts.usage_injected is False
    assert provider.response_rewriter(endpoint, facts, 200, {"content-type": SSE}) is None


def test_request_facts_model_and_stream():
    body = dumps({"model": "anthropic/claude-sonnet-4.5", "stream": True, "messages": []})
    facts = OPENROUTER.inspect_request(OPENROUTER.route("POST", "/api/v1/chat/completions"),
                                       "/api/v1/chat/completions", body, {})
    assert (facts.model_requested, facts.stream_requested) == ("anthropic/claude-sonnet-4.5", True)


# --------------------------------------------------------------------------------------------------
# Groq
# --------------------------------------------------------------------------------------------------

GROQ_PATH = "/openai/v1/chat/completions"
GROQ_USAGE = {"queue_time": 0.02, "prompt_tokens": 40, "prompt_time": 0.002, "completion_tokens": 100,
              "completion_time": 0.3, "total_tokens": 140, "total_time": 0.302}


def groq_chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "llama-3.3-70b-versatile",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **extra}


def groq_stream(final_x_groq: dict[str, Any], usage_chunk: dict[str, Any] | None = None) -> bytes:
    parts = [event(groq_chunk({"role": "assistant", "content": ""}, x_groq={"id": "req_1"})),
             event(groq_chunk({"content": "Hi"})),
             event(groq_chunk({}, "stop", x_groq={"id": "req_1", **final_x_groq}))]
    if usage_chunk is not None:
        parts.append(event({**groq_chunk(), "choices": [], "usage": usage_chunk}))
    return b"".join([*parts, DONE])


def test_groq_x_groq_usage_without_include_usage():
    outcome = run(GROQ, groq_stream({"usage": GROQ_USAGE}), path=GROQ_PATH)
    assert outcome.usage == Usage(input_tokens=40, output_tokens=100)
    assert outcome.usage_reported and outcome.complete and outcome.error_type is None


def test_groq_usage_twice_counts_once():
    outcome = run(GROQ, groq_stream({"usage": GROQ_USAGE}, usage_chunk=GROQ_USAGE), path=GROQ_PATH)
    assert outcome.usage == Usage(input_tokens=40, output_tokens=100)


def test_groq_later_usage_replaces_earlier_never_adds():
    later = {**GROQ_USAGE, "prompt_tokens": 41, "total_tokens": 141,
             "prompt_tokens_details": {"cached_tokens": 32}}
    outcome = run(GROQ, groq_stream({"usage": GROQ_USAGE}, usage_chunk=later), path=GROQ_PATH)
    assert outcome.usage == Usage(input_tokens=9, cache_read_tokens=32, output_tokens=100)


def test_groq_standard_usage_wins_over_x_groq_in_the_same_chunk():
    chunk = groq_chunk({}, "stop", usage={**GROQ_USAGE, "completion_tokens": 7, "total_tokens": 47},
                       x_groq={"usage": GROQ_USAGE})
    outcome = run(GROQ, event(chunk) + DONE, path=GROQ_PATH)
    assert outcome.usage.output_tokens == 7


def test_groq_usage_null_does_not_hide_x_groq_usage():
    chunk = groq_chunk({}, "stop", usage=None, x_groq={"usage": GROQ_USAGE})
    assert run(GROQ, event(chunk) + DONE, path=GROQ_PATH).usage.output_tokens == 100


def test_groq_cached_tokens():
    usage = {**GROQ_USAGE, "prompt_tokens_details": {"cached_tokens": 32}}
    outcome = run(GROQ, groq_stream({"usage": usage}), path=GROQ_PATH)
    assert outcome.usage == Usage(input_tokens=8, cache_read_tokens=32, output_tokens=100)


def test_groq_x_groq_error_stops_the_stream():
    outcome = run(GROQ, groq_stream({"error": "Model output exceeded the maximum length"}), path=GROQ_PATH)
    assert outcome.error_type == "stream_error"
    assert (outcome.complete, outcome.incomplete_reason) == (False, "stream_error")
    # The provider's sentence is never kept, under any key (docs/privacy.md).
    assert "Model output" not in json.dumps(outcome.extra) and "stream_error" not in outcome.extra


def test_groq_x_groq_error_identifier_is_the_error_type():
    outcome = run(GROQ, groq_stream({"error": "output_parse_failed", "usage": GROQ_USAGE}), path=GROQ_PATH)
    assert outcome.error_type == "output_parse_failed"
    assert outcome.usage_reported  # partial usage is kept


def test_groq_json_body_and_error_body():
    body = dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": "llama-3.3-70b-versatile",
                  "choices": [], "usage": GROQ_USAGE, "x_groq": {"id": "req_1"}})
    outcome = run(GROQ, body, path=GROQ_PATH, content_type=JSON_CT)
    assert (outcome.usage, outcome.complete, outcome.provider_request_id) == (
        Usage(input_tokens=40, output_tokens=100), True, "chatcmpl-1")
    error = b'{"error":{"message":"m","type":"invalid_request_error","code":"model_decommissioned"}}'
    outcome = run(GROQ, error, path=GROQ_PATH, content_type=JSON_CT, status=400)
    assert (outcome.error_type, outcome.usage_reported) == ("model_decommissioned", False)


def test_groq_unparsed_billable_stream_is_whole_when_it_ends():
    outcome = run(GROQ, event({"type": "response.created"}), path="/openai/v1/audio/transcriptions")
    assert (outcome.complete, outcome.usage_reported, outcome.incomplete_reason) == (True, False, None)
    assert outcome.extra["usage_not_parsed"] is True
    cut = run(GROQ, event({"type": "x"}), path="/openai/v1/audio/transcriptions", eof=False)
    assert (cut.complete, cut.incomplete_reason) == (False, "upstream_truncated")


# --------------------------------------------------------------------------------------------------
# DeepSeek
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("usage,expected", [
    # hit/miss are the billing fields
    ({"prompt_tokens": 1500, "completion_tokens": 80, "total_tokens": 1580, "prompt_cache_hit_tokens": 1280,
      "prompt_cache_miss_tokens": 220, "prompt_tokens_details": {"cached_tokens": 1280}},
     Usage(input_tokens=220, cache_read_tokens=1280, output_tokens=80)),
    # reasoner: reasoning is part of completion_tokens
    ({"prompt_tokens": 529, "completion_tokens": 230, "total_tokens": 759, "prompt_cache_hit_tokens": 512,
      "prompt_cache_miss_tokens": 17, "completion_tokens_details": {"reasoning_tokens": 198}},
     Usage(input_tokens=17, cache_read_tokens=512, output_tokens=230, reasoning_tokens=198)),
    # no hit/miss: the OpenAI mirror stands in
    ({"prompt_tokens": 1500, "completion_tokens": 80, "total_tokens": 1580,
      "prompt_tokens_details": {"cached_tokens": 1024}},
     Usage(input_tokens=476, cache_read_tokens=1024, output_tokens=80)),
    # no cache information at all
    ({"prompt_tokens": 15, "completion_tokens": 5, "total_tokens": 20}, Usage(input_tokens=15, output_tokens=5)),
    # only one of the pair: the other is what is left of the prompt
    ({"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101, "prompt_cache_hit_tokens": 64},
     Usage(input_tokens=36, cache_read_tokens=64, output_tokens=1)),
    ({"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101, "prompt_cache_miss_tokens": 100},
     Usage(input_tokens=100, cache_read_tokens=0, output_tokens=1)),
    # hit/miss disagreeing with the mirror: hit/miss win
    ({"prompt_tokens": 100, "completion_tokens": 1, "total_tokens": 101, "prompt_cache_hit_tokens": 0,
      "prompt_cache_miss_tokens": 100, "prompt_tokens_details": {"cached_tokens": 64}},
     Usage(input_tokens=100, output_tokens=1)),
    # no prompt_tokens: the pair is the prompt, so output is not inflated by total − 0
    ({"completion_tokens": 3, "total_tokens": 13, "prompt_cache_hit_tokens": 4, "prompt_cache_miss_tokens": 6},
     Usage(input_tokens=6, cache_read_tokens=4, output_tokens=3)),
])
def test_deepseek_usage_mapping(usage, expected):
    assert deepseek_usage(usage) == expected


def test_deepseek_stream_keepalive_comments_and_usage_chunk():
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "prompt_cache_hit_tokens": 0,
             "prompt_cache_miss_tokens": 10}
    body = b"".join([b": keep-alive\n\n", b": keep-alive\n\n",
                     event({"id": "x", "model": "deepseek-chat", "choices": [{"index": 0, "delta": {"content": "Hi"},
                                                                              "finish_reason": None}], "usage": None}),
                     event({"id": "x", "model": "deepseek-chat", "choices": [], "usage": usage}), DONE])
    outcome = run(DEEPSEEK, body, path="/chat/completions")
    assert (outcome.usage, outcome.complete, outcome.model) == (Usage(input_tokens=10, output_tokens=2), True,
                                                                "deepseek-chat")


def test_deepseek_fim_uses_the_same_usage_rules():
    body = dumps({"id": "x", "object": "text_completion", "model": "deepseek-chat",
                  "choices": [{"text": "return a + b", "index": 0, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36,
                            "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": 30}})
    outcome = run(DEEPSEEK, [b"\n\n", body], path="/beta/completions", content_type=JSON_CT)
    assert outcome.usage == Usage(input_tokens=30, output_tokens=6)


# Hand arithmetic on genai-prices' deepseek entries (USD per MTok): 00:30–16:30 UTC deepseek-chat miss
# $0.27, hit $0.07, output $1.10; deepseek-reasoner $0.55 / $0.14 / $2.19; outside that window both
# $0.135 / $0.035 / $0.55.
PEAK, OFF_PEAK = "2026-11-22T12:00:00.000000Z", "2026-11-22T20:00:00.000000Z"
DEEPSEEK_COSTS = {
    "deepseek/json-chat-cache-hit-miss": (
        per_million((220, "0.27"), (1280, "0.07"), (80, "1.10")),
        per_million((220, "0.135"), (1280, "0.035"), (80, "0.55"))),
    "deepseek/json-leading-keepalive-blank-lines": (
        per_million((35, "0.27"), (12, "1.10")), per_million((35, "0.135"), (12, "0.55"))),
    "deepseek/json-gzip-v1-path": (
        per_million((1000, "0.27"), (64, "0.07"), (400, "1.10")),
        per_million((1000, "0.135"), (64, "0.035"), (400, "0.55"))),
    "deepseek/stream-reasoner-keepalive-comments": (
        per_million((17, "0.55"), (512, "0.14"), (230, "2.19")),
        per_million((17, "0.135"), (512, "0.035"), (230, "0.55"))),
    "deepseek/stream-include-usage-injected": (
        per_million((6, "0.27"), (128, "0.07"), (4, "1.10")),
        per_million((6, "0.135"), (128, "0.035"), (4, "0.55"))),
}


@pytest.mark.parametrize("name", sorted(DEEPSEEK_COSTS))
def test_deepseek_corpus_costs_at_peak_and_off_peak(name):
    case = case_named(deepseek_corpus, name)
    peak, off_peak = DEEPSEEK_COSTS[name]
    assert record_of(case, DEEPSEEK, PEAK).cost_nanos == peak
    assert record_of(case, DEEPSEEK, OFF_PEAK).cost_nanos == off_peak


def test_every_priced_deepseek_corpus_case_has_a_fixed_time_cost():
    priced = {c.name for c in deepseek_corpus.CASES if c.expect.get("priced") and c.expect.get("cost_nanos") != 0}
    assert priced == set(DEEPSEEK_COSTS)


# --------------------------------------------------------------------------------------------------
# Mistral
# --------------------------------------------------------------------------------------------------

MISTRAL_PATH = "/v1/chat/completions"


def test_mistral_usage_on_finish_chunk():
    body = b"".join([
        event({"id": "c", "object": "chat.completion.chunk", "model": "mistral-small-latest",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Salut"}, "finish_reason": None}]}),
        event({"id": "c", "object": "chat.completion.chunk", "model": "mistral-small-latest",
               "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 20, "total_tokens": 50, "completion_tokens": 30,
                         "prompt_tokens_details": {"cached_tokens": 16}}}),
        DONE])
    outcome = run(MISTRAL, body, path=MISTRAL_PATH)
    assert outcome.usage == Usage(input_tokens=4, cache_read_tokens=16, output_tokens=30)
    assert outcome.complete


@pytest.mark.parametrize("document,expected", [
    ({"object": "error", "message": "Rate limit exceeded", "type": "rate_limited", "param": None, "code": "1300"},
     ("rate_limited", "1300")),
    ({"object": "Error", "message": [{"type": "extra_forbidden"}], "type": "invalid_request_error", "code": 3001},
     ("invalid_request_error", "3001")),
    ({"object": "error", "message": "Service tier capacity exceeded for this model.", "type": None,
      "code": "3505"}, ("3505", "3505")),
    ({"message": "Unauthorized", "request_id": "abc"}, (None, None)),
    ({"error": {"message": "m", "type": "invalid_request_error", "code": None}}, ("invalid_request_error", None)),
    ("not an object", (None, None)),
])
def test_mistral_error_shapes(document, expected):
    assert mistral_error(document) == expected


def test_mistral_gateway_error_falls_back_to_http_status():
    case = Case(name="t", host="api.mistral.ai", path=MISTRAL_PATH, request={"model": "mistral-small-latest"},
                status=401, response=b'{"message":"Unauthorized","request_id":"7d1c"}', expect={})
    record = record_of(case, MISTRAL)
    assert (record.error_type, record.billable, record.cost_nanos) == ("http_401", False, 0)


def test_mistral_error_object_mid_stream():
    body = b"".join([
        event({"id": "c", "model": "mistral-small-latest",
               "choices": [{"index": 0, "delta": {"content": "Sal"}, "finish_reason": None}]}),
        event({"object": "error", "message": "Internal error", "type": "internal_error", "code": "3000"}),
        DONE])
    outcome = run(MISTRAL, body, path=MISTRAL_PATH)
    assert (outcome.error_type, outcome.incomplete_reason, outcome.complete) == ("internal_error", "stream_error",
                                                                               False)


def test_mistral_embeddings_have_input_only():
    body = dumps({"id": "e", "object": "list", "model": "mistral-embed", "data": [],
                  "usage": {"prompt_tokens": 9, "total_tokens": 9, "completion_tokens": 0}})
    outcome = run(MISTRAL, body, path="/v1/embeddings", content_type=JSON_CT)
    assert outcome.usage == Usage(input_tokens=9)


# --------------------------------------------------------------------------------------------------
# OpenRouter
# --------------------------------------------------------------------------------------------------

OR_PATH = "/api/v1/chat/completions"


@pytest.mark.parametrize("usage,expected", [
    ({"prompt_tokens": 12000, "completion_tokens": 500, "total_tokens": 12500,
      "prompt_tokens_details": {"cached_tokens": 8000, "cache_write_tokens": 3000},
      "completion_tokens_details": {"reasoning_tokens": 0}},
     Usage(input_tokens=1000, cache_read_tokens=8000, cache_write_tokens=3000, output_tokens=500,
           reasoning_tokens=0)),
    ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}, Usage(input_tokens=10, output_tokens=5)),
    # inconsistent details never make a bucket negative
    ({"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
      "prompt_tokens_details": {"cached_tokens": 80, "cache_write_tokens": 50}},
     Usage(input_tokens=0, cache_read_tokens=80, cache_write_tokens=20, output_tokens=5)),
    ({"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
      "prompt_tokens_details": {"cached_tokens": None, "cache_write_tokens": None}},
     Usage(input_tokens=100, output_tokens=5)),
])
def test_openrouter_usage_mapping(usage, expected):
    assert openrouter_usage(usage) == expected


@pytest.mark.parametrize("value,text", [
    (0.02415, "0.02415"), (1e-05, "0.00001"), (0.0001995, "0.0001995"), (0, "0"), (2, "2"),
    (None, None), (True, None), ("0.1", None), (float("nan"), None),
])
def test_openrouter_cost_as_decimal_text(value, text):
    assert usd_text(value) == text


def test_openrouter_cost_follows_the_latest_usage():
    first = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "cost": 0.5, "is_byok": True,
             "cost_details": {"upstream_inference_cost": 0.25}}
    last = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14, "cost": 0.75}
    body = b"".join([b": OPENROUTER PROCESSING\n\n",
                     event({"id": "g", "model": "openai/gpt-4o-mini", "provider": "OpenAI", "choices": [],
                            "usage": first}),
                     event({"id": "g", "model": "openai/gpt-4o-mini", "choices": [], "usage": last}), DONE])
    outcome = run(OPENROUTER, body, path=OR_PATH)
    assert outcome.usage == Usage(input_tokens=5, output_tokens=9)
    assert outcome.extra == {"upstream_provider": "OpenAI", "reported_cost_usd": "0.75"}


def test_openrouter_mid_stream_error_with_numeric_code():
    body = b"".join([
        event({"id": "g", "model": "openai/gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "a"}}]}),
        event({"id": "g", "error": {"code": 502, "message": "Upstream error"},
               "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]}),
        DONE])
    outcome = run(OPENROUTER, body, path=OR_PATH)
    assert (outcome.error_type, outcome.incomplete_reason, outcome.complete) == ("502", "stream_error", False)


def test_openrouter_error_body_with_status_200():
    outcome = run(OPENROUTER, b'{"error":{"code":429,"message":"Rate limited upstream"}}', path=OR_PATH,
                  content_type=JSON_CT)
    assert (outcome.error_type, outcome.usage_reported, outcome.extra) == ("429", False, {})


def test_openrouter_model_missing_from_its_list_is_priced_at_the_vendor_list():
    record = record_of(case_named(openrouter_corpus, "openrouter/json-model-missing-from-its-list-priced-at-vendor-list"),
                       OPENROUTER)
    assert (record.billable, record.usage_reported, record.priced) == (True, True, True)
    assert record.price_source.endswith("(x-ai list price)")


# --------------------------------------------------------------------------------------------------
# any chunking: one stream per vendor, split anywhere, gives the same record
# --------------------------------------------------------------------------------------------------

STREAMS = [
    (GROQ, case_named(groq_corpus, "groq/stream-x-groq-and-usage-chunk-counted-once")),
    (GROQ, case_named(groq_corpus, "groq/stream-x-groq-usage-only")),
    (DEEPSEEK, case_named(deepseek_corpus, "deepseek/stream-reasoner-keepalive-comments")),
    (MISTRAL, case_named(mistral_corpus, "mistral/stream-usage-on-finish-chunk-unicode")),
    (OPENROUTER, case_named(openrouter_corpus, "openrouter/stream-processing-comments-usage-chunk")),
    (OPENROUTER, case_named(openrouter_corpus, "openrouter/stream-mid-stream-error-event")),
]


@settings(max_examples=80, deadline=None)
@given(data=st.data(), index=st.integers(0, len(STREAMS) - 1))
def test_stream_any_split_gives_the_same_record(data, index):
    provider, case = STREAMS[index]
    whole = comparable(record_of(case, provider))
    split = data.draw(st.lists(st.integers(0, len(case.body)), max_size=20))
    assert comparable(record_of(case, provider, split=split)) == whole


@pytest.mark.parametrize("index", range(len(STREAMS)))
def test_stream_one_byte_at_a_time_gives_the_same_record(index):
    provider, case = STREAMS[index]
    assert comparable(record_of(case, provider, split=list(range(1, len(case.body))))) == comparable(
        record_of(case, provider))


def test_priced_sample_matches_genai_prices_directly():
    # One cross-check outside the corpus: the host's conversion of our disjoint buckets for OpenRouter's
    # cache writes gives the same money as pricing the whole prompt with genai-prices by hand.
    from genai_prices import Usage as GenaiUsage
    from genai_prices import calc_price

    record = record_of(case_named(openrouter_corpus, "openrouter/json-claude-cache-write-and-cost"), OPENROUTER)
    direct = calc_price(GenaiUsage(input_tokens=12000, cache_read_tokens=8000, cache_write_tokens=3000,
                                   output_tokens=500), "anthropic/claude-sonnet-4.5", provider_id="openrouter",
                        genai_request_timestamp=datetime.datetime(2026, 11, 22, 12, tzinfo=datetime.UTC))
    assert record.cost_nanos == int(direct.total_price * 1_000_000_000) == 24_150_000
