"""The bounded JSON loader (halton_meter/wire.py, docs/memory.md): every JSON parse of untrusted bytes in the
core and the provider plugins goes through `load_json` / `loads_or_none`.

* Within the element budget (a C-speed count of `,` `{` `[`, which only errs high) a document is parsed
  whole, exactly as `json.loads` would; past it, nothing is materialised.
* Nesting past the decoder's recursion guard and overlong integers are over budget too, never a
  RecursionError (or a half-second integer conversion) in a parser.
* Over budget, a targeted read walks the structure at bounded cost: a document inflated only by commas
  inside strings is still parsed whole; otherwise the members of a top-level object readable from its two
  ends come back as a PartialDocument (how an embeddings body's `usage` survives), and the record says so.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halton_meter import wire
from halton_meter.testing import bodies
from halton_meter.types import RequestFacts
from halton_meter.wire import (
    MAX_JSON_ELEMENTS,
    MAX_JSON_INT_DIGITS,
    BodyDecoder,
    JSONAccumulator,
    JSONArrayStream,
    OverBudget,
    PartialDocument,
    bounded_loads,
    estimate_elements,
    load_json,
    loads_or_none,
    over_estimate,
)
from halton_meter_plugins.providers._common import json_request_facts
from halton_meter_plugins.providers.anthropic import AnthropicCompatibleProvider
from halton_meter_plugins.providers.gemini import GeminiProvider
from halton_meter_plugins.providers.openai import OpenAICompatibleProvider, inject_include_usage

MiB = 1 << 20
JSON_CT = "application/json"
SSE = "text/event-stream"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c for c in cuts if 0 <= c <= len(data))})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]


def run(provider: Any, path: str, body: bytes | list[bytes], *, content_type: str = JSON_CT, status: int = 200,
        request: bytes = b'{"model":"m"}', eof: bool = True):
    endpoint = provider.route("POST", path)
    facts = provider.inspect_request(endpoint, path, request, {})
    parser = provider.response_parser(endpoint, facts, status, content_type)
    for chunk in [body] if isinstance(body, bytes) else body:
        parser.feed(chunk)
    return parser.finish(eof)


def tiny_elements(count: int) -> bytes:
    return b"[" + b",".join([b"{}"] * count) + b"]"


@pytest.fixture
def small_budget(monkeypatch: pytest.MonkeyPatch) -> int:
    """A budget of 200 elements and 64 scan tokens, so over-budget documents stay a few kilobytes."""
    monkeypatch.setattr(wire, "MAX_JSON_ELEMENTS", 200)
    monkeypatch.setattr(wire, "MAX_SCAN_TOKENS", 64)
    monkeypatch.setattr(wire, "PARTIAL_WINDOW", 1024)
    return 200


# --------------------------------------------------------------------------------------------------
# The estimate and the element budget
# --------------------------------------------------------------------------------------------------


def test_budget_boundary_exact():
    at = b"[" + b",".join([b"0"] * MAX_JSON_ELEMENTS) + b"]"  # n-1 commas and one bracket: n
    assert estimate_elements(at) == MAX_JSON_ELEMENTS
    assert not over_estimate(at)
    assert bounded_loads(at) == [0] * MAX_JSON_ELEMENTS
    assert bounded_loads(at.decode()) == [0] * MAX_JSON_ELEMENTS
    over = b"[" + b",".join([b"0"] * (MAX_JSON_ELEMENTS + 1)) + b"]"
    assert over_estimate(over) and over_estimate(over.decode())
    with pytest.raises(OverBudget) as raised:
        bounded_loads(over)
    assert raised.value.reason == "elements"
    assert isinstance(raised.value, ValueError)
    assert loads_or_none(over) is None


def test_explicit_budget_and_short_documents_skip_counting():
    assert bounded_loads(b"[0,0,0]", max_elements=3) == [0, 0, 0]
    with pytest.raises(OverBudget):
        bounded_loads(b"[0,0,0,0]", max_elements=3)
    assert estimate_elements(b"[[],[]]") == 4  # a nested container counts its bracket and its comma
    # A document no longer than the budget cannot be over it: nothing is counted.
    assert not over_estimate(b"," * 10, max_elements=10)


def _values(v: Any) -> int:
    """How many values (containers and scalars, not keys) `json.loads` builds for `v`."""
    if isinstance(v, dict):
        return 1 + sum(_values(x) for x in v.values())
    if isinstance(v, list):
        return 1 + sum(_values(x) for x in v)
    return 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=6),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_estimate_never_under_counts(value):
    """Every value but a container's first follows a comma and every container opens with a bracket, so the
    estimate is at least the values built, minus the root; commas and brackets inside strings only add."""
    for text in (json.dumps(value), json.dumps(value, separators=(",", ":")), json.dumps(value, indent=1)):
        assert estimate_elements(text) >= _values(value) - 1
        assert estimate_elements(text.encode()) == estimate_elements(text)


def test_commas_inside_strings_only_over_estimate_and_cost_nothing():
    document = {"model": "m", "messages": [{"role": "user", "content": "a, [b], {c}, " * 40_000}]}
    text = dumps(document)
    assert estimate_elements(text) > MAX_JSON_ELEMENTS  # the estimate errs high...
    assert load_json(text) == document  # ...and the structural walk proves the document small: parsed whole
    assert loads_or_none(text.decode()) == document
    assert not isinstance(load_json(text, partial=True), PartialDocument)


# --------------------------------------------------------------------------------------------------
# Depth and numbers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bomb", [
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 100_000 + "1" + "}" * 100_000,
    "[" * 2000 + "]" * 2000,
])
def test_depth_bombs_are_over_budget_never_recursion_errors(bomb):
    for data in (bomb, bomb.encode()):
        with pytest.raises(OverBudget) as raised:
            load_json(data, partial=True)
        assert raised.value.reason in ("depth", "elements")
        assert loads_or_none(data) is None


def test_depth_bomb_in_every_place_the_core_parses_json():
    bomb = b"[" * 100_000 + b"]" * 100_000
    anthropic = AnthropicCompatibleProvider()
    out = run(anthropic, "/v1/messages", bomb)  # a whole body
    assert out.incomplete_reason == "unparsed_oversize" and "parser_errors" not in out.extra
    out = run(anthropic, "/v1/messages", b"data: " + bomb + b"\n\n", content_type=SSE)  # a stream event
    assert out.extra["oversize_events"] == 1 and "parser_errors" not in out.extra
    assert out.incomplete_reason == "unparsed_oversize"
    assert json_request_facts(bomb) == RequestFacts()  # a request body
    assert inject_include_usage(bomb) is None
    stream = JSONArrayStream()  # a Gemini stream element
    assert stream.feed(b"[" + bomb + b',{"a":1}]') == [{"a": 1}]
    assert stream.oversize == 1 and stream.invalid == 0
    acc = JSONAccumulator(partial=True)
    acc.feed(bomb)
    assert acc.parse() is None and acc.oversize


def test_integer_literals_are_bounded():
    longest = "9" * MAX_JSON_INT_DIGITS
    assert bounded_loads(f"[{longest},-{longest}]") == [int(longest), -int(longest)]
    with pytest.raises(OverBudget) as raised:
        bounded_loads(f"[{longest}9]")
    assert raised.value.reason == "number"
    assert bounded_loads("[1e999, 0.5, -0]") == [float("inf"), 0.5, 0]


def test_json_loads_semantics_are_kept():
    for text in ('{"a":1,"a":2}', '"\\ud800"', " [1, 2] ", '{"x": NaN}', "\ufeff[]"):
        try:
            expected: Any = json.loads(text)
        except ValueError:
            with pytest.raises(ValueError):
                load_json(text)
            continue
        assert repr(load_json(text)) == repr(expected)
    assert load_json("\ufeff[1]".encode()) == [1]  # bytes: a UTF-8 BOM is allowed, as json.loads allows it
    assert load_json('{"a":1}'.encode("utf-16")) == {"a": 1}
    for bad in ("", "[DONE]", "{", "[1] x", b"\xff\xfe\xfd"):
        assert loads_or_none(bad) is None


# --------------------------------------------------------------------------------------------------
# Targeted reads
# --------------------------------------------------------------------------------------------------


def test_partial_read_takes_members_from_both_ends(small_budget):
    document = {"id": "x", "model": "first", "big": [{}] * 300, "middle": 1, "big2": [[]] * 300,
                "model_at_end": "m", "usage": {"input_tokens": 5}}
    value = load_json(dumps(document), partial=True)
    assert isinstance(value, PartialDocument)
    assert value == {"id": "x", "model": "first", "model_at_end": "m", "usage": {"input_tokens": 5}}
    assert value.unread == ["big"]  # "middle" and "big2" are past the walk's budget, unnamed
    with pytest.raises(OverBudget):
        load_json(dumps(document))  # not without partial=True


def test_partial_read_later_key_wins_as_in_json_loads(small_budget):
    text = b'{"model":"a","big":' + tiny_elements(300) + b',"model":"b"}'
    assert load_json(text, partial=True)["model"] == json.loads(text)["model"] == "b"


def test_partial_read_descends_into_the_big_object_from_both_ends(small_budget):
    """A Responses stream's terminal event: usage inside `response`, after the big `output`."""
    event = {"type": "response.completed",
             "response": {"id": "resp_1", "model": "gpt-4.1", "output": [{"logprobs": [{}] * 300}],
                          "tools": [], "usage": {"input_tokens": 3, "output_tokens": 4}},
             "sequence_number": 9}
    value = load_json(json.dumps(event), partial=True, descend=("response",))
    assert value == {"type": "response.completed", "sequence_number": 9,
                     "response": {"id": "resp_1", "model": "gpt-4.1", "tools": [],
                                  "usage": {"input_tokens": 3, "output_tokens": 4}}}
    assert isinstance(value["response"], PartialDocument) and value["response"].unread == ["output"]
    assert value.unread == []
    # Undeclared, the member a walk stopped in is never read: it might be cut where the budget ran out.
    undeclared = load_json(json.dumps(event), partial=True)
    assert undeclared == {"type": "response.completed", "sequence_number": 9}
    assert undeclared.unread == ["response"]


def test_partial_read_never_returns_a_member_cut_by_the_walk_budget(small_budget):
    """The forward walk runs out inside `usage` (a small object after much structure): it is not returned
    as if it were whole."""
    text = json.dumps({"pad": [[1]] * 40, "usage": {"input_tokens": 5, "output_tokens": 6},
                       "big": [{}] * 300, "end": 1})
    value = load_json(text, partial=True)
    assert value.get("usage") in (None, {"input_tokens": 5, "output_tokens": 6})


@pytest.mark.parametrize("text", [
    tiny_elements(5000),                           # the bomb itself: an array, nothing to read
    b'{"x":' + tiny_elements(5000) + b"}",         # one member, too big: no member read
    b'{"a":' + b'{"b":' * 3000 + b"1" + b"}" * 3001,
])
def test_partial_read_gives_up_when_nothing_is_readable(small_budget, text):
    with pytest.raises(OverBudget):
        load_json(text, partial=True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=4),
       tail=st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=4))
def test_partial_read_members_are_exact(small_budget, head, tail):
    """Whatever a targeted read returns is exactly what json.loads would give for those members (escapes,
    brackets and commas inside strings, unicode and all)."""
    text = json.dumps({**head, "\u0000big": [{}] * 300, **{f"t{k}": v for k, v in tail.items()}})
    full = json.loads(text)
    try:
        value = load_json(text, partial=True)
    except OverBudget:
        return  # nothing fitted the walk's budget
    for source in (text, text.encode()):
        try:
            again = load_json(source, partial=True)
        except OverBudget:
            continue
        assert again == value
    for key, member in value.items():
        assert full[key] == member


# --------------------------------------------------------------------------------------------------
# Bodies through the provider parsers
# --------------------------------------------------------------------------------------------------


def embeddings_body(inputs: int = 2048, dims: int = 1536) -> bytes:
    return bodies.openai_embeddings(inputs, dims, seed=3)


def test_embeddings_3m_floats_exact_usage_in_bounded_memory():
    """2,048 inputs × 1,536 floats, as the API writes them: ~68 MiB, 3.1 M numbers, past the element budget
    and the 16 MiB accumulator cap. The usage and model at its end are read exactly, keeping only the
    body's two ends; materialising it would have cost hundreds of MiB of floats."""
    body = embeddings_body(2048, 1536)
    assert len(body) > 60 * MiB
    provider = OpenAICompatibleProvider()
    endpoint = provider.route("POST", "/v1/embeddings")
    facts = provider.inspect_request(endpoint, "/v1/embeddings", b'{"model":"text-embedding-3-small"}', {})
    parser = provider.response_parser(endpoint, facts, 200, JSON_CT)
    decoder = BodyDecoder(None, cap=parser.decoded_cap)  # the cap the core uses for this parser
    tracemalloc.start()
    try:
        for start in range(0, len(body), 256 * 1024):
            for piece in decoder.pieces(body[start : start + 256 * 1024]):
                parser.feed(piece)
        out = parser.finish(True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.usage.input_tokens == 98304 and out.usage.output_tokens == 0 and out.usage_reported
    assert out.model == "text-embedding-3-small"
    assert out.complete and out.incomplete_reason is None
    assert out.extra["partial_read"]["unread"] == ["data"]
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_small_embeddings_body_is_read_whole():
    body = embeddings_body(4, 256)
    out = run(OpenAICompatibleProvider(), "/v1/embeddings", body)
    assert out.usage.input_tokens == 98304 and out.complete and "partial_read" not in out.extra


def test_chat_completion_with_huge_logprobs_keeps_exact_usage():
    top = [{"token": "x", "logprob": -1.5, "bytes": [120]}] * 20
    content = [{"token": "x", "logprob": -0.5, "bytes": [120], "top_logprobs": top}] * 1500
    document = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 1500},
                             "logprobs": {"content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1500, "total_tokens": 1510},
                "service_tier": "default", "system_fingerprint": "fp_1"}
    body = dumps(document)
    assert estimate_elements(body) > MAX_JSON_ELEMENTS
    out = run(OpenAICompatibleProvider(), "/v1/chat/completions", body)
    assert (out.usage.input_tokens, out.usage.output_tokens) == (10, 1500)
    assert out.model == "gpt-4o-2024-08-06" and out.provider_request_id == "chatcmpl-1"
    assert out.complete and out.extra["partial_read"]["unread"] == ["choices"]


@pytest.mark.parametrize("chunking", ["whole", "small"])
def test_tiny_element_bomb_body_is_unparsed_oversize(chunking):
    body = tiny_elements(2 * MiB // 3)
    chunks = [body] if chunking == "whole" else [body[i : i + 4096] for i in range(0, len(body), 4096)]
    for provider, path in ((AnthropicCompatibleProvider(), "/v1/messages"),
                           (OpenAICompatibleProvider(), "/v1/chat/completions")):
        tracemalloc.start()
        try:
            out = run(provider, path, chunks)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert out.incomplete_reason == "unparsed_oversize" and not out.complete and not out.usage_reported
        assert peak < 4 * MiB, f"{path}: peak {peak / MiB:.1f} MiB"


def test_error_body_over_budget_still_gives_the_error():
    body = b'{"type":"error","junk":' + tiny_elements(MAX_JSON_ELEMENTS) + b',"error":{"type":"overloaded_error"}}'
    out = run(AnthropicCompatibleProvider(), "/v1/messages", body, status=529)
    assert out.error_type == "overloaded_error" and "partial_read" in out.extra


def test_request_over_budget_still_gives_model_and_stream():
    request = {"model": "gpt-4.1", "messages": [{"role": "user", "content": [[0]] * (MAX_JSON_ELEMENTS + 10)}],
               "temperature": 1, "stream": True}
    body = dumps(request)
    facts = json_request_facts(body)
    assert facts.model_requested == "gpt-4.1" and facts.stream_requested
    assert facts.extra["request_read"] == "partial"
    # Which top-level members the unread middle holds is unknown: the body is left as the client wrote it.
    assert inject_include_usage(body) is None
    provider = OpenAICompatibleProvider()
    endpoint = provider.route("POST", "/v1/chat/completions")
    facts = provider.inspect_request(endpoint, "/v1/chat/completions", body, {"content-encoding": "gzip"})
    assert "prompt_text_bytes" not in facts.extra  # no estimate from messages that were not read


def test_request_inflated_by_commas_in_strings_is_read_whole_and_rewritten():
    request = {"model": "gpt-4.1", "stream": True,
               "messages": [{"role": "user", "content": "one, two, three, " * 60_000}]}
    body = dumps(request)
    assert estimate_elements(body) > MAX_JSON_ELEMENTS
    facts = json_request_facts(body)
    assert facts.model_requested == "gpt-4.1" and "request_read" not in facts.extra
    rewritten = inject_include_usage(body)
    assert rewritten is not None and json.loads(rewritten)["stream_options"] == {"include_usage": True}


# --------------------------------------------------------------------------------------------------
# Streams: over-budget events and elements, split anywhere
# --------------------------------------------------------------------------------------------------


def _anthropic_stream() -> bytes:
    def event(name: str, data: Any) -> bytes:
        return f"event: {name}\ndata: ".encode() + (data if isinstance(data, bytes) else dumps(data)) + b"\n\n"

    return b"".join([
        event("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "model": "claude-x", "content": [],
            "usage": {"input_tokens": 11, "output_tokens": 1}}}),
        event("content_block_delta", tiny_elements(400)),  # over budget, nothing readable: skipped
        event("content_block_delta", b'{"type":"content_block_delta","index":0,"junk":' + tiny_elements(400)
              + b',"delta":{"type":"text_delta","text":"hi"}}'),  # over budget, read from its ends
        event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                "usage": {"output_tokens": 22}}),
        event("message_stop", {"type": "message_stop"}),
    ])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(0, len(_anthropic_stream())), max_size=30))
def test_sse_with_over_budget_events_any_split_same_outcome(small_budget, cuts):
    body = _anthropic_stream()
    provider = AnthropicCompatibleProvider()
    whole = run(provider, "/v1/messages", body, content_type=SSE)
    assert (whole.usage.input_tokens, whole.usage.output_tokens) == (11, 22) and whole.complete
    assert whole.extra == {"oversize_events": 1, "partial_events": 1}
    assert run(provider, "/v1/messages", split_at(body, cuts), content_type=SSE) == whole


def _gemini_array_stream() -> bytes:
    usage = {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10}
    return b"[" + b",\r\n".join([
        dumps({"candidates": [{"content": {"parts": [{"text": "a,b]"}], "role": "model"}}],
               "modelVersion": "gemini-2.5-pro"}),
        tiny_elements(400),  # over budget: skipped and counted
        b'{"candidates":' + b"[" + b",".join([b'{"index":0}'] * 300) + b"]"  # read from its ends
        + b"," + dumps({"usageMetadata": usage, "modelVersion": "gemini-2.5-pro"})[1:-1] + b"}",
        dumps({"candidates": [{"content": {"parts": [{"text": "c"}]}, "finishReason": "STOP"}],
               "usageMetadata": usage, "modelVersion": "gemini-2.5-pro"}),
    ]) + b"]"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(0, len(_gemini_array_stream())), max_size=30))
def test_json_array_stream_with_over_budget_elements_any_split_same_outcome(small_budget, cuts):
    body = _gemini_array_stream()
    provider = GeminiProvider()
    path = "/v1beta/models/gemini-2.5-pro:streamGenerateContent"
    whole = run(provider, path, body)
    assert (whole.usage.input_tokens, whole.usage.output_tokens) == (7, 3) and whole.complete
    assert whole.extra == {"oversize_events": 1, "partial_events": 1}
    assert run(provider, path, split_at(body, cuts)) == whole


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(0, 6000), max_size=40))
def test_json_body_over_budget_any_split_same_document(small_budget, cuts):
    """The accumulator keeps the same two windows however the body arrives."""
    body = b'{"id":"a","data":' + tiny_elements(1500) + b',"model":"m","usage":{"prompt_tokens":3}}'
    results = []
    for chunks in ([body], split_at(body, cuts)):
        acc = JSONAccumulator(partial=True)
        for chunk in chunks:
            acc.feed(chunk)
        results.append(acc.parse())
    assert results[0] == results[1] == {"id": "a", "model": "m", "usage": {"prompt_tokens": 3}}
    assert isinstance(results[1], PartialDocument) and results[1].unread == ["data"]
