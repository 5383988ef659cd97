"""Tests of the example gateway plugin, written the way a plugin author would: only the plugin itself, the
test kit (`halton_meter.testing`) and the types a plugin already uses.
"""

from __future__ import annotations

import json

import halton_meter_provider_example as example
from halton_meter.plugin import Check, Provider
from halton_meter.testing import (
    assert_any_split_gives_the_same_record,
    bodies,
    parse_call,
    parse_response,
    replay,
)

CHAT = "/v1/chat/completions"


def registered(hook, **kwargs) -> list:
    found: list = []
    hook(found.append, **kwargs)
    return found


def gateway() -> Provider:
    [provider] = registered(example.halton_register_providers, config=None)
    return provider


def test_the_plugin_registers_one_provider_for_the_gateway_host() -> None:
    provider = gateway()
    assert provider.name == "example-gateway"
    assert provider.hosts == (example.GATEWAY_HOST,)
    assert provider.route("POST", CHAT).kind == "chat.completions"


def test_a_whole_answer_gives_exact_tokens_and_names_no_price_list() -> None:
    record = parse_response(gateway(), bodies.openai_chat(model="gw-large", prompt_tokens=1200, cached_tokens=1000,
                                                          completion_tokens=80),
                            path=CHAT, request={"model": "gw-large", "messages": []})
    assert (record.provider, record.model, record.complete) == ("example-gateway", "gw-large", True)
    assert (record.input_tokens, record.cache_read_tokens, record.output_tokens) == (200, 1000, 80)
    assert record.price_provider_id is None  # a private gateway: the meter never guesses its prices


def test_a_stream_gets_usage_injected_and_the_client_never_sees_the_extra_chunk() -> None:
    events = bodies.openai_chat_stream_events(model="gw-large", prompt_tokens=30, completion_tokens=7,
                                              include_usage=True)
    without_usage = bodies.openai_chat_stream_events(model="gw-large", prompt_tokens=30, completion_tokens=7,
                                                     include_usage=False)
    call = parse_call(gateway(), events, path=CHAT, request={"model": "gw-large", "stream": True},
                      response_headers={"content-type": "text/event-stream"})
    assert json.loads(call.upstream_request)["stream_options"] == {"include_usage": True}
    assert (call.record.input_tokens, call.record.output_tokens, call.record.streamed) == (30, 7, True)
    assert call.record.extra.get("usage_injected") is True
    assert b"usage" not in b"".join(without_usage)  # what the client asked for: no usage chunk
    assert b'"usage":{' not in call.client_bytes


def test_a_cut_stream_is_billable_with_unknown_usage() -> None:
    events = bodies.openai_chat_stream_events(prompt_tokens=30, completion_tokens=7)
    record = replay(gateway(), b'{"model":"gw-large","stream":true}', events[:2], path=CHAT,
                    response_headers={"content-type": "text/event-stream"}, eof=False)
    assert (record.complete, record.billable, record.usage_reported) == (False, True, False)
    assert record.incomplete_reason == "upstream_truncated"


def test_any_split_of_the_stream_gives_the_same_record() -> None:
    events = bodies.openai_chat_stream_events(prompt_tokens=30, completion_tokens=7)
    assert_any_split_gives_the_same_record(gateway(), events, path=CHAT,
                                           request={"model": "gw-large", "stream": True},
                                           response_headers={"content-type": "text/event-stream"},
                                           max_examples=30)


def test_the_plugin_registers_its_check() -> None:
    [check] = registered(example.halton_register_checks)
    assert isinstance(check, Check) and check.id == "check.example-gateway"
