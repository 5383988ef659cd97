"""The provider test kit (halton_meter.testing.providers) and the core's per-call pipeline under it."""

from __future__ import annotations

import pytest

from halton_meter.core.pipeline import CallPipeline
from halton_meter.testing import (
    RECORD_ID,
    assert_any_split_gives_the_same_record,
    bodies,
    comparable,
    compress,
    parse_call,
    parse_response,
    replay,
)
from halton_meter_plugins.providers.anthropic import AnthropicCompatibleProvider
from halton_meter_plugins.providers.openai import OpenAICompatibleProvider

CHAT = "/v1/chat/completions"
SSE = {"content-type": "text/event-stream"}


class CountingParser:
    """Wraps a parser and tells, in the outcome, how many reads it was fed: a parser that depends on the
    network's chunking, which the split property must catch."""

    def __init__(self, inner) -> None:
        self.inner, self.feeds = inner, 0

    def feed(self, data: bytes) -> None:
        self.feeds += 1
        self.inner.feed(data)

    def finish(self, eof: bool):
        outcome = self.inner.finish(eof)
        outcome.extra["feeds"] = self.feeds
        return outcome


class ChunkSensitive(OpenAICompatibleProvider):
    def response_parser(self, *args, **kwargs):
        return CountingParser(super().response_parser(*args, **kwargs))


class Explodes(OpenAICompatibleProvider):
    def response_parser(self, *args, **kwargs):
        parser = super().response_parser(*args, **kwargs)

        class Broken:
            feed = parser.feed

            def finish(self, eof: bool):
                raise RuntimeError("parser bug")

        return Broken()


def test_parse_response_is_deterministic_and_reads_the_usage() -> None:
    body = bodies.openai_chat(prompt_tokens=50, completion_tokens=9)
    one = parse_response(OpenAICompatibleProvider(), body, path=CHAT, request={"model": "gpt-4o"})
    two = parse_response(OpenAICompatibleProvider(), [body[:5], body[5:]], path=CHAT, request={"model": "gpt-4o"})
    assert one.id == RECORD_ID and comparable(one) == comparable(two)
    assert (one.input_tokens, one.output_tokens, one.complete, one.status) == (50, 9, True, 200)


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "gzip, br"])
def test_replay_decodes_what_the_headers_name(encoding: str) -> None:
    body = bodies.anthropic_message(input_tokens=10, output_tokens=4)
    record = replay(AnthropicCompatibleProvider(), {"model": "claude-sonnet-4-5"}, compress(body, encoding),
                    path="/v1/messages?beta=true",
                    response_headers={"content-type": "application/json", "content-encoding": encoding})
    assert (record.input_tokens, record.output_tokens, record.complete) == (10, 4, True)
    assert record.path == "/v1/messages?beta=true"


def test_the_split_property_passes_for_a_real_parser() -> None:
    assert_any_split_gives_the_same_record(OpenAICompatibleProvider(), bodies.openai_chat_stream_events(),
                                           path=CHAT, request={"model": "gpt-4o", "stream": True},
                                           response_headers=SSE, max_examples=20)


def test_the_split_property_catches_a_parser_that_depends_on_chunking() -> None:
    with pytest.raises(AssertionError, match="changes the record"):
        assert_any_split_gives_the_same_record(ChunkSensitive(), bodies.openai_chat_stream_events(), path=CHAT,
                                               request={"model": "gpt-4o", "stream": True},
                                               response_headers=SSE, max_examples=20)


def test_a_record_that_cannot_be_built_is_the_degraded_record() -> None:
    call = parse_call(Explodes(), bodies.openai_chat(), path=CHAT + "?api-key=sk-secret", request={"model": "m"})
    record = call.record
    assert record.incomplete_reason == "internal: RuntimeError"
    assert (record.provider, record.endpoint_kind, record.status, record.complete) == \
        ("openai", "chat.completions", 200, False)
    assert "sk-secret" not in (record.path or "")


def test_a_rewriter_crash_forwards_the_rest_untouched_and_flags_the_record() -> None:
    class BrokenRewriter:
        calls = 0

        def rewrite(self, chunk: bytes) -> bytes:
            BrokenRewriter.calls += 1
            if BrokenRewriter.calls > 1:
                raise ValueError("rewriter bug")
            return chunk

        def flush(self) -> bytes:
            return b""

    class Rewrites(OpenAICompatibleProvider):
        def response_rewriter(self, *args, **kwargs):
            return BrokenRewriter()

    events = bodies.openai_chat_stream_events()
    call = parse_call(Rewrites(), events, path=CHAT, request={"model": "gpt-4o", "stream": True},
                      response_headers=SSE)
    assert call.client_bytes == b"".join(events)
    assert call.record.extra["rewrite_failed"] == "ValueError"
    assert call.record.complete is True  # the meter's own reading of the stream is unaffected


def test_the_pipeline_measures_latency_and_first_byte_with_its_clock() -> None:
    provider = OpenAICompatibleProvider()
    now = iter([10.0, 10.5, 11.0, 12.0])
    call = CallPipeline(provider=provider, endpoint=provider.route("POST", CHAT), method="POST",
                        host="api.openai.com", path=CHAT, clock=lambda: next(now))
    call.read_request(b'{"model":"gpt-4o","stream":true}', {})
    call.request_sent()  # 10.5
    call.start_response(200, SSE)
    for event in bodies.openai_chat_stream_events():
        call.tee(event)  # the first read: 11.0
    call.tee(b"")
    record = call.finish(True)  # 12.0
    assert (record.latency_ms, record.ttft_ms) == (1500.0, 500.0)
