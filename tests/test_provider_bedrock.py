"""AWS Bedrock Runtime provider: hosts, routes, model ids, the four wire forms, damaged streams, the budget
refusal, and (with botocore installed) real AWS clients through a real meter.

Normative references: docs/providers/bedrock.md; the Bedrock Runtime API reference (TokenUsage: inputTokens
excludes cacheReadInputTokens and cacheWriteInputTokens; ConverseStream ends with a `metadata` event carrying
usage and metrics); the AWS event-stream framing (tests/test_eventstream.py). Wire bytes come from
tests/corpus/bedrock.py.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import pytest
from corpus.bedrock import (
    ARN,
    ARN_PATH,
    CONVERSE_REQUEST,
    EVENT_STREAM,
    GLOBAL_HAIKU,
    HOST,
    INVOKE_REQUEST,
    LLAMA,
    SONNET,
    SONNET_ID,
    US_SONNET,
    anthropic_stream,
    chunk,
    compact,
    converse_stream,
    event,
    frame,
    message,
    token_usage,
    usage,
)

from halton_meter.config import load_config
from halton_meter.core.routing import RoutingTable
from halton_meter.host import PluginHost
from halton_meter.paths import Paths
from halton_meter.pricing import Pricer
from halton_meter.testing.providers import parse_call
from halton_meter.types import CallRecord
from halton_meter_plugins.providers._common import USAGE_NOT_READ
from halton_meter_plugins.providers.bedrock import (
    CHAT,
    CONVERSE,
    COUNT_TOKENS,
    INVOKE,
    OTHER,
    BedrockProvider,
    converse_usage,
    error_type,
    parse_model_path,
    resolve_model_id,
    vendor_model,
)

B = BedrockProvider()


def call(path: str, response: bytes | list[bytes], *, content_type: str = "application/json", status: int = 200,
         request: Any = None, split: list[int] | None = None, eof: bool = True) -> CallRecord:
    return parse_call(B, response, path=path, request=request if request is not None else INVOKE_REQUEST,
                      host=HOST, status=status, response_headers={"content-type": content_type}, split=split,
                      eof=eof, pricer=Pricer()).record


# ---- hosts and routes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def routing(tmp_path_factory: pytest.TempPathFactory) -> RoutingTable:
    home = tmp_path_factory.mktemp("bedrock-config") / "home"
    host = PluginHost(load_config(Paths(home))).load(entry_points=False)
    return RoutingTable(host.registries.providers)


@pytest.mark.parametrize("host", [
    "bedrock-runtime.us-east-1.amazonaws.com",
    "bedrock-runtime.eu-central-1.amazonaws.com",
    "bedrock-runtime.us-gov-west-1.amazonaws.com",
    "bedrock-runtime-fips.us-east-1.amazonaws.com",
    "vpce-0a1b2c3d4e5f67890-abcdefgh.bedrock-runtime.us-east-1.vpce.amazonaws.com",
    "vpce-0a1b2c3d4e5f67890-abcdefgh-us-east-1a.bedrock-runtime.us-east-1.vpce.amazonaws.com",
])
def test_bedrock_runtime_hosts_are_claimed(routing: RoutingTable, host: str) -> None:
    provider = routing.lookup(host, 443)
    assert provider is not None and provider.id == "provider.bedrock" and provider.name == "bedrock"


@pytest.mark.parametrize("host", [
    "bedrock.us-east-1.amazonaws.com",  # the control plane
    "s3.us-east-1.amazonaws.com",
    "bedrock-runtime.us-east-1.vpce.amazonaws.com.evil.example",
    "bedrock-runtime.amazonaws.com",
    "x.bedrock-runtime.us-east-1.amazonaws.com",
])
def test_other_aws_hosts_stay_tunnelled(routing: RoutingTable, host: str) -> None:
    provider = routing.lookup(host, 443)
    assert provider is None or provider.id != "provider.bedrock"


@pytest.mark.parametrize(("method", "path", "endpoint"), [
    ("POST", f"/model/{SONNET_ID}/invoke", INVOKE),
    ("POST", f"/model/{SONNET_ID}/invoke-with-response-stream", INVOKE),
    ("POST", f"/model/{US_SONNET}/converse", CONVERSE),
    ("POST", f"/model/{US_SONNET}/converse-stream", CONVERSE),
    ("POST", ARN_PATH, CONVERSE),
    ("POST", f"/model/{SONNET_ID}/count-tokens", COUNT_TOKENS),
    ("POST", f"/model/{SONNET_ID}/invoke-with-bidirectional-stream", USAGE_NOT_READ),
    ("POST", "/async-invoke", USAGE_NOT_READ),
    ("POST", "/guardrail/gr-abc123/version/1/apply", USAGE_NOT_READ),
    ("POST", "/openai/v1/chat/completions", CHAT),
    ("GET", "/async-invoke", OTHER),
    ("GET", f"/model/{SONNET_ID}/invoke", OTHER),
    ("POST", f"/model/{SONNET_ID}/unknown-op", OTHER),
])
def test_routes(method: str, path: str, endpoint: Any) -> None:
    assert B.route(method, path) is endpoint


# ---- model ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "model", "operation"), [
    (f"/model/{SONNET_ID}/invoke", SONNET_ID, "invoke"),
    ("/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream", US_SONNET, "converse-stream"),
    (ARN_PATH, ARN, "converse"),
    # An ARN sent with its `/` unencoded still names the model.
    (f"/model/{ARN}/invoke", ARN, "invoke"),
])
def test_model_from_path(path: str, model: str, operation: str) -> None:
    assert parse_model_path(path) == (model, operation)


@pytest.mark.parametrize(("model", "resolved", "vendor"), [
    (SONNET_ID, SONNET_ID, "anthropic/claude-sonnet-4-5-20250929"),
    (US_SONNET, US_SONNET, "anthropic/claude-sonnet-4-5-20250929"),
    ("eu.anthropic.claude-3-7-sonnet-20250219-v1:0", None, "anthropic/claude-3-7-sonnet-20250219"),
    ("apac.anthropic.claude-sonnet-4-20250514-v1:0", None, "anthropic/claude-sonnet-4-20250514"),
    (GLOBAL_HAIKU, GLOBAL_HAIKU, "anthropic/claude-haiku-4-5-20251001"),
    ("us-gov.anthropic.claude-3-haiku-20240307-v1:0", None, "anthropic/claude-3-haiku-20240307"),
    ("global.anthropic.claude-opus-4-6-v1", None, "anthropic/claude-opus-4-6"),
    ("anthropic.claude-sonnet-4-6", None, "anthropic/claude-sonnet-4-6"),
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", None, "anthropic/claude-3-5-sonnet-20241022"),
    ("anthropic.claude-v2:1", None, "anthropic/claude-v2:1"),  # the version is the name
    ("anthropic.claude-instant-v1", None, "anthropic/claude-instant-v1"),
    (LLAMA, None, "meta/llama3-3-70b-instruct"),
    ("openai.gpt-oss-120b-1:0", None, "openai/gpt-oss-120b"),
    (ARN, GLOBAL_HAIKU, "anthropic/claude-haiku-4-5-20251001"),
    ("arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0",
     "anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic/claude-3-5-haiku-20241022"),
    ("arn:aws-us-gov:bedrock:us-gov-west-1:123456789012:inference-profile/us-gov.anthropic.claude-3-haiku-20240307-v1:0",
     "us-gov.anthropic.claude-3-haiku-20240307-v1:0", "anthropic/claude-3-haiku-20240307"),
    ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6", "", None),
    ("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123", "", None),
])
def test_model_id_normalisation(model: str, resolved: str | None, vendor: str | None) -> None:
    got = resolve_model_id(model)
    if resolved == "":
        assert got is None
    else:
        assert got == (resolved or model)
    assert vendor_model(got) == vendor


def test_request_facts() -> None:
    facts = B.inspect_request(INVOKE, f"/model/{US_SONNET.replace(':', '%3A')}/invoke-with-response-stream",
                              json.dumps(INVOKE_REQUEST).encode())
    assert (facts.model_requested, facts.stream_requested, facts.max_output_tokens) == (US_SONNET, True, 1024)
    facts = B.inspect_request(CONVERSE, ARN_PATH, json.dumps(CONVERSE_REQUEST).encode())
    assert (facts.model_requested, facts.stream_requested, facts.max_output_tokens) == (ARN, False, 512)
    facts = B.inspect_request(CONVERSE, f"/model/{US_SONNET}/converse-stream", b"not json")
    assert (facts.model_requested, facts.stream_requested, facts.max_output_tokens) == (US_SONNET, True, None)


# ---- parsing -----------------------------------------------------------------------------------------

STREAM = anthropic_stream(usage(inp=10, out=1, read=300, write=40), 57,
                          {"inputTokenCount": 10, "outputTokenCount": 57, "cacheReadInputTokenCount": 300,
                           "cacheWriteInputTokenCount": 40})
INVOKE_STREAM_PATH = f"/model/{US_SONNET}/invoke-with-response-stream"
CONVERSE_STREAM_PATH = f"/model/{US_SONNET}/converse-stream"


def summary(record: CallRecord) -> tuple[Any, ...]:
    return (record.complete, record.incomplete_reason, record.error_type, record.usage_reported,
            record.input_tokens, record.output_tokens, record.cache_read_tokens, record.cache_write_tokens,
            record.model, record.cost_nanos)


@pytest.mark.parametrize(("path", "pieces"), [
    (INVOKE_STREAM_PATH, STREAM),
    (CONVERSE_STREAM_PATH, converse_stream(token_usage(25, 48, read=2048))),
])
def test_one_byte_at_a_time_gives_the_same_record(path: str, pieces: list[bytes]) -> None:
    body = b"".join(pieces)
    whole = call(path, body, content_type=EVENT_STREAM)
    bytewise = call(path, body, content_type=EVENT_STREAM, split=list(range(1, len(body))))
    assert whole.complete and whole.usage_reported
    assert summary(bytewise) == summary(whole)


@pytest.mark.parametrize("path", [INVOKE_STREAM_PATH, CONVERSE_STREAM_PATH])
def test_corrupt_crc_ends_incomplete(path: str) -> None:
    pieces = STREAM if "invoke" in path else converse_stream(token_usage(25, 48))
    damaged = bytearray(pieces[-1])
    damaged[-6] ^= 0x20  # inside the last message's payload: its CRC no longer matches
    record = call(path, [*pieces[:-1], bytes(damaged)], content_type=EVENT_STREAM)
    assert not record.complete
    assert record.incomplete_reason == "parse_error"
    assert record.extra["event_stream_error"] == "message_crc"


def test_damaged_prelude_ends_incomplete_even_after_usage() -> None:
    damaged = bytearray(STREAM[1])
    damaged[2] ^= 0x01
    record = call(INVOKE_STREAM_PATH, [STREAM[0], bytes(damaged), *STREAM[2:]], content_type=EVENT_STREAM)
    assert (record.complete, record.incomplete_reason, record.usage_reported) == (False, "parse_error", True)
    assert record.extra["event_stream_error"] == "prelude_crc"
    assert record.input_tokens == 10  # what message_start said is kept


def test_oversized_frame_is_unparsed_oversize() -> None:
    import struct
    import zlib

    head = struct.pack(">II", 64 * 1024 * 1024, 0)
    record = call(CONVERSE_STREAM_PATH, [head + struct.pack(">I", zlib.crc32(head)), b"x" * 100],
                  content_type=EVENT_STREAM, eof=False)
    assert (record.complete, record.incomplete_reason) == (False, "unparsed_oversize")


def test_stream_complete_only_after_the_usage_event() -> None:
    no_metadata = call(CONVERSE_STREAM_PATH, converse_stream(None), content_type=EVENT_STREAM)
    assert (no_metadata.complete, no_metadata.incomplete_reason) == (False, "upstream_truncated")
    no_stop = call(INVOKE_STREAM_PATH, STREAM[:-1], content_type=EVENT_STREAM)
    assert (no_stop.complete, no_stop.incomplete_reason, no_stop.output_tokens) == (False, "upstream_truncated", 57)


def test_unknown_events_and_odd_payloads_never_crash() -> None:
    pieces = [
        event("chunk", {"bytes": "!!!not base64!!!"}),
        event("chunk", {"bytes": 42}),
        event("chunk", {"p": "x"}),
        frame({":event-type": "chunk", ":message-type": "event"}, b"\xff\xfe not json"),
        frame({":message-type": "event"}, b"{}"),
        event("somethingNew", {"x": 1}),
        *STREAM,
    ]
    record = call(INVOKE_STREAM_PATH, pieces, content_type=EVENT_STREAM)
    assert record.complete and record.output_tokens == 57


def test_invocation_metrics_alone_meter_other_families_and_fill_gaps() -> None:
    only_metrics = [chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": 7, "outputTokenCount": 3}})]
    record = call(INVOKE_STREAM_PATH, only_metrics, content_type=EVENT_STREAM)
    assert (record.usage_reported, record.input_tokens, record.output_tokens) == (True, 7, 3)


def test_application_inference_profile_takes_the_response_model() -> None:
    profile = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
    path = "/model/" + profile.replace(":", "%3A").replace("/", "%2F") + "/invoke"
    record = call(path, message(inp=100, out=20))
    assert (record.model, record.model_requested) == (SONNET, profile)
    assert record.extra["price_as"] == "anthropic/claude-sonnet-4-5-20250929"
    assert record.priced


def test_other_families_json_is_billable_with_usage_not_read() -> None:
    body = compact({"generation": "Hi", "prompt_token_count": 12, "generation_token_count": 2, "stop_reason": "stop"})
    record = call(f"/model/{LLAMA}/invoke", body, request={"prompt": "Hi"})
    assert (record.billable, record.usage_reported, record.complete, record.priced) == (True, False, True, False)
    assert record.extra["usage_not_parsed"] is True


def test_openai_compatible_chat_path() -> None:
    body = compact({"id": "chatcmpl-1", "object": "chat.completion", "model": "openai.gpt-oss-120b-1:0",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}})
    record = call("/openai/v1/chat/completions", body,
                  request={"model": "openai.gpt-oss-120b-1:0", "messages": [{"role": "user", "content": "Hi"}]})
    assert (record.endpoint_kind, record.model, record.input_tokens, record.output_tokens, record.complete) == (
        "chat.completions", "openai.gpt-oss-120b-1:0", 20, 5, True)
    assert record.priced  # the AWS list prices gpt-oss by its Bedrock id


def test_converse_usage_semantics() -> None:
    documented, inclusive = converse_usage(token_usage(4, 240, read=1500, write=800))
    assert (documented.input_tokens, documented.cache_read_tokens, documented.cache_write_tokens) == (4, 1500, 800)
    assert not inclusive
    # A totalTokens that only adds up with the cache inside inputTokens: taken out, and flagged.
    odd, inclusive = converse_usage({"inputTokens": 2304, "outputTokens": 240, "totalTokens": 2544,
                                     "cacheReadInputTokens": 1500, "cacheWriteInputTokens": 800})
    assert (odd.input_tokens, odd.cache_read_tokens, odd.cache_write_tokens, inclusive) == (4, 1500, 800, True)
    bad, _ = converse_usage({"inputTokens": "many", "outputTokens": -3, "cacheDetails": [{"ttl": "1h"}, 7]})
    assert (bad.input_tokens, bad.output_tokens, bad.cache_write_1h_tokens) == (0, 0, 0)


def test_error_bodies() -> None:
    assert error_type({"__type": "com.amazon.coral.validate#ValidationException:http://x"}) == "ValidationException"
    assert error_type({"message": "Too many requests"}) is None
    assert error_type(["x"]) is None
    record = call(f"/model/{US_SONNET}/converse", b'{"message":"Too many tokens"}', status=429,
                  request=CONVERSE_REQUEST)
    assert (record.error_type, record.billable, record.cost_nanos) == ("http_429", False, 0)


def test_refusal_is_a_bedrock_throttling_exception() -> None:
    status, headers, body = B.refusal("Budget 'team' exhausted", 30)
    assert status == 429
    assert headers["x-amzn-errortype"].split(":", 1)[0] == "ThrottlingException"
    assert json.loads(body) == {"message": "Budget 'team' exhausted"}
    parsers = pytest.importorskip("botocore.parsers")
    from botocore.loaders import Loader
    from botocore.model import ServiceModel

    model = ServiceModel(Loader().load_service_model("bedrock-runtime", "service-2"))
    parsed = parsers.create_parser("rest-json").parse(
        {"status_code": status, "headers": headers, "body": body}, model.operation_model("Converse").output_shape)
    assert parsed["Error"] == {"Code": "ThrottlingException", "Message": "Budget 'team' exhausted"}


# ---- real AWS clients through a real meter -----------------------------------------------------------


def _rows_since(meter: Any, before: int, count: int) -> list[dict[str, Any]]:
    return meter.wait_for_calls(before + count)[before:]


@pytest.mark.e2e
def test_boto3_through_the_meter(meter: Any, fake_provider: Any) -> None:
    pytest.importorskip("botocore")
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    from halton_meter.testing.fake_provider import Reply

    fake_provider.clear()
    converse_path = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    fake_provider.add("POST", converse_path, Reply(body=compact({
        "metrics": {"latencyMs": 100}, "output": {"message": {"content": [{"text": "Hi"}], "role": "assistant"}},
        "stopReason": "end_turn", "usage": token_usage(11, 7, read=64)})))
    fake_provider.add("POST", converse_path + "-stream", Reply(
        pieces=converse_stream(token_usage(25, 48)), headers={"content-type": EVENT_STREAM}))
    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", verify=str(meter.client_bundle),
        config=Config(proxies={"https": meter.proxy_url}, retries={"max_attempts": 1}))
    before = len(meter.rows())
    answer = client.converse(modelId=US_SONNET, messages=CONVERSE_REQUEST["messages"])
    assert answer["usage"]["inputTokens"] == 11
    streamed = client.converse_stream(modelId=US_SONNET, messages=CONVERSE_REQUEST["messages"])
    events = list(streamed["stream"])
    assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e) == "Hello ✓"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 48
    whole, stream = _rows_since(meter, before, 2)
    assert (whole["provider"], whole["model"], whole["input_tokens"], whole["cache_read_tokens"]) == (
        "bedrock", US_SONNET, 11, 64)
    assert (stream["complete"], stream["streamed"], stream["output_tokens"]) == (1, 1, 48)
    # SigV4 signs every request anew; the key fingerprint follows the access key id, not the signature.
    assert whole["key_fingerprint"] and whole["key_fingerprint"] == stream["key_fingerprint"]
    assert "AKIAIOSFODNN7EXAMPLE" not in json.dumps([whole, stream])


@pytest.mark.e2e
def test_anthropic_bedrock_sdk_through_the_meter(meter: Any, fake_provider: Any) -> None:
    pytest.importorskip("botocore")
    anthropic = pytest.importorskip("anthropic")
    import sys

    import httpx

    http = sys.modules.get("httpx2", httpx)  # recent SDKs are built on the httpx2 fork and insist on its Client
    from halton_meter.testing.fake_provider import Reply

    fake_provider.clear()
    fake_provider.add("POST", f"/model/{US_SONNET}/invoke", Reply(body=message(inp=1200, out=340, read=5000)))
    fake_provider.add("POST", f"/model/{US_SONNET}/invoke-with-response-stream", Reply(
        pieces=STREAM, headers={"content-type": EVENT_STREAM}))
    ctx = ssl.create_default_context(cafile=str(meter.client_bundle))
    client = anthropic.AnthropicBedrock(
        aws_access_key="AKIAIOSFODNN7EXAMPLE", aws_secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        aws_region="us-east-1", max_retries=0,
        http_client=http.Client(proxy=meter.proxy_url, verify=ctx, trust_env=False))
    before = len(meter.rows())
    reply = client.messages.create(model=US_SONNET, max_tokens=1024, messages=[{"role": "user", "content": "Hi"}])
    assert reply.usage.input_tokens == 1200
    with client.messages.stream(model=US_SONNET, max_tokens=1024,
                                messages=[{"role": "user", "content": "Hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello ✓" and final.usage.output_tokens == 57
    whole, streamed = _rows_since(meter, before, 2)
    assert (whole["model"], whole["input_tokens"], whole["cache_read_tokens"], whole["complete"]) == (
        US_SONNET, 1200, 5000, 1)
    assert (streamed["complete"], streamed["output_tokens"], streamed["cache_write_tokens"]) == (1, 57, 40)
    assert whole["key_fingerprint"] and whole["key_fingerprint"] == streamed["key_fingerprint"]
