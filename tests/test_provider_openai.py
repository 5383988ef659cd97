"""OpenAI Chat Completions provider (and the OpenAI-compatible family): routing, request facts, parser.

Normative references: docs/providers/index.md, docs/providers/openai.md and docs/concepts/tokens.md (OpenAI Chat row: input =
prompt_tokens − cached_tokens, cache_read = cached_tokens, cache_write = 0, output =
max(completion_tokens, total_tokens − prompt_tokens), reasoning =
completion_tokens_details.reasoning_tokens;
error_type = error.code if non-null else error.type). Vendor quirks exercised through the same parser:
xAI (reasoning outside completion_tokens), Mistral (usage on the finish chunk), OpenRouter (
`: OPENROUTER PROCESSING` comments), DeepSeek (keep-alives), Gemini's OpenAI endpoint (usage on
every chunk — take the last).

Bodies are written the way the APIs send them: `data: {json}\\n\\n` events and a final `data: [DONE]`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halton_meter.testing.providers import compress, parse_call
from halton_meter.types import Endpoint, ParseOutcome, RequestFacts, Usage
from halton_meter_plugins.providers.openai import OpenAICompatibleProvider

SSE = "text/event-stream; charset=utf-8"
JSON_CT = "application/json"
MODEL = "gpt-4o-2024-08-06"
CHAT_ID = "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"

# --------------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------------


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def data_event(obj: Any, eol: str = "\n") -> bytes:
    payload = obj if isinstance(obj, str) else dumps(obj)
    return f"data: {payload}{eol}{eol}".encode()


DONE = b"data: [DONE]\n\n"


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, *, usage: Any = "omit",
          model: str = MODEL, choices: list | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": CHAT_ID,
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
        if choices is None else choices,
        **extra,
    }
    if usage != "omit":
        body["usage"] = usage
    return body


USAGE = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
}
EXPECTED = Usage(input_tokens=86, output_tokens=300, cache_read_tokens=1920, reasoning_tokens=192)


def content_chunks(usage: Any = "omit", eol: str = "\n") -> bytes:
    return b"".join([
        data_event(chunk({"role": "assistant", "content": "", "refusal": None}, usage=usage), eol),
        data_event(chunk({"content": "Hello"}, usage=usage), eol),
        data_event(chunk({"content": " w\u2028rld \u00e9\U0001f600"}, usage=usage), eol),
    ])


def stream_include_usage(usage: dict[str, Any] = USAGE, eol: str = "\n", done: bool = True) -> bytes:
    parts = [
        content_chunks(usage=None, eol=eol),
        data_event(chunk({}, "stop", usage=None), eol),
        data_event(chunk(choices=[], usage=usage), eol),
    ]
    if done:
        parts.append(f"data: [DONE]{eol}{eol}".encode())
    return b"".join(parts)


def stream_without_usage(done: bool = True) -> bytes:
    return content_chunks() + data_event(chunk({}, "stop")) + (DONE if done else b"")


def completion_json(usage: dict[str, Any] | None, model: str = MODEL, **extra: Any) -> bytes:
    body = {
        "id": CHAT_ID,
        "object": "chat.completion",
        "created": 1741569952,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!", "refusal": None,
                                             "annotations": []}, "logprobs": None, "finish_reason": "stop"}],
        "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
        **extra,
    }
    if usage is not None:
        body["usage"] = usage
    return dumps(body).encode()


def error_json(message: str, type_: str | None, code: Any, param: Any = None) -> bytes:
    return dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


REQUEST = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}


def run(
    body: bytes,
    *,
    status: int = 200,
    content_type: str = SSE,
    path: str = "/v1/chat/completions",
    method: str = "POST",
    request: dict[str, Any] | None = None,
    chunks: list[bytes] | None = None,
    eof: bool = True,
    provider: OpenAICompatibleProvider | None = None,
) -> ParseOutcome:
    """The parser's outcome for `body` (or `chunks`, one per network read) through the test kit."""
    req = dict(REQUEST, stream=content_type.startswith("text/event-stream")) if request is None else request
    return parse_call(provider or OpenAICompatibleProvider(), body if chunks is None else chunks, path=path,
                      method=method, request=req, status=status, response_headers={"content-type": content_type},
                      eof=eof).outcome


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --------------------------------------------------------------------------------------------------
# routing and request facts
# --------------------------------------------------------------------------------------------------

P = OpenAICompatibleProvider()


@pytest.mark.parametrize(
    "method,path,kind,billable",
    [
        ("POST", "/v1/chat/completions", "chat.completions", True),
        ("POST", "/v1/chat/completions/", "chat.completions", True),
        ("GET", "/v1/chat/completions", "other", False),
        ("GET", "/v1/chat/completions/chatcmpl-abc", "other", False),
        ("GET", "/v1/models", "other", False),
        ("POST", "/chat/completions", "other", False),
        ("POST", "/v2/chat/completions", "other", False),
    ],
)
def test_route(method, path, kind, billable):
    endpoint = P.route(method, path)
    assert isinstance(endpoint, Endpoint)
    assert endpoint.kind == kind
    assert endpoint.billable is billable


def test_chat_endpoint_is_billable_inference():
    endpoint = P.route("POST", "/v1/chat/completions")
    assert endpoint.billable and endpoint.inference


def test_route_custom_prefix_groq_style():
    groq = OpenAICompatibleProvider(id="provider.groq", name="groq", hosts=("api.groq.com",),
                                    price_provider_id="groq", path_prefix="/openai/v1")
    assert groq.route("POST", "/openai/v1/chat/completions").kind == "chat.completions"
    assert groq.route("POST", "/v1/chat/completions").kind == "other"
    deepseek = OpenAICompatibleProvider(id="provider.deepseek", name="deepseek", path_prefix="")
    assert deepseek.route("POST", "/chat/completions").kind == "chat.completions"


@pytest.mark.parametrize(
    "body,model,stream,include_usage",
    [
        (dict(REQUEST, stream=True, stream_options={"include_usage": True}), "gpt-4o", True, True),
        (dict(REQUEST, stream=True), "gpt-4o", True, False),
        (dict(REQUEST, stream=True, stream_options={"include_usage": False}), "gpt-4o", True, False),
        (REQUEST, "gpt-4o", False, False),
        (None, None, False, False),
    ],
)
def test_inspect_request(body, model, stream, include_usage):
    raw = b"" if body is None else dumps(body).encode()
    facts = P.inspect_request(P.route("POST", "/v1/chat/completions"), "/v1/chat/completions", raw)
    assert isinstance(facts, RequestFacts)
    assert facts.model_requested == model
    assert facts.stream_requested is stream
    assert facts.extra.get("include_usage", False) is include_usage


# --------------------------------------------------------------------------------------------------
# non-stream JSON
# --------------------------------------------------------------------------------------------------


def test_json_completion_cached_and_reasoning():
    out = run(completion_json(USAGE), content_type=JSON_CT)
    assert out.usage == EXPECTED  # input = prompt − cached; reasoning a subset of output
    assert out.usage.total_tokens == USAGE["total_tokens"]
    assert out.usage_reported is True
    assert out.complete is True
    assert out.streamed is False
    assert out.model == MODEL
    assert out.provider_request_id == CHAT_ID
    assert out.error_type is None
    assert out.incomplete_reason is None
    assert out.extra.get("service_tier") == "default"


def test_json_completion_minimal_usage():
    out = run(completion_json({"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}),
              content_type=JSON_CT)
    assert out.usage == Usage(input_tokens=19, output_tokens=10, reasoning_tokens=None)


def test_json_completion_rejected_prediction_tokens_stay_in_output():
    usage = {"prompt_tokens": 100, "completion_tokens": 80, "total_tokens": 180,
             "completion_tokens_details": {"reasoning_tokens": 0, "accepted_prediction_tokens": 20,
                                           "rejected_prediction_tokens": 30}}
    out = run(completion_json(usage), content_type=JSON_CT)
    assert out.usage == Usage(input_tokens=100, output_tokens=80, reasoning_tokens=0)


def test_json_xai_reasoning_outside_completion_tokens():
    # xAI chat: total = prompt + completion + reasoning; reasoning billed at the output rate
    usage = {
        "prompt_tokens": 32,
        "completion_tokens": 9,
        "total_tokens": 185,
        "prompt_tokens_details": {"text_tokens": 32, "audio_tokens": 0, "image_tokens": 0,
                                  "cached_tokens": 6},
        "completion_tokens_details": {"reasoning_tokens": 144, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        "num_sources_used": 0,
    }
    out = run(completion_json(usage, model="grok-4-0709"), content_type=JSON_CT)
    assert out.usage == Usage(input_tokens=26, output_tokens=9 + 144, cache_read_tokens=6,
                              reasoning_tokens=144)
    assert out.usage.total_tokens == 185
    assert out.model == "grok-4-0709"


def test_json_total_smaller_than_prompt_plus_completion_uses_completion():
    usage = {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 60}  # inconsistent total
    assert run(completion_json(usage), content_type=JSON_CT).usage.output_tokens == 20


def test_json_usage_without_total_tokens():
    usage = {"prompt_tokens": 50, "completion_tokens": 20}
    assert run(completion_json(usage), content_type=JSON_CT).usage == Usage(input_tokens=50, output_tokens=20)


def test_json_cached_larger_than_prompt_is_clamped():
    usage = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11,
             "prompt_tokens_details": {"cached_tokens": 50}}
    out = run(completion_json(usage), content_type=JSON_CT)
    assert out.usage.input_tokens == 0 and out.usage.cache_read_tokens == 10


def test_json_null_details():
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
             "prompt_tokens_details": None, "completion_tokens_details": None}
    out = run(completion_json(usage), content_type=JSON_CT)
    assert out.usage == Usage(input_tokens=10, output_tokens=2, reasoning_tokens=None)


def test_json_without_usage_is_not_reported():
    out = run(completion_json(None), content_type=JSON_CT)
    assert out.usage_reported is False
    assert out.usage == Usage()
    assert out.complete is True


def test_json_deepseek_keepalive_blank_lines_before_body():
    out = run(b"\n\n\n" + completion_json(USAGE), content_type=JSON_CT)
    assert out.usage == EXPECTED


def test_json_gzip_encoded_body_decoded_first():
    body = completion_json(USAGE)
    out = parse_call(OpenAICompatibleProvider(), pieces(compress(body, "gzip"), 7), path="/v1/chat/completions",
                     request=dict(REQUEST, stream=False),
                     response_headers={"content-type": JSON_CT, "content-encoding": "gzip"}).outcome
    assert out == run(body, content_type=JSON_CT)
    assert out.usage == EXPECTED


def test_json_cut_connection():
    body = completion_json(USAGE)
    out = run(body[:-10], content_type=JSON_CT, eof=False)
    assert out.complete is False
    assert out.usage_reported is False
    assert out.incomplete_reason == "upstream_truncated"


def test_json_garbage_200_is_parse_error():
    out = run(b"<html>", content_type=JSON_CT)
    assert out.incomplete_reason == "parse_error"
    assert out.complete is False


# --------------------------------------------------------------------------------------------------
# error bodies (docs/providers/index.md, "Error bodies")
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,body,expected",
    [
        (429, error_json("Rate limit reached for gpt-4o", "requests", "rate_limit_exceeded"),
         "rate_limit_exceeded"),
        (429, error_json("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
         "insufficient_quota"),
        (401, error_json("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
         "invalid_api_key"),
        (400, error_json("Invalid value for 'model'", "invalid_request_error", None, "model"),
         "invalid_request_error"),
        (500, error_json("The server had an error", "server_error", None), "server_error"),
        (404, error_json("The model `gpt-9` does not exist", "invalid_request_error", "model_not_found"),
         "model_not_found"),
    ],
)
def test_json_error_body(status, body, expected):
    out = run(body, status=status, content_type=JSON_CT)
    assert out.error_type == expected
    assert out.usage_reported is False
    assert out.usage == Usage()
    assert out.model is None
    assert out.streamed is False


def test_stream_requested_but_json_error_returned():
    body = error_json("Rate limit reached", "requests", "rate_limit_exceeded")
    out = run(body, status=429, content_type="application/json; charset=utf-8",
              request=dict(REQUEST, stream=True, stream_options={"include_usage": True}))
    assert out.streamed is False
    assert out.error_type == "rate_limit_exceeded"
    assert out.usage_reported is False


def test_json_error_with_200_status():
    out = run(error_json("oops", "server_error", None), status=200, content_type=JSON_CT)
    assert out.error_type == "server_error"
    assert out.usage_reported is False


def test_json_error_non_json_body_on_502():
    out = run(b"<html>502 Bad Gateway</html>", status=502, content_type="text/html")
    assert out.usage_reported is False
    assert out.incomplete_reason is None


# --------------------------------------------------------------------------------------------------
# streams
# --------------------------------------------------------------------------------------------------


def test_stream_include_usage_exact():
    request = dict(REQUEST, stream=True, stream_options={"include_usage": True})
    out = run(stream_include_usage(), request=request)
    assert out.streamed is True
    assert out.usage == EXPECTED
    assert out.usage_reported is True
    assert out.complete is True
    assert out.incomplete_reason is None
    assert out.model == MODEL
    assert out.provider_request_id == CHAT_ID
    assert out.error_type is None


@pytest.mark.parametrize("eol", ["\r\n", "\r"], ids=["CRLF", "CR"])
def test_stream_other_line_endings(eol):
    assert run(stream_include_usage(eol=eol)) == run(stream_include_usage())


def test_stream_without_usage():
    out = run(stream_without_usage(), request=dict(REQUEST, stream=True))
    assert out.usage_reported is False
    assert out.usage == Usage()
    assert out.complete is True  # [DONE] arrived; usage is simply unknown
    assert out.model == MODEL


def test_stream_usage_null_on_every_chunk_is_ignored():
    body = content_chunks(usage=None) + data_event(chunk({}, "stop", usage=None)) + DONE
    out = run(body)
    assert out.usage_reported is False
    assert out.complete is True


def test_stream_usage_on_finish_chunk_mistral_style():
    usage = {"prompt_tokens": 10, "total_tokens": 20, "completion_tokens": 10}
    body = b"".join([
        data_event({"id": "cf79f7daaee244b1a0ae5c7b1444424a", "object": "chat.completion.chunk", "created": 1,
                    "model": "mistral-large-latest",
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "finish_reason": None}]}),
        data_event({"id": "cf79f7daaee244b1a0ae5c7b1444424a", "object": "chat.completion.chunk", "created": 1,
                    "model": "mistral-large-latest",
                    "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}),
        data_event({"id": "cf79f7daaee244b1a0ae5c7b1444424a", "object": "chat.completion.chunk", "created": 1,
                    "model": "mistral-large-latest",
                    "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
                    "usage": usage}),
        DONE,
    ])
    out = run(body)
    assert out.usage == Usage(input_tokens=10, output_tokens=10)
    assert out.complete is True
    assert out.model == "mistral-large-latest"


def test_stream_usage_on_every_chunk_takes_last_never_sums():
    # Gemini's OpenAI-compatible endpoint: running totals on every chunk
    body = b"".join([
        data_event(chunk({"content": "a"}, model="gemini-2.5-flash",
                         usage={"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9})),
        data_event(chunk({"content": "b"}, model="gemini-2.5-flash",
                         usage={"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13})),
        data_event(chunk({}, "stop", usage={"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 60},
                         model="gemini-2.5-flash")),
        DONE,
    ])
    out = run(body)
    assert out.usage == Usage(input_tokens=8, output_tokens=52)  # max(12, 60 − 8): thoughts counted
    assert out.complete


def test_stream_xai_reasoning_outside_completion():
    usage = {"prompt_tokens": 32, "completion_tokens": 9, "total_tokens": 185,
             "prompt_tokens_details": {"cached_tokens": 6},
             "completion_tokens_details": {"reasoning_tokens": 144}}
    out = run(stream_include_usage(usage))
    assert out.usage == Usage(input_tokens=26, output_tokens=153, cache_read_tokens=6, reasoning_tokens=144)


def test_stream_openrouter_processing_comments_and_cost():
    usage = {"prompt_tokens": 194, "completion_tokens": 2, "total_tokens": 196, "cost": 0.000095,
             "is_byok": False, "prompt_tokens_details": {"cached_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0}}
    body = (b": OPENROUTER PROCESSING\n\n" * 3
            + content_chunks().replace(b"\n\n", b"\n\n: OPENROUTER PROCESSING\n\n", 1)
            + data_event(chunk(choices=[], usage=usage, model="openai/gpt-4o")) + DONE)
    out = run(body)
    assert out.usage == Usage(input_tokens=194, output_tokens=2, reasoning_tokens=0)
    assert out.complete


def test_stream_deepseek_keepalive_comments():
    body = b": keep-alive\n\n" * 5 + stream_include_usage()
    assert run(body) == run(stream_include_usage())


def test_stream_error_chunk_mid_stream():
    err = {"error": {"message": "The server had an error while processing your request.",
                     "type": "server_error", "param": None, "code": None}}
    for tail in (b"", DONE):
        body = content_chunks(usage=None) + data_event(err) + tail
        out = run(body)
        assert out.error_type == "server_error"
        assert out.complete is False
        assert out.incomplete_reason == "stream_error"
        assert out.usage_reported is False


def test_stream_openrouter_error_chunk_with_numeric_code():
    err = chunk(choices=[{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
                model="openai/gpt-4o",
                error={"code": "server_error", "message": "Provider disconnected unexpectedly"})
    out = run(content_chunks() + data_event(err) + DONE)
    assert out.error_type == "server_error"
    assert out.complete is False and out.incomplete_reason == "stream_error"
    # OpenRouter's documented mid-stream error uses a numeric code; the record still gets an error id
    err["error"] = {"code": 502, "message": "Provider returned error"}
    out = run(content_chunks() + data_event(err) + DONE)
    assert out.error_type is not None
    assert out.complete is False


def test_stream_error_after_usage_keeps_usage():
    err = {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}
    body = content_chunks(usage=None) + data_event(chunk(choices=[], usage=USAGE)) + data_event(err)
    out = run(body)
    assert out.usage == EXPECTED
    assert out.error_type == "server_error"
    assert out.complete is False


@pytest.mark.parametrize("eof", [True, False])
def test_stream_truncated_without_done(eof):
    out = run(stream_without_usage(done=False), eof=eof)
    assert out.complete is False
    assert out.incomplete_reason == "upstream_truncated"
    assert out.usage_reported is False


@pytest.mark.parametrize("eof", [True, False])
def test_stream_truncated_after_usage_chunk_keeps_usage(eof):
    out = run(stream_include_usage(done=False), eof=eof)
    assert out.usage == EXPECTED
    assert out.usage_reported is True
    assert out.complete is False
    assert out.incomplete_reason == "upstream_truncated"


def test_stream_cut_mid_event():
    body = stream_include_usage()
    cut = body.index(b'"choices":[]')  # inside the usage chunk
    out = run(body[:cut], eof=False)
    assert out.usage_reported is False
    assert out.complete is False
    assert out.model == MODEL


def test_stream_done_without_trailing_blank_line():
    body = stream_include_usage()
    assert body.endswith(b"data: [DONE]\n\n")
    assert run(body[:-2], eof=True).complete is True
    assert run(body[:-2], eof=False).complete is False


def test_stream_done_then_connection_reset_is_still_complete():
    out = run(stream_include_usage(), eof=False)
    assert out.complete is True
    assert out.usage == EXPECTED


def test_stream_oversize_chunk_skipped():
    huge = chunk({"content": "x" * (9 * 1024 * 1024)}, usage=None)
    body = content_chunks(usage=None) + data_event(huge) + data_event(chunk(choices=[], usage=USAGE)) + DONE
    out = run(b"", chunks=pieces(body, 1 << 20))
    assert out.extra["oversize_events"] == 1
    assert out.usage == EXPECTED
    assert out.complete


@pytest.mark.parametrize(
    "body",
    [
        b"data: [1,2,3]\n\n",
        b"data: \"str\"\n\n",
        data_event({"choices": "nope", "usage": "lots", "model": 5}),
        data_event({"choices": [None, 1, {"finish_reason": 3}], "usage": {"prompt_tokens": "9",
                                                                          "completion_tokens": -4}}),
        data_event({"error": "string error"}),
        data_event({"usage": {"prompt_tokens_details": [], "completion_tokens_details": "x"}}),
        b"data: {\"truncated\": \n\n",
    ],
)
def test_stream_odd_shapes_never_raise(body):
    out = run(body + DONE)
    assert isinstance(out, ParseOutcome)
    assert out.usage.input_tokens >= 0 and out.usage.output_tokens >= 0


@settings(max_examples=60, deadline=None)
@given(junk=st.binary(max_size=400), ct=st.sampled_from([SSE, JSON_CT]), status=st.sampled_from([200, 429]),
       eof=st.booleans())
def test_parser_never_raises_on_garbage(junk, ct, status, eof):
    assert isinstance(run(junk, content_type=ct, status=status, eof=eof), ParseOutcome)


# --------------------------------------------------------------------------------------------------
# non-chat endpoints
# --------------------------------------------------------------------------------------------------


def test_other_endpoint_no_usage():
    body = b'{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1,"owned_by":"system"}]}'
    out = run(body, method="GET", path="/v1/models", content_type=JSON_CT)
    assert out.usage_reported is False
    assert out.incomplete_reason is None


def test_other_endpoint_error_type():
    out = run(error_json("Invalid key", "invalid_request_error", "invalid_api_key"), status=401,
              method="GET", path="/v1/models", content_type=JSON_CT)
    assert out.error_type == "invalid_api_key"


# --------------------------------------------------------------------------------------------------
# chunking properties
# --------------------------------------------------------------------------------------------------

FULL_STREAMS = [
    stream_include_usage(),
    stream_include_usage(eol="\r\n"),
    stream_include_usage(eol="\r"),
    stream_without_usage(),
    stream_include_usage(done=False),
    b": OPENROUTER PROCESSING\n\n" + stream_include_usage({"prompt_tokens": 32, "completion_tokens": 9,
                                                           "total_tokens": 185}),
    content_chunks() + data_event({"error": {"message": "x", "type": "server_error", "code": None}}) + DONE,
]


@settings(max_examples=120, deadline=None)
@given(data=st.data(), index=st.integers(0, len(FULL_STREAMS) - 1), eof=st.booleans())
def test_stream_any_split_gives_identical_outcome(data, index, eof):
    body = FULL_STREAMS[index]
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(body) - 1), max_size=40))))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert run(b"", chunks=chunks, eof=eof) == run(body, eof=eof)


@pytest.mark.parametrize("index", range(len(FULL_STREAMS)))
def test_stream_one_byte_chunks_identical_outcome(index):
    body = FULL_STREAMS[index]
    assert run(b"", chunks=pieces(body, 1)) == run(body)


FULL_JSON = [
    (200, completion_json(USAGE)),
    (200, b"\n\n" + completion_json({"prompt_tokens": 32, "completion_tokens": 9, "total_tokens": 185})),
    (429, error_json("You exceeded your current quota", "insufficient_quota", "insufficient_quota")),
]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), index=st.integers(0, len(FULL_JSON) - 1))
def test_json_any_split_gives_identical_outcome(data, index):
    status, body = FULL_JSON[index]
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(body) - 1), max_size=30))))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert run(b"", chunks=chunks, status=status, content_type=JSON_CT) == run(body, status=status,
                                                                                content_type=JSON_CT)


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "gzip, br"])
def test_json_compressed_decoded_with_body_decoder(encoding):
    body = completion_json(USAGE)
    out = parse_call(OpenAICompatibleProvider(), pieces(compress(body, encoding), 1), path="/v1/chat/completions",
                     request=dict(REQUEST, stream=False),
                     response_headers={"content-type": JSON_CT, "content-encoding": encoding}).outcome
    assert out == run(body, content_type=JSON_CT)
    assert out.usage == EXPECTED
