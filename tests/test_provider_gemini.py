"""Gemini API and Gemini Code Assist providers: routing, request facts and the response parsers.

Normative references: docs/providers/index.md, docs/providers/gemini.md, docs/providers/code-assist.md and docs/concepts/tokens.md (Gemini row: input =
promptTokenCount − cachedContentTokenCount (+ toolUsePromptTokenCount, priced as input), cache_read =
cachedContentTokenCount, output = candidatesTokenCount + thoughtsTokenCount, reasoning = thoughtsTokenCount
else null; `usageMetadata` is a running total: the last one wins, none is ever added to another).

Three framings of one `GenerateContentResponse` sequence: a whole JSON body (`generateContent`), SSE
(`streamGenerateContent?alt=sse`, CRLF event ends) and a JSON array written element by element
(`streamGenerateContent` without `alt`, `application/json`). Code Assist wraps each response as
`{"response": {...}, "traceId": ...}`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halton_meter.testing.providers import compress, parse_call
from halton_meter.types import BILLING_SUBSCRIPTION, ParseOutcome, Provider, Usage
from halton_meter_plugins.providers import gemini as gemini_module
from halton_meter_plugins.providers.code_assist import CodeAssistProvider
from halton_meter_plugins.providers.gemini import GeminiProvider, error_type, parse_model_path

SSE = "text/event-stream"
JSON_CT = "application/json; charset=UTF-8"
FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"
RID = "kS3VaK2yIcOxz7IPkuWlgQk"
G = GeminiProvider()
CA = CodeAssistProvider()

# --------------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------------


def dumps(obj: Any, indent: int | None = None) -> str:
    if indent is None:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(obj, indent=indent, ensure_ascii=False)


def meta(prompt: int, candidates: int | None = None, thoughts: int | None = None, cached: int | None = None,
         tool: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        body["candidatesTokenCount"] = candidates
    body["totalTokenCount"] = prompt + (candidates or 0) + (thoughts or 0) + (tool or 0)
    if cached is not None:
        body["cachedContentTokenCount"] = cached
    if tool is not None:
        body["toolUsePromptTokenCount"] = tool
    if thoughts is not None:
        body["thoughtsTokenCount"] = thoughts
    return body


def chunk(text: str = "x", finish: str | None = None, usage: dict[str, Any] | None = None,
          model: str = FLASH, **more: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        body["usageMetadata"] = usage
    return {**body, "modelVersion": model, "responseId": RID, **more}


def sse_body(chunks: list[Any], eol: str = "\r\n") -> bytes:
    return b"".join(f"data: {c if isinstance(c, str) else dumps(c)}{eol}{eol}".encode() for c in chunks)


def array_body(chunks: list[Any], indent: int | None = 2) -> bytes:
    parts = [c if isinstance(c, str) else dumps(c, indent) for c in chunks]
    return ("[" + ",\r\n".join(parts) + "\n]").encode()


def wrapped(inner: dict[str, Any], trace: str | None = "trace-1") -> dict[str, Any]:
    body: dict[str, Any] = {"response": inner}
    if trace is not None:
        body["traceId"] = trace
    return body


def rpc_error(code: int, status: str | None, message: str = "boom") -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if status is not None:
        error["status"] = status
    return {"error": error}


def run(
    body: bytes,
    *,
    path: str = f"/v1beta/models/{FLASH}:streamGenerateContent",
    content_type: str = JSON_CT,
    status: int = 200,
    method: str = "POST",
    request: bytes = b"{}",
    chunks: list[bytes] | None = None,
    eof: bool = True,
    provider: Provider = G,
) -> ParseOutcome:
    """The parser's outcome for `body` (or `chunks`, one per network read) through the test kit."""
    return parse_call(provider, body if chunks is None else chunks, path=path, method=method, request=request,
                      status=status, response_headers={"content-type": content_type}, eof=eof).outcome


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


PRO_STREAM = [
    chunk("**Metering", usage=meta(5000, 10, thoughts=1300), model=PRO),
    chunk(" tokens**", usage=meta(5000, 150, thoughts=1300), model=PRO),
    chunk(" on every chunk,", usage=meta(5000, 300, thoughts=1300), model=PRO),
    chunk(" keeping the last.", "STOP", usage=meta(5000, 420, thoughts=1300), model=PRO),
]
PRO_EXPECTED = Usage(input_tokens=5000, output_tokens=1720, reasoning_tokens=1300)

# --------------------------------------------------------------------------------------------------
# routing and request facts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path,kind,billable,inference",
    [
        ("POST", "/v1beta/models/gemini-2.5-pro:generateContent", "generate_content", True, True),
        ("POST", "/v1/models/gemini-2.0-flash:generateContent", "generate_content", True, True),
        ("POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent", "generate_content", True, True),
        ("POST", "/v1alpha/models/gemini-2.5-flash:streamGenerateContent", "generate_content", True, True),
        ("POST", "/v1beta/tunedModels/my-model-123:generateContent", "generate_content", True, True),
        ("POST", "/v1beta/models/gemini-2.5-pro%3AgenerateContent", "generate_content", True, True),
        ("POST", "/v1beta/models/gemini-2.5-flash:countTokens", "count_tokens", False, False),
        ("POST", "/v1beta/models/gemini-embedding-001:embedContent", "embeddings", True, True),
        ("POST", "/v1beta/models/gemini-embedding-001:batchEmbedContents", "embeddings", True, True),
        ("POST", "/v1beta/openai/chat/completions", "chat.completions", True, True),
        ("GET", "/v1beta/models", "other", False, False),
        ("GET", "/v1beta/models/gemini-2.5-pro", "other", False, False),
        ("GET", "/v1beta/models/gemini-2.5-pro:generateContent", "other", False, False),
        ("POST", "/v1beta/cachedContents", "other", False, False),
        ("PATCH", "/v1beta/cachedContents/abc123", "other", False, False),
        ("DELETE", "/v1beta/cachedContents/abc123", "other", False, False),
        ("POST", "/upload/v1beta/files", "other", False, False),
        ("GET", "/v1beta/files/abc-123", "other", False, False),
        ("POST", "/v1beta/models/gemini-2.5-flash:batchGenerateContent", "other", False, False),
        ("POST", "/v1beta/models/imagen-4.0-generate-001:predict", "other", False, False),
        ("POST", "/v1beta/interactions", "other", False, False),
        ("POST", "/v2/models/gemini-2.5-pro:generateContent", "other", False, False),
        ("POST", "/", "other", False, False),
    ],
)
def test_gemini_route(method, path, kind, billable, inference):
    endpoint = G.route(method, path)
    assert endpoint is not None
    assert (endpoint.kind, endpoint.billable, endpoint.inference) == (kind, billable, inference)


@pytest.mark.parametrize(
    "path,model,stream",
    [
        ("/v1beta/models/gemini-2.5-pro:streamGenerateContent", "gemini-2.5-pro", True),
        ("/v1beta/models/gemini-2.5-pro:generateContent", "gemini-2.5-pro", False),
        ("/v1/models/gemini-2.0-flash-001:generateContent", "gemini-2.0-flash-001", False),
        ("/v1beta/tunedModels/my-model-123:generateContent", "my-model-123", False),
        ("/v1beta/tunedModels/my-model-123:streamGenerateContent", "my-model-123", True),
        ("/v1beta/models/gemini-2.5-flash-preview-09-2025:countTokens", "gemini-2.5-flash-preview-09-2025", False),
        ("/v1beta/models/gemini-embedding-001:embedContent", "gemini-embedding-001", False),
    ],
)
def test_gemini_model_comes_from_the_path(path, model, stream):
    facts = G.inspect_request(G.route("POST", path), path, b'{"contents": []}')
    assert (facts.model_requested, facts.stream_requested) == (model, stream)
    assert parse_model_path(path)[0] == model


def test_gemini_model_path_without_method_is_not_a_model_call():
    assert parse_model_path("/v1beta/models/gemini-2.5-pro") is None
    assert parse_model_path("/v1beta/models/a/b:generateContent") is None


def test_gemini_non_model_paths_name_no_model():
    facts = G.inspect_request(G.route("POST", "/v1beta/cachedContents"), "/v1beta/cachedContents",
                              b'{"model": "models/gemini-2.5-flash"}')
    assert facts.model_requested is None


def test_gemini_openai_surface_reads_the_body_model():
    body = b'{"model": "models/gemini-2.5-flash", "stream": true, "messages": []}'
    path = "/v1beta/openai/chat/completions"
    facts = G.inspect_request(G.route("POST", path), path, body)
    assert (facts.model_requested, facts.stream_requested) == ("gemini-2.5-flash", True)


def test_provider_identities():
    assert G.hosts == ("generativelanguage.googleapis.com",)
    assert (G.name, G.price_provider_id, G.billing) == ("gemini", "google", "api")
    assert "key" in G.secret_query_params
    assert CA.hosts == ("cloudcode-pa.googleapis.com",)
    assert (CA.name, CA.price_provider_id, CA.billing) == ("code-assist", "google", BILLING_SUBSCRIPTION)


@pytest.mark.parametrize(
    "method,path,kind,billable,inference",
    [
        ("POST", "/v1internal:generateContent", "generate_content", True, True),
        ("POST", "/v1internal:streamGenerateContent", "generate_content", True, True),
        ("POST", "/v1internal:countTokens", "count_tokens", False, False),
        ("POST", "/v1internal:loadCodeAssist", "other", False, False),
        ("POST", "/v1internal:onboardUser", "other", False, False),
        ("POST", "/v1internal:retrieveUserQuota", "other", False, False),
        ("POST", "/v1internal:listExperiments", "other", False, False),
        ("GET", "/v1internal:getCodeAssistGlobalUserSetting", "other", False, False),
        ("POST", "/v1internal:setCodeAssistGlobalUserSetting", "other", False, False),
        ("GET", "/v1internal/event:receive", "other", False, False),
        ("GET", "/v1internal/operations/abc", "other", False, False),
        ("GET", "/v1internal:generateContent", "other", False, False),
        ("POST", "/", "other", False, False),
    ],
)
def test_code_assist_route(method, path, kind, billable, inference):
    endpoint = CA.route(method, path)
    assert endpoint is not None
    assert (endpoint.kind, endpoint.billable, endpoint.inference) == (kind, billable, inference)


@pytest.mark.parametrize(
    "path,body,model,stream",
    [
        ("/v1internal:generateContent", {"model": PRO, "project": "p", "request": {"contents": []}}, PRO, False),
        ("/v1internal:streamGenerateContent", {"model": FLASH, "request": {}}, FLASH, True),
        ("/v1internal:countTokens", {"request": {"model": "models/gemini-2.5-pro", "contents": []}}, PRO, False),
        ("/v1internal:countTokens", {"request": {"contents": []}}, None, False),
        ("/v1internal:generateContent", {"request": {"contents": []}}, None, False),
        ("/v1internal:generateContent", [1, 2], None, False),
        ("/v1internal:loadCodeAssist", {"model": PRO}, None, False),
    ],
)
def test_code_assist_request_facts(path, body, model, stream):
    facts = CA.inspect_request(CA.route("POST", path), path, dumps(body).encode())
    assert (facts.model_requested, facts.stream_requested) == (model, stream)


def test_code_assist_request_not_json():
    path = "/v1internal:generateContent"
    for body in (b"", b"not json", b"\xff\xfe"):
        assert CA.inspect_request(CA.route("POST", path), path, body).model_requested is None


# --------------------------------------------------------------------------------------------------
# usage mapping
# --------------------------------------------------------------------------------------------------


def test_json_all_usage_fields():
    body = dumps(chunk("hi", "STOP", usage=meta(120_000, 800, thoughts=400, cached=100_000, tool=50))).encode()
    out = run(body, path=f"/v1beta/models/{PRO}:generateContent")
    assert out.usage == Usage(input_tokens=20_050, cache_read_tokens=100_000, output_tokens=1200,
                              reasoning_tokens=400)
    assert out.usage_reported and out.complete and not out.streamed
    assert (out.model, out.provider_request_id) == (FLASH, RID)
    assert out.extra == {"tool_use_prompt_tokens": 50}
    assert out.incomplete_reason is None


def test_json_without_thoughts_has_no_reasoning_breakdown():
    out = run(dumps(chunk("hi", "STOP", usage=meta(10, 5))).encode())
    assert out.usage.reasoning_tokens is None
    assert out.usage.output_tokens == 5


def test_json_thoughts_zero_is_zero_not_none():
    out = run(dumps(chunk("hi", "STOP", usage=meta(10, 5, thoughts=0))).encode())
    assert out.usage.reasoning_tokens == 0


def test_cached_never_exceeds_prompt():
    usage = {"promptTokenCount": 100, "cachedContentTokenCount": 300, "candidatesTokenCount": 1}
    out = run(dumps(chunk("hi", "STOP", usage=usage)).encode())
    assert out.usage == Usage(input_tokens=0, cache_read_tokens=100, output_tokens=1)


@pytest.mark.parametrize("bad", [None, "12", -5, True, [], {"n": 1}])
def test_bad_counts_are_zero(bad):
    usage = {"promptTokenCount": 100, "candidatesTokenCount": bad, "cachedContentTokenCount": bad,
             "toolUsePromptTokenCount": bad}
    out = run(dumps(chunk("hi", "STOP", usage=usage)).encode())
    assert out.usage.input_tokens == 100
    assert out.usage.output_tokens == 0


def test_tool_use_extra_follows_the_last_usage():
    stream = [chunk("a", usage=meta(50, 1, tool=300)), chunk("b", "STOP", usage=meta(50, 2))]
    out = run(sse_body(stream), content_type=SSE)
    assert "tool_use_prompt_tokens" not in out.extra
    assert out.usage.input_tokens == 50


@pytest.mark.parametrize("reason", [None, 3, ["STOP"], {"r": "STOP"}])
def test_finish_reason_of_a_strange_type_is_not_a_finish(reason):
    body = {"candidates": [{"finishReason": reason}], "usageMetadata": meta(1, 1)}
    out = run(sse_body([body]), content_type=SSE)
    assert out.complete is False and "parser_errors" not in out.extra

def test_json_without_usage_metadata_is_not_reported():
    out = run(dumps(chunk("hi", "STOP")).encode(), path=f"/v1beta/models/{FLASH}:generateContent")
    assert out.usage_reported is False
    assert out.complete is True


# --------------------------------------------------------------------------------------------------
# cumulative usage: last wins, never summed
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["sse", "array"])
def test_usage_on_every_chunk_takes_the_last(framing):
    body = sse_body(PRO_STREAM) if framing == "sse" else array_body(PRO_STREAM)
    out = run(body, content_type=SSE if framing == "sse" else JSON_CT)
    assert out.usage == PRO_EXPECTED
    assert out.usage.input_tokens != 4 * 5000
    assert out.streamed and out.complete
    assert out.model == PRO


def test_usage_only_on_the_last_chunk():
    stream = [chunk("a"), chunk("b"), chunk("c", "STOP", usage=meta(812, 96))]
    out = run(array_body(stream))
    assert out.usage == Usage(input_tokens=812, output_tokens=96)
    assert out.complete is True


def test_a_later_usage_object_replaces_the_earlier_one_whole():
    # Not a field-by-field merge: a count missing from the last object is not carried over.
    stream = [chunk("a", usage=meta(50, 5, thoughts=10)), chunk("b", "STOP", usage=meta(50, 9))]
    out = run(sse_body(stream), content_type=SSE)
    assert out.usage == Usage(input_tokens=50, output_tokens=9, reasoning_tokens=None)


def test_trailing_usage_only_chunk_after_finish():
    stream = [chunk("a", "STOP", usage=meta(50, 5)), {"usageMetadata": meta(50, 7), "modelVersion": FLASH}]
    out = run(sse_body(stream), content_type=SSE)
    assert out.usage.output_tokens == 7
    assert out.complete is True


# --------------------------------------------------------------------------------------------------
# framing: JSON-array stream
# --------------------------------------------------------------------------------------------------


def test_array_stream_split_at_every_byte():
    body = array_body(PRO_STREAM[:1] + PRO_STREAM[-1:])
    whole = run(body)
    assert whole.complete and whole.usage == PRO_EXPECTED
    for cut in range(len(body) + 1):
        assert run(b"", chunks=[body[:cut], body[cut:]]) == whole, cut
    assert run(b"", chunks=pieces(body, 1)) == whole


def test_array_stream_compact_and_pretty_forms_agree():
    assert run(array_body(PRO_STREAM, indent=None)) == run(array_body(PRO_STREAM, indent=2))


def test_array_stream_leading_whitespace_split_across_chunks():
    body = array_body(PRO_STREAM)
    out = run(b"", chunks=[b"\r\n", b"  ", b"\n", body[:3], body[3:]])
    assert out == run(body)
    assert out.streamed is True


def test_array_stream_unicode_and_escapes_inside_strings():
    stream = [chunk('] } [ { " \\ \u2028 日本 😀'), chunk("end", "STOP", usage=meta(3, 4))]
    body = array_body(stream)
    assert run(b"", chunks=pieces(body, 1)).usage == Usage(input_tokens=3, output_tokens=4)


def test_array_stream_without_closing_bracket_is_truncated():
    body = array_body(PRO_STREAM)
    cut = body.rindex(b"]")
    out = run(body[:cut], eof=False)
    assert out.complete is False
    assert out.incomplete_reason == "upstream_truncated"
    assert out.usage == PRO_EXPECTED  # the final chunk arrived; only the framing did not end
    out = run(body[:cut], eof=True)
    assert (out.complete, out.incomplete_reason) == (False, "upstream_truncated")


def test_array_stream_closed_without_finish_reason_is_incomplete():
    out = run(array_body(PRO_STREAM[:2]))
    assert out.complete is False
    assert out.incomplete_reason == "upstream_truncated"
    assert out.usage.output_tokens == 1450


def test_array_stream_truncated_mid_element_keeps_last_complete_usage():
    body = array_body(PRO_STREAM)
    third = body.index(b"on every chunk")
    out = run(body[:third], eof=False)
    assert out.usage.output_tokens == 1450
    assert (out.complete, out.incomplete_reason) == (False, "upstream_truncated")


def test_error_element_inside_array_stream():
    stream = [PRO_STREAM[0], rpc_error(503, "UNAVAILABLE", "The model is overloaded."), ]
    out = run(array_body(stream))
    assert out.error_type == "UNAVAILABLE"
    assert out.incomplete_reason == "stream_error"
    assert out.complete is False
    assert out.usage_reported is True
    assert out.usage.output_tokens == 1310


def test_error_element_after_finish_still_marks_the_stream_broken():
    out = run(array_body([*PRO_STREAM, rpc_error(500, "INTERNAL")]))
    assert (out.complete, out.error_type, out.incomplete_reason) == (False, "INTERNAL", "stream_error")


def test_error_element_without_status_in_a_stream():
    out = run(array_body([PRO_STREAM[0], rpc_error(500, None)]))
    assert out.error_type == "error"
    assert out.incomplete_reason == "stream_error"


def test_http_error_in_array_form():
    body = array_body([rpc_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")])
    out = run(body, status=400)
    assert out.error_type == "INVALID_ARGUMENT"
    assert out.complete is True
    assert out.incomplete_reason is None
    assert out.usage_reported is False


def test_oversize_element_does_not_break_later_ones(monkeypatch):
    monkeypatch.setattr(gemini_module.GenerateContentParser, "max_element_bytes", 4096)
    huge = chunk("y" * 10_000, usage=meta(5000, 999_999, thoughts=1300), model=PRO)
    stream = [PRO_STREAM[0], huge, *PRO_STREAM[1:]]
    body = array_body(stream)
    for size in (1, 7, 1000, len(body)):
        out = run(b"", chunks=pieces(body, size))
        assert out.extra["oversize_events"] == 1
        assert out.usage == PRO_EXPECTED
        assert out.complete is True and out.incomplete_reason is None


def test_oversize_final_element_is_unparsed_oversize(monkeypatch):
    monkeypatch.setattr(gemini_module.GenerateContentParser, "max_element_bytes", 4096)
    last = chunk("y" * 10_000, "STOP", usage=meta(5000, 2000, thoughts=1300), model=PRO)
    out = run(array_body([*PRO_STREAM[:2], last]))
    assert out.complete is False
    assert out.incomplete_reason == "unparsed_oversize"
    assert out.usage.output_tokens == 1450


def test_oversize_element_at_the_default_cap():
    huge = chunk("z" * (9 * 1024 * 1024), usage=meta(5000, 1, thoughts=1300), model=PRO)
    body = array_body([PRO_STREAM[0], huge, *PRO_STREAM[1:]], indent=None)
    out = run(b"", chunks=pieces(body, 1 << 20))
    assert out.extra["oversize_events"] == 1
    assert out.usage == PRO_EXPECTED


def test_invalid_element_is_counted_and_skipped():
    body = array_body([PRO_STREAM[0], "{not json}", *PRO_STREAM[1:]])
    out = run(body)
    assert out.extra["invalid_events"] == 1
    assert out.usage == PRO_EXPECTED and out.complete


def test_non_object_elements_are_ignored():
    body = array_body([[1, 2], PRO_STREAM[-1]])
    assert run(body).usage == PRO_EXPECTED


def test_stream_method_answered_with_a_whole_object():
    # A server may answer the stream method with one JSON object (errors, proxies that buffer).
    out = run(dumps(PRO_STREAM[-1]).encode())
    assert out.streamed is False
    assert out.complete is True
    assert out.usage == PRO_EXPECTED


def test_whole_object_error_on_the_stream_method():
    out = run(dumps(rpc_error(429, "RESOURCE_EXHAUSTED")).encode(), status=429)
    assert (out.error_type, out.streamed, out.complete) == ("RESOURCE_EXHAUSTED", False, True)


# --------------------------------------------------------------------------------------------------
# framing: SSE
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", ["\r\n", "\n", "\r"], ids=["CRLF", "LF", "CR"])
def test_sse_line_endings(eol):
    out = run(sse_body(PRO_STREAM, eol=eol), content_type=SSE)
    assert out.usage == PRO_EXPECTED and out.complete and out.streamed


def test_sse_crlf_split_between_cr_and_lf():
    body = sse_body(PRO_STREAM)
    assert run(b"", chunks=pieces(body, 1), content_type=SSE) == run(body, content_type=SSE)


def test_sse_final_event_without_blank_line_counts_at_eof():
    body = sse_body(PRO_STREAM).rstrip(b"\r\n")
    out = run(body, content_type=SSE)
    assert out.complete is True and out.usage == PRO_EXPECTED


def test_sse_truncated_keeps_last_usage_seen():
    body = sse_body(PRO_STREAM[:2])
    out = run(body, content_type=SSE, eof=False)
    assert (out.complete, out.incomplete_reason) == (False, "upstream_truncated")
    assert out.usage.output_tokens == 1450 and out.usage_reported


def test_sse_ended_without_finish_reason_is_incomplete():
    out = run(sse_body(PRO_STREAM[:3]), content_type=SSE)
    assert (out.complete, out.incomplete_reason) == (False, "upstream_truncated")


def test_sse_error_event():
    out = run(sse_body([PRO_STREAM[0], rpc_error(500, "INTERNAL")]), content_type=SSE)
    assert (out.error_type, out.incomplete_reason, out.complete) == ("INTERNAL", "stream_error", False)
    assert out.usage.output_tokens == 1310


def test_sse_comments_and_garbage_events_are_ignored():
    body = b": keep-alive\r\n\r\n" + sse_body(["not json", "[DONE]", *PRO_STREAM])
    out = run(body, content_type=SSE)
    assert out.usage == PRO_EXPECTED and out.complete


def test_finish_reason_unspecified_is_not_a_finish():
    stream = [chunk("a", "FINISH_REASON_UNSPECIFIED", usage=meta(1, 1))]
    assert run(sse_body(stream), content_type=SSE).complete is False


@pytest.mark.parametrize("reason", ["MAX_TOKENS", "SAFETY", "RECITATION", "MALFORMED_FUNCTION_CALL", "OTHER"])
def test_any_finish_reason_ends_the_stream(reason):
    stream = [chunk("a", usage=meta(1, 1)), chunk("", reason, usage=meta(1, 2))]
    assert run(sse_body(stream), content_type=SSE).complete is True


def test_blocked_prompt_is_complete_without_candidates():
    stream = [{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": meta(12), "modelVersion": FLASH}]
    out = run(sse_body(stream), content_type=SSE)
    assert out.complete is True
    assert out.usage == Usage(input_tokens=12)


def test_sse_error_response_with_http_status():
    out = run(sse_body([rpc_error(429, "RESOURCE_EXHAUSTED")]), content_type=SSE, status=429)
    assert (out.error_type, out.complete, out.incomplete_reason) == ("RESOURCE_EXHAUSTED", True, None)


# --------------------------------------------------------------------------------------------------
# whole bodies, errors, non-generate endpoints
# --------------------------------------------------------------------------------------------------


def test_json_gzip_body_decoded_first():
    raw = dumps(chunk("hi", "STOP", usage=meta(300, 50))).encode()
    data = compress(raw, "gzip")
    out = parse_call(G, [data[:10], data[10:]], path=f"/v1beta/models/{FLASH}:generateContent", request=b"{}",
                     response_headers={"content-type": JSON_CT, "content-encoding": "gzip"}).outcome
    assert out.usage == Usage(input_tokens=300, output_tokens=50)


@pytest.mark.parametrize("body", [b"", b"   ", b"<html>502</html>", b"{truncated"])
def test_unparsable_200_is_parse_error(body):
    out = run(body, path=f"/v1beta/models/{FLASH}:generateContent")
    assert (out.complete, out.incomplete_reason, out.usage_reported) == (False, "parse_error", False)


def test_json_cut_connection_is_not_parsed():
    body = dumps(chunk("hi", "STOP", usage=meta(3, 1))).encode()
    out = run(body, path=f"/v1beta/models/{FLASH}:generateContent", eof=False)
    assert (out.complete, out.incomplete_reason) == (False, "upstream_truncated")


@pytest.mark.parametrize(
    "status,document,expected",
    [
        (429, rpc_error(429, "RESOURCE_EXHAUSTED"), "RESOURCE_EXHAUSTED"),
        (400, rpc_error(400, "INVALID_ARGUMENT"), "INVALID_ARGUMENT"),
        (403, rpc_error(403, "PERMISSION_DENIED"), "PERMISSION_DENIED"),
        (500, rpc_error(500, None), None),  # the record falls back to http_500
        (503, {"unexpected": True}, None),
    ],
)
def test_json_error_bodies(status, document, expected):
    out = run(dumps(document).encode(), status=status, path=f"/v1beta/models/{PRO}:generateContent")
    assert out.error_type == expected
    assert out.usage_reported is False
    assert out.complete is True


def test_error_type_helper():
    assert error_type(rpc_error(429, "RESOURCE_EXHAUSTED")) == "RESOURCE_EXHAUSTED"
    assert error_type([rpc_error(400, "INVALID_ARGUMENT")]) == "INVALID_ARGUMENT"
    assert error_type({"error": "flat string"}) is None
    assert error_type(None) is None


def test_error_object_on_200_whole_body():
    out = run(dumps(rpc_error(500, None)).encode(), path=f"/v1beta/models/{PRO}:generateContent")
    assert out.error_type == "error"


def test_count_tokens_is_not_usage():
    path = f"/v1beta/models/{FLASH}:countTokens"
    out = run(b'{"totalTokens": 31, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]}', path=path)
    assert out.extra == {"counted_input_tokens": 31}
    assert out.usage_reported is False and out.usage == Usage()
    out = run(dumps(rpc_error(400, "INVALID_ARGUMENT")).encode(), path=path, status=400)
    assert out.error_type == "INVALID_ARGUMENT" and "counted_input_tokens" not in out.extra


def test_embeddings_carry_no_usage():
    path = "/v1beta/models/gemini-embedding-001:embedContent"
    out = run(b'{"embedding": {"values": [0.1, 0.2]}}', path=path)
    assert out.usage_reported is False
    assert out.complete is True


def test_embeddings_usage_if_ever_reported_is_input():
    path = "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    out = run(b'{"embeddings": [], "usageMetadata": {"promptTokenCount": 12}}', path=path)
    assert out.usage == Usage(input_tokens=12) and out.usage_reported


def test_other_endpoint_ignores_usage_metadata():
    body = b'{"name": "cachedContents/abc", "usageMetadata": {"totalTokenCount": 4096}}'
    out = run(body, path="/v1beta/cachedContents")
    assert out.usage_reported is False and out.incomplete_reason is None


def test_openai_compatible_surface_errors_use_the_rpc_status():
    body = dumps([rpc_error(400, "INVALID_ARGUMENT", "Invalid JSON payload")]).encode()
    out = run(body, path="/v1beta/openai/chat/completions", status=400)
    assert out.error_type == "INVALID_ARGUMENT"


def test_openai_compatible_surface_usage_last_chunk_wins():
    events = [
        {"choices": [{"delta": {"content": "a"}, "index": 0}], "model": FLASH, "id": "c1",
         "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21}},
        {"choices": [{"delta": {"content": "b"}, "index": 0, "finish_reason": "stop"}], "model": FLASH, "id": "c1",
         "usage": {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}},
        "[DONE]",
    ]
    out = run(sse_body(events, eol="\n"), path="/v1beta/openai/chat/completions", content_type=SSE)
    assert out.usage == Usage(input_tokens=20, output_tokens=30)
    assert out.complete


def test_openai_compatible_surface_stream_error_uses_the_rpc_status():
    events = [{"choices": [{"delta": {"content": "a"}, "index": 0}], "model": FLASH, "id": "c1"},
              rpc_error(503, "UNAVAILABLE")]
    out = run(sse_body(events, eol="\n"), path="/v1beta/openai/chat/completions", content_type=SSE)
    assert (out.error_type, out.incomplete_reason) == ("UNAVAILABLE", "stream_error")


# --------------------------------------------------------------------------------------------------
# Code Assist
# --------------------------------------------------------------------------------------------------

CA_GEN = "/v1internal:generateContent"
CA_STREAM = "/v1internal:streamGenerateContent"


def test_code_assist_wrapped_json():
    inner = chunk("Done.", "STOP", usage=meta(9000, 150, thoughts=600, cached=6000), model=PRO)
    out = run(dumps(wrapped(inner)).encode(), path=CA_GEN, provider=CA)
    assert out.usage == Usage(input_tokens=3000, cache_read_tokens=6000, output_tokens=750, reasoning_tokens=600)
    assert (out.model, out.provider_request_id, out.complete) == (PRO, "trace-1", True)


def test_code_assist_falls_back_to_the_inner_response_id():
    inner = chunk("Done.", "STOP", usage=meta(1, 1))
    out = run(dumps(wrapped(inner, trace=None)).encode(), path=CA_GEN, provider=CA)
    assert out.provider_request_id == RID


def test_code_assist_wrapped_sse_takes_the_last_usage():
    body = sse_body([wrapped(c) for c in PRO_STREAM])
    out = run(body, path=CA_STREAM, content_type=SSE, provider=CA)
    assert out.usage == PRO_EXPECTED
    assert out.streamed and out.complete
    assert run(b"", chunks=pieces(body, 1), path=CA_STREAM, content_type=SSE, provider=CA) == out


def test_code_assist_unwrapped_usage_is_not_read():
    # The wrapper is the format: an unwrapped GenerateContentResponse at the top level is not this API's.
    out = run(dumps(PRO_STREAM[-1]).encode(), path=CA_GEN, provider=CA)
    assert out.usage_reported is False


def test_code_assist_error_event_in_stream():
    body = sse_body([wrapped(PRO_STREAM[0]), rpc_error(429, "RESOURCE_EXHAUSTED")])
    out = run(body, path=CA_STREAM, content_type=SSE, provider=CA)
    assert (out.error_type, out.incomplete_reason, out.complete) == ("RESOURCE_EXHAUSTED", "stream_error", False)
    assert out.usage.output_tokens == 1310


def test_code_assist_http_error_in_array_form():
    out = run(array_body([rpc_error(400, "INVALID_ARGUMENT")]), path=CA_STREAM, status=400, provider=CA)
    assert (out.error_type, out.complete) == ("INVALID_ARGUMENT", True)


def test_code_assist_count_tokens():
    out = run(b'{"totalTokens": 4242}', path="/v1internal:countTokens", provider=CA)
    assert out.extra == {"counted_input_tokens": 4242}
    assert out.usage_reported is False


def test_code_assist_setup_calls_have_no_usage():
    body = dumps({"currentTier": {"id": "free-tier"}, "usageMetadata": meta(1, 1)}).encode()
    out = run(body, path="/v1internal:loadCodeAssist", provider=CA)
    assert out.usage_reported is False and out.error_type is None
    out = run(dumps(rpc_error(403, "PERMISSION_DENIED")).encode(), path="/v1internal:onboardUser", status=403,
              provider=CA)
    assert out.error_type == "PERMISSION_DENIED"


# --------------------------------------------------------------------------------------------------
# properties: any chunking, any bytes
# --------------------------------------------------------------------------------------------------

PROPERTY_BODIES = [
    ("array", G, f"/v1beta/models/{PRO}:streamGenerateContent", JSON_CT, array_body(PRO_STREAM)),
    ("array-error", G, f"/v1beta/models/{PRO}:streamGenerateContent", JSON_CT,
     array_body([PRO_STREAM[0], rpc_error(503, "UNAVAILABLE"), PRO_STREAM[1]])),
    ("sse", G, f"/v1beta/models/{PRO}:streamGenerateContent", SSE, sse_body(PRO_STREAM)),
    ("json", G, f"/v1beta/models/{PRO}:generateContent", JSON_CT, dumps(PRO_STREAM[-1], 2).encode()),
    ("code-assist-sse", CA, CA_STREAM, SSE, sse_body([wrapped(c) for c in PRO_STREAM])),
    ("code-assist-json", CA, CA_GEN, JSON_CT, dumps(wrapped(PRO_STREAM[-1])).encode()),
]


@pytest.mark.parametrize("name,provider,path,content_type,body", PROPERTY_BODIES, ids=[b[0] for b in PROPERTY_BODIES])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_chunking_gives_the_same_outcome(name, provider, path, content_type, body, data):
    whole = run(body, path=path, content_type=content_type, provider=provider)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(body)), max_size=20))))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    eof = data.draw(st.booleans())
    assert run(b"", chunks=chunks, path=path, content_type=content_type, provider=provider, eof=eof) == (
        whole if eof else run(body, path=path, content_type=content_type, provider=provider, eof=False))


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=400), content_type=st.sampled_from([SSE, JSON_CT]),
       prefix=st.sampled_from([b"", b"[", b"data: ", b'[{"candidates":']), eof=st.booleans())
def test_never_raises_on_arbitrary_bytes(body, content_type, prefix, eof):
    for provider, path in ((G, f"/v1beta/models/{FLASH}:streamGenerateContent"), (CA, CA_STREAM)):
        out = run(prefix + body, path=path, content_type=content_type, provider=provider, eof=eof)
        assert isinstance(out, ParseOutcome)
        assert "parser_errors" not in out.extra


@settings(max_examples=100, deadline=None)
@given(usages=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**5), st.integers(0, 10**5)),
                       min_size=1, max_size=8))
def test_stream_usage_is_the_last_reported_never_a_sum(usages):
    stream = [chunk("t", usage=meta(p, c, thoughts=t)) for p, c, t in usages]
    stream[-1]["candidates"][0]["finishReason"] = "STOP"
    p, c, t = usages[-1]
    expected = Usage(input_tokens=p, output_tokens=c + t, reasoning_tokens=t)
    assert run(array_body(stream)).usage == expected
    assert run(sse_body(stream), content_type=SSE).usage == expected

