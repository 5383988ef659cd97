"""OpenAI Responses and Embeddings, include_usage injection (request rewrite and stream filter), the
estimate path, `[plugins.openai]` configuration, the ChatGPT/Codex backend and xAI.

Normative references: docs/providers/index.md, docs/providers/openai.md, docs/providers/codex.md, docs/providers/xai.md and docs/concepts/tokens.md. Chat Completions parsing
itself is covered in tests/test_provider_openai.py; whole wire cases in tests/corpus/{openai,codex,xai}.py.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halton_meter.errors import ConfigError
from halton_meter.testing.providers import compress, parse_call
from halton_meter.types import BILLING_SUBSCRIPTION, ParseOutcome, RequestFacts, StreamRewriter, Usage
from halton_meter_plugins.providers.codex import CodexProvider
from halton_meter_plugins.providers.openai import (
    ESTIMATOR,
    OpenAICompatibleProvider,
    UsageChunkFilter,
    halton_configure,
    include_usage_mode,
    inject_include_usage,
)
from halton_meter_plugins.providers.xai import XAIProvider

SSE = "text/event-stream; charset=utf-8"
JSON_CT = "application/json"
P = OpenAICompatibleProvider()
OFF = OpenAICompatibleProvider(include_usage="off")  # `[plugins.openai] include_usage = "off"`
CODEX = CodexProvider()
XAI = XAIProvider()


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def parse(provider: Any, path: str, request: dict[str, Any] | bytes | None, body: bytes | list[bytes], *,
          status: int = 200, content_type: str = SSE, method: str = "POST", eof: bool = True,
          headers: dict[str, str] | None = None) -> tuple[RequestFacts, ParseOutcome]:
    """What the core does (route, inspect, maybe rewrite, parse the whole upstream body), through the kit."""
    call = parse_call(provider, body, path=path, request=request, method=method, status=status, request_headers=headers,
                      response_headers={"content-type": content_type}, eof=eof)
    return call.facts, call.outcome


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted(set(c for c in cuts if 0 < c < len(data)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# --------------------------------------------------------------------------------------------------
# routes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path,kind,billable",
    [
        ("POST", "/v1/chat/completions", "chat.completions", True),
        ("POST", "/v1/responses", "responses", True),
        ("POST", "/v1/responses/", "responses", True),
        ("POST", "/v1/responses/compact", "responses.compact", True),
        ("POST", "/v1/responses/input_tokens", "count_tokens", False),
        ("GET", "/v1/responses/resp_123", "other", False),
        ("DELETE", "/v1/responses/resp_123", "other", False),
        ("POST", "/v1/responses/resp_123/cancel", "other", False),
        ("GET", "/v1/responses", "other", False),
        ("POST", "/v1/embeddings", "embeddings", True),
        ("POST", "/v1/completions", "completions", True),
        ("POST", "/v1/files", "other", False),
        ("POST", "/responses", "other", False),
    ],
)
def test_openai_routes(method, path, kind, billable):
    endpoint = P.route(method, path)
    assert (endpoint.kind, endpoint.billable) == (kind, billable)
    assert endpoint.inference is billable


def test_compatible_prefix_serves_responses_and_embeddings():
    gateway = OpenAICompatibleProvider(id="provider.gw", name="gw", hosts=("llm.example.internal",),
                                       price_provider_id=None, path_prefix="/api/v1/")
    assert gateway.route("POST", "/api/v1/chat/completions").kind == "chat.completions"
    assert gateway.route("POST", "/api/v1/responses").kind == "responses"
    assert gateway.route("POST", "/api/v1/embeddings").kind == "embeddings"
    assert gateway.route("POST", "/v1/responses").kind == "other"


@pytest.mark.parametrize(
    "method,path,kind",
    [
        ("POST", "/backend-api/codex/responses", "responses"),
        ("POST", "/backend-api/codex/responses/compact", "responses.compact"),
        ("GET", "/backend-api/codex/models", "other"),
        ("GET", "/backend-api/wham/usage", None),  # ChatGPT app APIs: not Codex calls, no record
        ("GET", "/backend-api/codex/responses", "other"),
        ("POST", "/backend-api/conversation", None),
        ("GET", "/", None),
        ("GET", "/c/6890a1b2", None),
        ("POST", "/v1/responses", None),
    ],
)
def test_codex_routes(method, path, kind):
    endpoint = CODEX.route(method, path)
    assert (endpoint.kind if endpoint else None) == kind
    if endpoint is not None and endpoint.kind == "responses":
        assert endpoint.billable


def test_provider_identities():
    assert (CODEX.id, CODEX.name, CODEX.hosts, CODEX.price_provider_id, CODEX.billing) == (
        "provider.codex", "codex", ("chatgpt.com",), "openai", BILLING_SUBSCRIPTION)
    assert (XAI.id, XAI.name, XAI.hosts, XAI.price_provider_id, XAI.billing) == (
        "provider.xai", "xai", ("api.x.ai",), "x-ai", "api")
    assert XAI.route("POST", "/v1/responses").kind == "responses"
    assert XAI.route("POST", "/v1/chat/completions").kind == "chat.completions"


# --------------------------------------------------------------------------------------------------
# include_usage injection: the request
# --------------------------------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "héllo"}]
STREAM = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
CHAT = "/v1/chat/completions"


def test_injection_inserts_one_member_and_keeps_every_other_byte():
    body = b'  {"model":"gpt-4o", "messages": [{"role":"user","content":"h\\u00e9llo \xe2\x9c\x93"}],\n "stream": true, "n": 1.0}'
    facts = P.inspect_request(P.route("POST", CHAT), CHAT, body)
    out = P.rewrite_request(P.route("POST", CHAT), facts, body)
    assert out == b'  {"stream_options":{"include_usage":true},' + body[3:]
    assert facts.usage_injected is True
    assert json.loads(out) == {**json.loads(body), "stream_options": {"include_usage": True}}


@pytest.mark.parametrize(
    "options,expected",
    [
        ({"include_usage": False}, {"include_usage": True}),
        ({"include_obfuscation": False}, {"include_obfuscation": False, "include_usage": True}),
        (None, {"include_usage": True}),
        ({}, {"include_usage": True}),
    ],
)
def test_injection_with_existing_stream_options_reserialises(options, expected):
    request = {**STREAM, "stream_options": options, "temperature": 0.1, "big": 12345678901234567890}
    facts = P.inspect_request(P.route("POST", CHAT), CHAT, dumps(request))
    out = P.rewrite_request(P.route("POST", CHAT), facts, dumps(request))
    assert json.loads(out) == {**request, "stream_options": expected}
    assert list(json.loads(out)) == list(request)  # member order kept
    assert facts.usage_injected


@pytest.mark.parametrize(
    "body",
    [
        dumps({**STREAM, "stream_options": {"include_usage": True}}),  # the client asked itself
        dumps({**STREAM, "stream": False}),
        dumps({"model": "gpt-4o", "messages": MESSAGES}),
        dumps({**STREAM, "stream": "true"}),
        b"",
        b"not json",
        b"[1, 2]",
        '{"stream": true}'.encode("utf-16"),
        b'{"stream": true, "stream_options": {}, "t": 1e400}',  # would not survive re-serialisation
    ],
)
def test_injection_not_applicable(body):
    facts = P.inspect_request(P.route("POST", CHAT), CHAT, body)
    assert P.rewrite_request(P.route("POST", CHAT), facts, body) is None
    assert facts.usage_injected is False


def test_lone_surrogate_survives_reserialisation():
    body = b'{"stream":true,"stream_options":null,"messages":[{"role":"user","content":"\\ud800"}]}'
    out = inject_include_usage(body)
    assert json.loads(out)["messages"][0]["content"] == "\ud800"


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/embeddings", "/v1/completions"])
def test_only_chat_completions_are_rewritten(path):
    endpoint = P.route("POST", path)
    facts = P.inspect_request(endpoint, path, dumps(STREAM))
    assert P.rewrite_request(endpoint, facts, dumps(STREAM)) is None
    assert P.response_rewriter(endpoint, facts, 200, {"content-type": SSE}) is None


def test_codex_never_rewrites():
    endpoint = CODEX.route("POST", "/backend-api/codex/responses")
    facts = CODEX.inspect_request(endpoint, "/backend-api/codex/responses", dumps(STREAM))
    assert CODEX.rewrite_request(endpoint, facts, dumps(STREAM)) is None
    assert CODEX.response_rewriter(endpoint, facts, 200, {"content-type": SSE}) is None


def test_xai_chat_is_injected_too():
    endpoint = XAI.route("POST", CHAT)
    facts = XAI.inspect_request(endpoint, CHAT, dumps(STREAM))
    assert json.loads(XAI.rewrite_request(endpoint, facts, dumps(STREAM)))["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    "injected,status,content_type,expected",
    [
        (True, 200, "text/event-stream", True),
        (True, 200, "Text/Event-Stream; charset=utf-8", True),
        (True, 200, "application/json", False),
        (True, 429, "text/event-stream", False),
        (False, 200, "text/event-stream", False),
    ],
)
def test_response_rewriter_only_for_injected_streams(injected, status, content_type, expected):
    facts = RequestFacts(model_requested="gpt-4o", stream_requested=True, usage_injected=injected)
    rewriter = P.response_rewriter(P.route("POST", CHAT), facts, status, {"content-type": content_type})
    assert (rewriter is not None) is expected
    if rewriter is not None:
        assert isinstance(rewriter, StreamRewriter)


# --------------------------------------------------------------------------------------------------
# include_usage injection: the stream the client sees
# --------------------------------------------------------------------------------------------------

USAGE = {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
         "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}


def chunk(delta: dict[str, Any] | None, finish: str | None = None, *, usage: Any = "omit",
          choices: list | None = None, obfuscation: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                            "service_tier": "default", "system_fingerprint": "fp_1",
                            "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
                            if choices is None else choices}
    if usage != "omit":
        body["usage"] = usage
    if obfuscation is not None:
        body["obfuscation"] = obfuscation
    return body


def event(obj: Any, eol: str = "\n", name: str | None = None) -> bytes:
    payload = obj if isinstance(obj, str) else dumps(obj).decode()
    head = f"event: {name}{eol}" if name else ""
    return f"{head}data: {payload}{eol}{eol}".encode()


def streams(eol: str = "\n", obfuscate: bool = False) -> tuple[bytes, bytes]:
    """(upstream with include_usage, what the client would have seen without it)."""
    deltas = [({"role": "assistant", "content": ""}, None), ({"content": "Hé"}, None),
              ({"content": "llo \u2028 \U0001F600\r\n"}, None), ({}, "stop")]
    upstream, plain = b"", b""
    for i, (delta, finish) in enumerate(deltas):
        pad = "x" * i if obfuscate else None
        upstream += event(chunk(delta, finish, usage=None, obfuscation=pad), eol)
        plain += event(chunk(delta, finish, obfuscation=pad), eol)
    upstream += event(chunk(None, choices=[], usage=USAGE, obfuscation="p" if obfuscate else None), eol)
    done = f"data: [DONE]{eol}{eol}".encode()
    return upstream + done, plain + done


def filtered(data: bytes | list[bytes], rewriter: UsageChunkFilter | None = None) -> bytes:
    rewriter = rewriter or UsageChunkFilter()
    pieces = [data] if isinstance(data, bytes) else data
    return b"".join(rewriter.rewrite(p) for p in pieces) + rewriter.flush()


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("obfuscate", [False, True])
def test_filter_gives_the_stream_without_include_usage(eol, obfuscate):
    upstream, plain = streams(eol, obfuscate)
    assert filtered(upstream) == plain


FILTER_STREAMS = [streams("\n"), streams("\r\n", True), streams("\r"), streams("\r", True)]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), index=st.integers(0, len(FILTER_STREAMS) - 1))
def test_filter_any_chunking_gives_the_same_client_bytes(data, index):
    upstream, plain = FILTER_STREAMS[index]
    cuts = data.draw(st.lists(st.integers(1, len(upstream) - 1), max_size=40))
    assert filtered(split_at(upstream, cuts)) == plain


@pytest.mark.parametrize("index", range(len(FILTER_STREAMS)))
def test_filter_one_byte_at_a_time(index):
    upstream, plain = FILTER_STREAMS[index]
    assert filtered([upstream[i : i + 1] for i in range(len(upstream))]) == plain


def test_filter_forwards_each_event_as_soon_as_it_is_complete():
    first = event(chunk({"content": "a"}, usage=None))
    rewriter = UsageChunkFilter()
    assert rewriter.rewrite(first[:-1]) == b""  # the blank line has not arrived
    assert rewriter.rewrite(first[-1:]) == event(chunk({"content": "a"}))
    # A CR ending the blank line completes the event at once; a following LF is that line's, not a new one.
    cr_event = event(chunk({"content": "b"}, usage=None), "\r")
    assert rewriter.rewrite(cr_event) == event(chunk({"content": "b"}), "\r")
    assert rewriter.rewrite(b"\n") == b"\n"
    usage_chunk = event(chunk(None, choices=[], usage=USAGE), "\r")
    assert rewriter.rewrite(usage_chunk) == b""
    assert rewriter.rewrite(b"\ndata: [DONE]\r\n\r\n") == b"data: [DONE]\r\n\r\n"
    assert rewriter.flush() == b""


def test_filter_crlf_split_between_cr_and_lf_inside_an_event():
    body = event(chunk({"content": "a"}, usage=None), "\r\n")
    cut = body.index(b"\r\n")
    rewriter = UsageChunkFilter()
    out = rewriter.rewrite(body[: cut + 1]) + rewriter.rewrite(body[cut + 1 :]) + rewriter.flush()
    assert out == event(chunk({"content": "a"}), "\r\n")


@pytest.mark.parametrize(
    "text",
    [
        # "usage":null in the middle of the object: not a form OpenAI writes; left alone
        '{"id":"c","usage":null,"choices":[{"index":0,"delta":{"content":"x"}}]}',
        '{"usage":null,"id":"c","choices":[]}',
        # with whitespace
        '{"id":"c","choices":[{"index":0,"delta":{}}], "usage": null}',
        # nested, or inside a string
        '{"id":"c","choices":[{"index":0,"delta":{"content":"x"},"usage":null}]}',
        '{"id":"c","choices":[{"index":0,"delta":{"content":"a,\\"usage\\":null}"}}]}',
        # duplicate keys: removing the last would bring back the first
        '{"id":"c","usage":{"prompt_tokens":1},"choices":[{"index":0}],"usage":null}',
        # not JSON, not an object, a comment, [DONE]
        '{"id":"c","usage":null',
        "[1,2]",
        "[DONE]",
    ],
)
def test_filter_leaves_other_forms_alone(text):
    body = f"data: {text}\n\n".encode()
    assert filtered(body) == body
    assert filtered(b": keep-alive\n\n" + body) == b": keep-alive\n\n" + body


def test_filter_removes_only_the_top_level_member_in_openai_forms():
    plain = '{"id":"c","choices":[{"index":0,"delta":{"content":"a,\\"usage\\":null}"},"usage":null}]'
    assert filtered(f'data: {plain},"usage":null}}\n\n'.encode()) == f"data: {plain}}}\n\n".encode()
    assert (filtered(f'data:{plain},"usage":null,"obfuscation":"Rm9v"}}\n\n'.encode())
            == f'data:{plain},"obfuscation":"Rm9v"}}\n\n'.encode())


@pytest.mark.parametrize(
    "obj",
    [
        # Mistral: usage on the finish chunk (choices not empty)
        {"id": "m", "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}},
        # Groq: x_groq usage on the finish chunk
        {"id": "g", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
         "x_groq": {"id": "req_1", "usage": {"prompt_tokens": 10, "completion_tokens": 3}}},
        # Azure's prompt-filter chunk: empty choices but no usage
        {"id": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0}]},
        # a usage chunk whose choices are missing rather than empty
        {"id": "u", "usage": {"prompt_tokens": 10, "completion_tokens": 3}},
    ],
)
def test_filter_keeps_chunks_that_are_not_the_injected_usage_chunk(obj):
    body = event(obj) + b"data: [DONE]\n\n"
    assert filtered(body) == body


def test_filter_drops_the_whole_usage_event_with_its_other_lines():
    body = b": comment\n\nid: 7\nevent: message\n" + event(chunk(None, choices=[], usage=USAGE)) + b"data: [DONE]\n\n"
    assert filtered(body) == b": comment\n\ndata: [DONE]\n\n"


def test_filter_multi_line_data_usage_chunk_is_dropped_but_never_edited():
    text = dumps(chunk(None, choices=[], usage=USAGE)).decode()
    half = text.index(',"usage"')
    multi = f"data: {text[:half]}\ndata: {text[half:]}\n\n".encode()
    assert filtered(multi) == b""
    with_null = dumps(chunk({"content": "a"}, usage=None)).decode()
    multi_null = f"data: {with_null[:10]}\ndata: {with_null[10:]}\n\n".encode()
    assert filtered(multi_null) == multi_null


def test_filter_flush_returns_an_unterminated_event():
    rewriter = UsageChunkFilter()
    assert rewriter.rewrite(b"data: [DONE]") == b""
    assert rewriter.flush() == b"data: [DONE]"
    rewriter = UsageChunkFilter()
    assert rewriter.rewrite(b'data: {"id":"c","choices":[{"index":0}],"usage":null}\n') == b""
    assert rewriter.flush() == b'data: {"id":"c","choices":[{"index":0}]}\n'
    rewriter = UsageChunkFilter()
    assert rewriter.rewrite(event(chunk(None, choices=[], usage=USAGE))[:-1]) == b""
    assert rewriter.flush() == b""  # a usage chunk cut short of its blank line still never reaches the client


def test_filter_memory_is_bounded_for_a_huge_event():
    big = event(chunk({"content": "x" * 5000}, usage=None))
    rewriter = UsageChunkFilter(max_held=1000)
    out = b"".join(rewriter.rewrite(p) for p in split_at(big, list(range(100, len(big), 700))))
    assert out == big  # forwarded as it arrived, unfiltered
    assert len(rewriter._held) == 0
    small = event(chunk({"content": "y"}, usage=None), "\r")
    assert rewriter.rewrite(small) + rewriter.flush() == event(chunk({"content": "y"}), "\r")


def test_parser_sees_the_full_upstream_stream_and_reports_exact_usage():
    upstream, _ = streams()
    facts, out = parse(P, CHAT, STREAM, upstream)
    assert facts.usage_injected
    assert out.usage_reported and not out.estimated and out.complete
    assert out.usage == Usage(input_tokens=19, output_tokens=10, reasoning_tokens=0)


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


def config(block: dict[str, Any] | None) -> Any:
    return SimpleNamespace(plugin_config=lambda name: (block or {}) if name == "openai" else {})


def test_configure_modes():
    assert include_usage_mode(config({"include_usage": "off"})) == "off"
    assert include_usage_mode(config({"include_usage": "inject"})) == "inject"
    assert include_usage_mode(config(None)) == "inject"  # no block: the default
    assert include_usage_mode(None) == "inject"  # no config at all
    halton_configure(config({"include_usage": "off"}))  # validates, keeps nothing
    assert P.include_usage == "inject" and OFF.include_usage == "off"


@pytest.mark.parametrize("value", ["on", "Inject", "", True, 1, None, ["off"]])
def test_configure_rejects_other_values(value):
    with pytest.raises(ConfigError) as raised:
        halton_configure(config({"include_usage": value}))
    message = raised.value.message
    assert "[plugins.openai] include_usage" in message and '"inject"' in message and '"off"' in message
    assert "\n" not in message


def test_configure_rejects_unknown_keys():
    with pytest.raises(ConfigError, match=r"\[plugins.openai\] include_usge"):
        halton_configure(config({"include_usge": "off"}))


def test_configure_from_config_toml(paths):
    from halton_meter.config import load_config
    from halton_meter.host import PluginHost

    paths.home.mkdir(parents=True, exist_ok=True)
    (paths.home / "config.toml").write_text('[plugins.openai]\ninclude_usage = "off"\n')
    host = PluginHost(load_config(paths)).load(entry_points=False)
    assert host.plugins["openai"].status == "ok"
    providers = host.registries.providers
    assert providers.get("provider.openai").include_usage == "off"
    assert providers.get("provider.xai").include_usage == "off"  # one setting for the OpenAI family
    # The setting lives in the providers a host built, not in the process: another host is unaffected.
    assert PluginHost().load(entry_points=False).registries.providers.get("provider.openai").include_usage == "inject"


def test_mode_off_forwards_the_request_untouched():
    endpoint = OFF.route("POST", CHAT)
    facts = OFF.inspect_request(endpoint, CHAT, dumps(STREAM))
    assert OFF.rewrite_request(endpoint, facts, dumps(STREAM)) is None
    assert facts.usage_injected is False
    assert OFF.response_rewriter(endpoint, facts, 200, {"content-type": SSE}) is None


# --------------------------------------------------------------------------------------------------
# the estimate path
# --------------------------------------------------------------------------------------------------

EST_MESSAGES = [
    {"role": "system", "content": "Be brief."},                                          # 9 bytes
    {"role": "user", "content": [{"type": "text", "text": "héllo ✓"},                   # 10 bytes
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "get", "arguments": "{\"q\":1}"}}]},              # 3 + 7 bytes
    {"role": "tool", "tool_call_id": "call_1", "content": "42"},                           # 2 bytes
]
EST_PROMPT_BYTES = 9 + 10 + 3 + 7 + 2


def plain_stream(texts: tuple[str, ...], done: bool = True) -> bytes:
    body = event(chunk({"role": "assistant", "content": ""}))
    body += b"".join(event(chunk({"content": t})) for t in texts)
    body += event(chunk({}, "stop"))
    return body + (b"data: [DONE]\n\n" if done else b"")


def test_estimate_when_mode_is_off():
    request = {"model": "gpt-4o", "messages": EST_MESSAGES, "stream": True}
    facts, out = parse(OFF, CHAT, request, plain_stream(("Hé", "llo ✓", "!")))
    assert facts.extra["prompt_text_bytes"] == EST_PROMPT_BYTES
    assert "messages" not in json.dumps(facts.extra)  # a count, never the text
    assert out.estimated is True
    assert out.usage_reported is False
    assert out.usage == Usage(input_tokens=math.ceil(EST_PROMPT_BYTES / 4), output_tokens=math.ceil(10 / 4))
    assert out.extra["estimator"] == ESTIMATOR
    assert out.complete is True


def test_estimate_counts_reasoning_and_tool_call_deltas():
    body = b"".join([
        event(chunk({"reasoning_content": "abcd"})),
        event(chunk({"reasoning": "ef"})),
        event(chunk({"tool_calls": [{"index": 0, "function": {"name": "go", "arguments": "{\"a\""}}]})),
        event(chunk({"refusal": "no"})),
        event(chunk({}, "stop")),
        b"data: [DONE]\n\n",
    ])
    _, out = parse(OFF, CHAT, {"model": "gpt-4o", "messages": [], "stream": True}, body)
    assert out.usage == Usage(input_tokens=0, output_tokens=math.ceil((4 + 2 + 2 + 4 + 2) / 4))


def test_estimate_of_a_truncated_stream_counts_what_arrived():
    _, out = parse(OFF, CHAT, {**STREAM, "messages": EST_MESSAGES}, plain_stream(("abcdefgh",), done=False), eof=False)
    assert out.estimated and not out.complete and out.incomplete_reason == "upstream_truncated"
    assert out.usage.output_tokens == 2


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_estimate_does_not_depend_on_chunking(data):
    body = plain_stream(("Hé", "llo ✓ \U0001F600", "…"))
    cuts = data.draw(st.lists(st.integers(1, len(body) - 1), max_size=20))
    request = {**STREAM, "messages": EST_MESSAGES}
    assert parse(OFF, CHAT, request, split_at(body, cuts))[1] == parse(OFF, CHAT, request, body)[1]


def test_reported_usage_is_never_replaced_by_an_estimate():
    body = plain_stream(("Hi",)).replace(b"data: [DONE]", dumps({"id": "c", "choices": [], "usage": USAGE}).join(
        [b"data: ", b"\n\ndata: [DONE]"]))
    _, out = parse(OFF, CHAT, STREAM, body)
    assert out.usage_reported and not out.estimated and "estimator" not in out.extra
    assert out.usage == Usage(input_tokens=19, output_tokens=10, reasoning_tokens=0)


def test_no_estimate_for_json_bodies_or_when_the_client_asked_for_usage():
    _, out = parse(OFF, CHAT, {**STREAM, "stream_options": {"include_usage": True}}, plain_stream(("Hi",)))
    assert not out.estimated and not out.usage_reported
    err = dumps({"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}})
    _, out = parse(OFF, CHAT, STREAM, err, status=400, content_type=JSON_CT)
    assert not out.estimated and out.error_type == "invalid_request_error"


def test_compressed_request_in_inject_mode_is_estimated_not_rewritten():
    endpoint = P.route("POST", CHAT)
    facts = P.inspect_request(endpoint, CHAT, dumps(STREAM), {"content-encoding": "zstd"})
    assert facts.extra["prompt_text_bytes"] == len("héllo".encode())
    assert P.rewrite_request(endpoint, facts, dumps(STREAM)) is None  # the core would not even ask
    _, out = parse(P, CHAT, compress(dumps(STREAM), "zstd"), plain_stream(("abcd",)),
                   headers={"content-encoding": "zstd"})
    assert out.estimated and out.usage == Usage(input_tokens=2, output_tokens=1)


def test_no_estimate_in_inject_mode():
    # e.g. the body could not be rewritten: usage is unknown, and said to be (never silently estimated)
    # The core cannot be made to skip a rewrite it may do, so this drives the provider's hooks directly.
    endpoint = P.route("POST", CHAT)
    facts = P.inspect_request(endpoint, CHAT, dumps(STREAM), {})
    parser = P.response_parser(endpoint, facts, 200, SSE)
    parser.feed(plain_stream(("Hi",)))
    out = parser.finish(True)
    assert "prompt_text_bytes" not in facts.extra
    assert not out.estimated and not out.usage_reported and out.usage == Usage()


def test_vendor_that_opts_out_of_injection_is_estimated():
    class NoStreamOptions(OpenAICompatibleProvider):
        inject_usage = False

    vendor = NoStreamOptions(id="provider.v", name="v", hosts=("v.example",), price_provider_id=None)
    facts, out = parse(vendor, CHAT, STREAM, plain_stream(("abcd",)))
    assert not facts.usage_injected and out.estimated and out.usage == Usage(input_tokens=2, output_tokens=1)


# --------------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------------

RESP_USAGE = {"input_tokens": 5000, "input_tokens_details": {"cached_tokens": 4096}, "output_tokens": 900,
              "output_tokens_details": {"reasoning_tokens": 640}, "total_tokens": 5900}
RESP_EXPECTED = Usage(input_tokens=904, cache_read_tokens=4096, output_tokens=900, reasoning_tokens=640)


def response(status: str = "completed", usage: Any = RESP_USAGE, **more: Any) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "status": status, "model": "gpt-5-2025-08-07", "output": [],
            "usage": usage, "service_tier": "default", "error": None, "incomplete_details": None, **more}


def named(kind: str, eol: str = "\n", **fields: Any) -> bytes:
    return event({"type": kind, **fields}, eol, kind)


def responses_events(terminal: str | None, final: dict[str, Any] | None, eol: str = "\n") -> bytes:
    start = response("in_progress", usage=None, service_tier="auto")
    body = named("response.created", eol, sequence_number=0, response=start)
    body += named("response.in_progress", eol, sequence_number=1, response=start)
    body += named("response.output_text.delta", eol, sequence_number=2, item_id="m", output_index=0,
                  content_index=0, delta="Hi")
    if terminal:
        body += named(terminal, eol, sequence_number=3, response=final)
    return body


RESP = "/v1/responses"


def test_responses_completed():
    _, out = parse(P, RESP, {"model": "gpt-5", "input": "x", "stream": True},
                   responses_events("response.completed", response()))
    assert out.usage == RESP_EXPECTED and out.usage_reported and out.complete and out.streamed
    assert (out.model, out.provider_request_id, out.error_type) == ("gpt-5-2025-08-07", "resp_1", None)
    assert out.extra == {"service_tier": "default"}


def test_responses_incomplete_is_billed_and_complete():
    final = response("incomplete", usage={**RESP_USAGE, "output_tokens": 900},
                     incomplete_details={"reason": "max_output_tokens"})
    _, out = parse(P, RESP, None, responses_events("response.incomplete", final, "\r\n"))
    assert out.complete and out.usage_reported and out.usage == RESP_EXPECTED
    assert out.error_type is None and out.incomplete_reason is None
    assert out.extra["response_status"] == "incomplete"
    assert out.extra["incomplete_details"] == "max_output_tokens"


def test_responses_failed_is_terminal_with_the_error_code():
    final = response("failed", usage=None, error={"code": "server_error", "message": "boom"})
    _, out = parse(P, RESP, None, responses_events("response.failed", final))
    assert out.complete and not out.usage_reported
    assert out.error_type == "server_error"
    final = response("failed", usage=None, error=None)
    assert parse(P, RESP, None, responses_events("response.failed", final))[1].error_type == "response_failed"


def test_responses_failed_with_usage_keeps_it():
    final = response("failed", error={"code": "server_error", "message": "boom"})
    _, out = parse(P, RESP, None, responses_events("response.failed", final))
    assert out.usage == RESP_EXPECTED and out.usage_reported and out.error_type == "server_error"


@pytest.mark.parametrize(
    "payload,expected",
    [
        ({"type": "error", "code": "rate_limit_exceeded", "message": "m", "param": None, "sequence_number": 3},
         "rate_limit_exceeded"),
        ({"type": "error", "code": None, "message": "m", "param": None, "sequence_number": 3}, "error"),
        ({"type": "error", "error": {"type": "invalid_request_error", "code": "context_length_exceeded",
                                     "message": "m"}}, "context_length_exceeded"),
    ],
)
def test_responses_error_event(payload, expected):
    body = responses_events(None, None) + named("error", **{k: v for k, v in payload.items() if k != "type"})
    _, out = parse(P, RESP, None, body)
    assert out.error_type == expected
    assert out.complete is False and out.incomplete_reason == "stream_error"


def test_responses_error_event_then_failed_stays_incomplete():
    body = (responses_events(None, None) + named("error", code="server_error", message="m")
            + named("response.failed", response=response("failed", usage=None, error={"code": "server_error"})))
    _, out = parse(P, RESP, None, body)
    assert out.complete is False and out.error_type == "server_error"


@pytest.mark.parametrize("eof", [True, False])
def test_responses_without_terminal_event_is_truncated(eof):
    _, out = parse(P, RESP, None, responses_events(None, None), eof=eof)
    assert not out.complete and out.incomplete_reason == "upstream_truncated"
    assert not out.usage_reported and out.model == "gpt-5-2025-08-07"


def test_responses_usage_is_cumulative_never_summed():
    body = responses_events(None, None) + named("response.completed", response=response()) + named(
        "response.completed", response=response())
    assert parse(P, RESP, None, body)[1].usage == RESP_EXPECTED


def test_responses_output_uses_the_max_rule():
    usage = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 160,
             "output_tokens_details": {"reasoning_tokens": 50}}
    _, out = parse(P, RESP, None, dumps(response(usage=usage)), content_type=JSON_CT)
    assert out.usage == Usage(input_tokens=100, output_tokens=60, reasoning_tokens=50)


def test_responses_json_object():
    _, out = parse(P, RESP, {"model": "gpt-5", "input": "x"}, dumps(response()), content_type=JSON_CT)
    assert out.usage == RESP_EXPECTED and out.complete and not out.streamed
    _, out = parse(P, RESP, None, dumps(response("incomplete", incomplete_details={"reason": "content_filter"})),
                   content_type=JSON_CT)
    assert out.complete and out.extra["response_status"] == "incomplete"
    assert out.extra["incomplete_details"] == "content_filter"
    _, out = parse(P, RESP, None, dumps(response("failed", usage=None, error={"code": "server_error"})),
                   content_type=JSON_CT)
    assert out.error_type == "server_error" and not out.usage_reported


@pytest.mark.parametrize(
    "status,body,expected",
    [
        (400, {"error": {"message": "m", "type": "invalid_request_error", "param": "input", "code": None}},
         "invalid_request_error"),
        (429, {"error": {"message": "m", "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
         "rate_limit_exceeded"),
        (500, {"error": {"message": "m", "type": "server_error"}}, "server_error"),
        (502, {"detail": "Bad gateway"}, None),
    ],
)
def test_responses_error_bodies(status, body, expected):
    _, out = parse(P, RESP, None, dumps(body), status=status, content_type=JSON_CT)
    assert out.error_type == expected and not out.usage_reported


RESP_STREAMS = [
    responses_events("response.completed", response()),
    responses_events("response.incomplete", response("incomplete"), "\r"),
    responses_events("response.failed", response("failed", usage=None, error={"code": "x"}), "\r\n"),
    responses_events(None, None) + named("error", code="e"),
]


@settings(max_examples=80, deadline=None)
@given(data=st.data(), index=st.integers(0, len(RESP_STREAMS) - 1), eof=st.booleans())
def test_responses_any_chunking_gives_the_same_outcome(data, index, eof):
    body = RESP_STREAMS[index]
    cuts = data.draw(st.lists(st.integers(1, len(body) - 1), max_size=30))
    assert parse(P, RESP, None, split_at(body, cuts), eof=eof)[1] == parse(P, RESP, None, body, eof=eof)[1]


def test_input_tokens_endpoint_is_a_count_not_usage():
    _, out = parse(P, "/v1/responses/input_tokens", {"model": "gpt-5", "input": "x"},
                   b'{"object":"response.input_tokens","input_tokens":11}', content_type=JSON_CT)
    assert not out.usage_reported and out.extra == {"counted_input_tokens": 11}


# --------------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------------


def test_embeddings_input_only():
    body = dumps({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": "AACAPw=="}],
                  "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}})
    facts, out = parse(P, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x",
                                             "encoding_format": "base64"}, body, content_type=JSON_CT)
    assert facts.model_requested == "text-embedding-3-small"
    assert out.usage == Usage(input_tokens=8) and out.usage.reasoning_tokens is None
    assert out.usage_reported and out.complete and out.model == "text-embedding-3-small"


def test_embeddings_error_and_cut():
    err = dumps({"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}})
    assert parse(P, "/v1/embeddings", None, err, status=400, content_type=JSON_CT)[1].error_type == (
        "invalid_request_error")
    body = dumps({"object": "list", "data": [], "model": "m", "usage": {"prompt_tokens": 8}})
    _, out = parse(P, "/v1/embeddings", None, body[:-5], content_type=JSON_CT, eof=False)
    assert not out.usage_reported and out.incomplete_reason == "upstream_truncated"


# --------------------------------------------------------------------------------------------------
# Codex
# --------------------------------------------------------------------------------------------------

CODEX_PATH = "/backend-api/codex/responses"


def test_codex_stream_uses_the_responses_grammar():
    facts, out = parse(CODEX, CODEX_PATH, {"model": "gpt-5-codex", "stream": True, "store": False},
                       responses_events("response.completed", response(model="gpt-5-codex")))
    assert facts.model_requested == "gpt-5-codex" and "include_usage" not in facts.extra
    assert out.usage == RESP_EXPECTED and out.complete and out.model == "gpt-5-codex"


def test_codex_usage_limit_error():
    body = dumps({"error": {"type": "usage_limit_reached", "code": "ignored_code", "message": "limit",
                            "plan_type": "pro", "resets_at": 1795000000}})
    _, out = parse(CODEX, CODEX_PATH, None, body, status=429, content_type=JSON_CT)
    assert out.error_type == "usage_limit_reached"
    assert out.extra == {"plan_type": "pro", "resets_at": 1795000000}
    assert not out.usage_reported


def test_codex_failed_event_prefers_type_then_code():
    final = response("failed", usage=None, error={"code": "context_length_exceeded", "message": "m"})
    assert parse(CODEX, CODEX_PATH, None, responses_events("response.failed", final))[1].error_type == (
        "context_length_exceeded")


def test_codex_other_paths_never_parse_usage():
    _, out = parse(CODEX, "/backend-api/codex/models", None, b'{"models":[]}', method="GET", content_type=JSON_CT)
    assert not out.usage_reported and out.complete


# --------------------------------------------------------------------------------------------------
# xAI
# --------------------------------------------------------------------------------------------------


def test_xai_chat_reasoning_outside_completion_and_reported_cost():
    usage = {"prompt_tokens": 32, "completion_tokens": 9, "total_tokens": 185,
             "prompt_tokens_details": {"cached_tokens": 6}, "completion_tokens_details": {"reasoning_tokens": 144},
             "num_sources_used": 3, "cost_in_usd_ticks": 37756000}
    body = dumps({"id": "x", "object": "chat.completion", "model": "grok-4-0709", "choices": [], "usage": usage})
    _, out = parse(XAI, CHAT, {"model": "grok-4", "messages": []}, body, content_type=JSON_CT)
    assert out.usage == Usage(input_tokens=26, cache_read_tokens=6, output_tokens=153, reasoning_tokens=144)
    assert out.extra == {"num_sources_used": 3, "cost_in_usd_ticks": 37756000, "reported_cost_usd": "0.0037756000"}


def test_xai_responses_keep_reported_cost():
    final = response(usage={**RESP_USAGE, "cost_in_usd_ticks": 0})
    _, out = parse(XAI, RESP, None, responses_events("response.completed", final))
    assert out.extra["reported_cost_usd"] == "0.0000000000" and out.extra["cost_in_usd_ticks"] == 0
    assert "num_sources_used" not in out.extra


@pytest.mark.parametrize(
    "body,expected",
    [
        ({"code": "Client specified an invalid argument", "error": "Incorrect API key provided: xa***."},
         "invalid_argument"),
        ({"code": "Some resource has been exhausted", "error": "Your team has used all available credits."},
         "resource_exhausted"),
        # A description that is not a gRPC status is a sentence: never stored, not even as a slug.
        ({"code": "Something New Happened!", "error": "?"}, None),
        ({"code": "The model grok-9 does not exist or your team has no access", "error": "?"}, None),
        ({"code": "unauthenticated", "error": "Incorrect API key provided: xa***."}, "unauthenticated"),
        ({"code": "Unrecoverable data loss or corruption.", "error": "?"}, "data_loss"),
        ({"error": {"message": "m", "type": "invalid_request_error", "code": "model_not_found"}}, "model_not_found"),
        ({"error": "only a message"}, None),
    ],
)
def test_xai_error_bodies(body, expected):
    for path in (CHAT, RESP):
        _, out = parse(XAI, path, None, dumps(body), status=400, content_type=JSON_CT)
        assert out.error_type == expected


def test_xai_bad_cost_values_are_ignored():
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cost_in_usd_ticks": "12",
             "num_sources_used": True}
    body = dumps({"id": "x", "model": "grok-3-mini", "choices": [], "usage": usage})
    _, out = parse(XAI, CHAT, None, body, content_type=JSON_CT)
    assert out.extra == {}


# --------------------------------------------------------------------------------------------------
# through the real proxy: the injected stream, written in arbitrary pieces
# --------------------------------------------------------------------------------------------------


@pytest.mark.e2e
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_injected_stream_any_wire_chunking_through_the_proxy(meter, fake_provider, data):
    """Split inside UTF-8, between CR and LF, inside the usage chunk: the client always gets the stream it
    would have got without include_usage, the provider always gets the injected request, and the row
    has the exact usage."""
    from halton_meter.testing.fake_provider import Reply

    upstream, plain = FILTER_STREAMS[data.draw(st.integers(0, len(FILTER_STREAMS) - 1), label="stream")]
    cuts = data.draw(st.lists(st.integers(1, len(upstream) - 1), max_size=25), label="cuts")
    fake_provider.clear()
    fake_provider.add("POST", CHAT, Reply(status=200, pieces=split_at(upstream, cuts),
                                          headers={"content-type": SSE}, framing="chunked"))
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
        with client.stream("POST", f"https://api.openai.com{CHAT}", content=dumps(STREAM),
                           headers={"content-type": "application/json"}) as response:
            received = b"".join(response.iter_raw())
    assert received == plain
    [sent] = fake_provider.requests
    assert sent.json() == {**STREAM, "stream_options": {"include_usage": True}}
    [row] = meter.wait_for_calls(before + 1)[before:]
    assert (row["input_tokens"], row["output_tokens"], row["usage_reported"], row["complete"]) == (19, 10, 1, 1)
