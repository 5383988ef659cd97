"""Google Vertex AI: routing of paths and hosts, Claude model ids and the regional premium, the request facts,
the error shapes, the refusal, and the official Anthropic client (`AnthropicVertex`) through a real meter.

Normative references: docs/providers/vertex.md, docs/providers/anthropic.md, docs/providers/gemini.md. Whole wire
cases (JSON, SSE, the JSON-array stream, errors, truncation) are in tests/corpus/vertex.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from corpus.vertex import FLASH_STREAM, array_stream, claude_message, claude_stream, claude_usage, rpc_error
from hypothesis import given, settings
from hypothesis import strategies as st

from halton_meter.core.routing import RoutingTable
from halton_meter.testing.fake_provider import FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess
from halton_meter.testing.providers import parse_call
from halton_meter_plugins.providers.vertex import (
    REGIONAL_PREMIUM_PCT,
    VertexProvider,
    claude_version,
    normalize_claude_model,
    parse_vertex_path,
    regional_premium_pct,
)

V = VertexProvider()
P = "/v1/projects/acme/locations"
SONNET_ID, SONNET = "claude-sonnet-4-5@20250929", "claude-sonnet-4-5-20250929"

# --------------------------------------------------------------------------------------------------
# hosts and paths
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "claimed"), [
    ("us-east5-aiplatform.googleapis.com", True),
    ("europe-west1-aiplatform.googleapis.com", True),
    ("aiplatform.googleapis.com", True),
    ("aiplatform.us.rep.googleapis.com", True),  # multi-region (AnthropicVertex region="us")
    ("aiplatform.eu.rep.googleapis.com", True),
    ("storage.googleapis.com", False),
    ("us-east5-aiplatform.googleapis.com.evil.example", False),
    ("x.us-east5-aiplatform.googleapis.com", False),
    ("generativelanguage.googleapis.com", False),
])
def test_hosts(host: str, claimed: bool) -> None:
    assert (RoutingTable([V]).lookup(host, 443) is V) is claimed


@pytest.mark.parametrize(("method", "path", "kind", "billable"), [
    ("POST", f"{P}/us-east5/publishers/anthropic/models/{SONNET_ID}:rawPredict", "messages", True),
    ("POST", f"{P}/us-east5/publishers/anthropic/models/{SONNET_ID}:streamRawPredict", "messages", True),
    ("POST", f"{P}/us-east5/publishers/anthropic/models/claude-sonnet-4-5%4020250929:rawPredict", "messages", True),
    ("POST", "/v1beta1/projects/a/locations/global/publishers/anthropic/models/claude-opus-4-6:rawPredict",
     "messages", True),
    ("POST", f"{P}/global/publishers/anthropic/models/count-tokens:rawPredict", "count_tokens", False),
    ("POST", f"{P}/global/publishers/anthropic/models/{SONNET_ID}:predict", "other", False),
    ("POST", f"{P}/europe-west1/publishers/google/models/gemini-2.5-flash:generateContent", "generate_content", True),
    ("POST", f"{P}/global/publishers/google/models/gemini-2.5-pro:streamGenerateContent", "generate_content", True),
    ("POST", "/v1/publishers/google/models/gemini-2.5-flash:generateContent", "generate_content", True),  # express
    ("POST", f"{P}/global/publishers/google/models/gemini-2.5-flash:countTokens", "count_tokens", False),
    ("POST", f"{P}/global/publishers/google/models/gemini-2.5-flash:computeTokens", "count_tokens", False),
    ("POST", f"{P}/us-central1/publishers/google/models/gemini-embedding-001:embedContent", "embeddings", True),
    ("POST", f"{P}/us-central1/publishers/google/models/text-embedding-005:predict", "usage_not_read", True),
    ("POST", f"{P}/us-central1/publishers/meta/models/llama-4:rawPredict", "usage_not_read", True),
    ("POST", f"{P}/us-central1/endpoints/openapi/chat/completions", "chat.completions", True),
    ("POST", f"{P}/us-central1/endpoints/1234567890:generateContent", "generate_content", True),
    ("POST", f"{P}/us-central1/endpoints/1234567890:predict", "other", False),  # billed per node-hour
    ("GET", f"{P}/us-central1/publishers/google/models/gemini-2.5-flash", "other", False),
    ("POST", f"{P}/us-central1/datasets", "other", False),
    ("POST", "/v1/projects/acme/locations/us-central1/tuningJobs", "other", False),
])
def test_routes(method: str, path: str, kind: str, billable: bool) -> None:
    endpoint = V.route(method, path)
    assert endpoint is not None and (endpoint.kind, endpoint.billable) == (kind, billable)


def test_parse_vertex_path() -> None:
    call = parse_vertex_path(f"{P}/us-east5/publishers/Anthropic/models/claude-sonnet-4-5%4020250929:rawPredict/")
    assert call is not None
    assert (call.publisher, call.model, call.method, call.location) == ("anthropic", SONNET_ID, "rawPredict",
                                                                        "us-east5")
    express = parse_vertex_path("/v1/publishers/google/models/gemini-2.5-flash:generateContent")
    assert express is not None and express.location == "global"
    assert parse_vertex_path("/v1/models/gemini-2.5-flash:generateContent") is None


# --------------------------------------------------------------------------------------------------
# model ids and the regional premium
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("vertex_id", "normalized", "version"), [
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5-20250929", (4, 5)),
    ("claude-haiku-4-5@20251001", "claude-haiku-4-5-20251001", (4, 5)),
    ("claude-opus-4-1@20250805", "claude-opus-4-1-20250805", (4, 1)),
    ("claude-sonnet-4@20250514", "claude-sonnet-4-20250514", (4, 0)),
    ("claude-3-7-sonnet@20250219", "claude-3-7-sonnet-20250219", (3, 7)),
    ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet-v2-20241022", (3, 5)),
    ("claude-opus-4-6", "claude-opus-4-6", (4, 6)),  # newer ids have no @ suffix
    ("claude-opus-4-5@latest", "claude-opus-4-5", (4, 5)),
    ("claude-3-haiku@20240307", "claude-3-haiku-20240307", None),
    ("gemini-2.5-flash", "gemini-2.5-flash", None),
])
def test_claude_model_ids(vertex_id: str, normalized: str, version: tuple[int, int] | None) -> None:
    assert normalize_claude_model(vertex_id) == normalized
    assert claude_version(vertex_id) == version


@pytest.mark.parametrize(("model", "location", "premium"), [
    ("claude-sonnet-4-5@20250929", "us-east5", 10),
    ("claude-sonnet-4-5@20250929", "us", 10),  # multi-region endpoints carry it too
    ("claude-sonnet-4-5@20250929", "global", 0),
    ("claude-haiku-4-5@20251001", "europe-west1", 10),
    ("claude-opus-4-6", "us-east5", 10),
    ("claude-opus-4-1@20250805", "us-east5", 0),  # older models keep their price
    ("claude-sonnet-4@20250514", "us-east5", 0),
    ("claude-3-5-haiku@20241022", "us-east5", 0),
])
def test_regional_premium(model: str, location: str, premium: int) -> None:
    assert regional_premium_pct(model, location) == premium
    assert REGIONAL_PREMIUM_PCT == 10


def test_claude_request_facts() -> None:
    path = f"{P}/us-east5/publishers/anthropic/models/{SONNET_ID}:streamRawPredict"
    body = json.dumps({"anthropic_version": "vertex-2023-10-16", "max_tokens": 512, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    facts = V.inspect_request(V.route("POST", path), path, body)
    assert facts.model_requested == SONNET_ID and facts.stream_requested and facts.max_output_tokens == 512
    assert facts.extra["price_as"] == f"anthropic/{SONNET}" and facts.extra["regional_premium_pct"] == 10
    global_path = path.replace("us-east5", "global")
    facts = V.inspect_request(V.route("POST", global_path), global_path, body)
    assert "regional_premium_pct" not in facts.extra


def test_gemini_and_count_tokens_request_facts() -> None:
    path = f"{P}/global/publishers/google/models/gemini-2.5-pro:streamGenerateContent"
    facts = V.inspect_request(V.route("POST", path), path, b"{}")
    assert (facts.model_requested, facts.stream_requested) == ("gemini-2.5-pro", True)
    count = f"{P}/global/publishers/anthropic/models/count-tokens:rawPredict"
    facts = V.inspect_request(V.route("POST", count), count, json.dumps({"model": SONNET_ID}).encode())
    assert facts.model_requested == SONNET_ID


# --------------------------------------------------------------------------------------------------
# parsing details the corpus does not isolate
# --------------------------------------------------------------------------------------------------

CLAUDE_PATH = f"{P}/us-east5/publishers/anthropic/models/{SONNET_ID}:rawPredict"


@pytest.mark.parametrize(("status", "body", "expected"), [
    (429, rpc_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded."), "RESOURCE_EXHAUSTED"),
    (404, b'[{"error": {"code": 404, "message": "Publisher model not found.", "status": "NOT_FOUND"}}]',
     "NOT_FOUND"),
    (529, b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', "overloaded_error"),
    (503, b'{"error": {"code": 503, "message": "The service is unavailable."}}', "503"),
    (500, b"<html>Internal</html>", "http_500"),
])
def test_claude_error_shapes(status: int, body: bytes, expected: str) -> None:
    record = parse_call(V, body, path=CLAUDE_PATH, request={"max_tokens": 5}, status=status).record
    assert (record.error_type, record.billable, record.usage_reported) == (expected, False, False)


def test_price_hints_only_with_usage() -> None:
    ok = parse_call(V, claude_message(SONNET, claude_usage(10, 5)), path=CLAUDE_PATH, request={}).record
    assert ok.extra == {"price_as": f"anthropic/{SONNET}", "regional_premium_pct": 10}
    failed = parse_call(V, rpc_error(429, "RESOURCE_EXHAUSTED", "x"), path=CLAUDE_PATH, request={}, status=429)
    assert failed.record.extra == {}


def test_provisioned_throughput_is_kept_in_extra() -> None:
    chunk = {**FLASH_STREAM[-1]}
    chunk["usageMetadata"] = {**chunk["usageMetadata"], "trafficType": "PROVISIONED_THROUGHPUT"}
    path = f"{P}/global/publishers/google/models/gemini-2.5-flash:generateContent"
    record = parse_call(V, json.dumps(chunk).encode(), path=path, request={}).record
    assert record.extra == {"traffic_type": "PROVISIONED_THROUGHPUT"} and record.output_tokens == 77


def test_refusal_reads_as_both_clients_rate_limit_error() -> None:
    status, headers, body = V.refusal("Budget 'team' reached", 30)
    data = json.loads(body)
    assert status == 429 and headers["content-type"] == "application/json"
    # Google clients read error.code / error.status / error.message; Anthropic's read type and error.type.
    assert (data["error"]["code"], data["error"]["status"], data["error"]["message"]) == (
        429, "RESOURCE_EXHAUSTED", "Budget 'team' reached")
    assert (data["type"], data["error"]["type"]) == ("error", "rate_limit_error")


PARSER_PATHS = [CLAUDE_PATH, CLAUDE_PATH.replace("rawPredict", "streamRawPredict"),
                f"{P}/global/publishers/anthropic/models/count-tokens:rawPredict",
                f"{P}/global/publishers/google/models/gemini-2.5-flash:streamGenerateContent",
                f"{P}/global/publishers/google/models/gemini-2.5-flash:countTokens",
                f"{P}/us-central1/endpoints/openapi/chat/completions",
                f"{P}/us-central1/publishers/meta/models/llama-4:rawPredict"]


@settings(max_examples=60, deadline=None)
@given(path=st.sampled_from(PARSER_PATHS), body=st.binary(max_size=300), status=st.sampled_from([200, 400, 429]),
       sse=st.booleans(), eof=st.booleans())
def test_parsers_never_raise_on_garbage(path: str, body: bytes, status: int, sse: bool, eof: bool) -> None:
    content_type = "text/event-stream" if sse else "application/json"
    parse_call(V, body, path=path, request=body, status=status, response_headers={"content-type": content_type},
               eof=eof)


def test_registered_as_a_builtin() -> None:
    from halton_meter.host import PluginHost

    host = PluginHost().load(entry_points=False)
    assert host.plugins["vertex"].status == "ok"
    provider = host.registries.providers.get("provider.vertex")
    assert provider.name == "vertex" and provider.price_provider_id == "google"


# --------------------------------------------------------------------------------------------------
# the official client through a real meter
# --------------------------------------------------------------------------------------------------

ACCESS_TOKEN = "ya29.CANARY-vertex-sdk-token-000000000000"
PROJECT = "acme-prod"


@pytest.fixture
def sdk_http(meter: MeterProcess, fake_provider: FakeProvider) -> Iterator[Any]:
    httpx2 = pytest.importorskip("httpx2")  # the SDK's own httpx fork: it insists on its Client class
    fake_provider.clear()
    with httpx2.Client(proxy=meter.proxy_url, verify=meter.ssl_context(fake_provider.ca_pem), trust_env=False,
                       timeout=30) as client:
        yield client


def vertex_client(region: str, http: Any) -> Any:
    anthropic = pytest.importorskip("anthropic")
    return anthropic.AnthropicVertex(region=region, project_id=PROJECT, access_token=ACCESS_TOKEN, http_client=http,
                                     max_retries=0)


def check_no_credential(row: dict[str, Any]) -> None:
    assert row["key_fingerprint"], "the bearer token is fingerprinted"
    text = json.dumps(row)
    assert ACCESS_TOKEN not in text and "CANARY" not in text


@pytest.mark.e2e
def test_anthropic_vertex_sdk_regional_call(meter: MeterProcess, fake_provider: FakeProvider, sdk_http: Any) -> None:
    path = f"/v1/projects/{PROJECT}/locations/us-east5/publishers/anthropic/models/{SONNET_ID}:rawPredict"
    fake_provider.add("POST", path, Reply(body=claude_message(SONNET, claude_usage(1200, 340, read=5000))))
    before = len(meter.rows())
    message = vertex_client("us-east5", sdk_http).messages.create(
        model=SONNET_ID, max_tokens=64, messages=[{"role": "user", "content": "PROMPT-CANARY vertex"}])
    assert (message.usage.input_tokens, message.usage.output_tokens) == (1200, 340)
    [received] = fake_provider.requests
    assert received.header("authorization") == f"Bearer {ACCESS_TOKEN}"  # forwarded untouched
    assert received.json()["anthropic_version"] and "model" not in received.json()  # the model is in the URL
    [row] = meter.wait_for_calls(before + 1)[before:]
    assert (row["provider"], row["endpoint_kind"], row["host"]) == ("vertex", "messages",
                                                                    "us-east5-aiplatform.googleapis.com")
    assert (row["model"], row["model_requested"]) == (SONNET, SONNET_ID)
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (1200, 340, 5000)
    assert row["complete"] and row["billable"] and not row["streamed"]
    assert row["extra"] == {"price_as": f"anthropic/{SONNET}", "regional_premium_pct": 10}
    assert row["priced"] and row["cost_nanos"] > 0  # the exact price (with the premium) is the corpus's job
    check_no_credential(row)


@pytest.mark.e2e
def test_anthropic_vertex_sdk_global_stream(meter: MeterProcess, fake_provider: FakeProvider, sdk_http: Any) -> None:
    path = f"/v1/projects/{PROJECT}/locations/global/publishers/anthropic/models/{SONNET_ID}:streamRawPredict"
    fake_provider.add("POST", path, Reply(pieces=claude_stream(SONNET, claude_usage(30, 1), {"output_tokens": 45}),
                                          sse=True))
    before = len(meter.rows())
    with vertex_client("global", sdk_http).messages.stream(
            model=SONNET_ID, max_tokens=64, messages=[{"role": "user", "content": "PROMPT-CANARY stream"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello ✓" and final.usage.output_tokens == 45
    [row] = meter.wait_for_calls(before + 1)[before:]
    assert (row["host"], row["model_requested"], row["streamed"], row["complete"]) == (
        "aiplatform.googleapis.com", SONNET_ID, 1, 1)
    assert (row["input_tokens"], row["output_tokens"]) == (30, 45)
    # Global endpoint, Anthropic's list price: $3 in, $15 out per MTok.
    assert row["cost_nanos"] == 30 * 3_000 + 45 * 15_000
    assert "regional_premium_pct" not in row["extra"]
    check_no_credential(row)


@pytest.mark.e2e
def test_anthropic_vertex_sdk_count_tokens_is_free(meter: MeterProcess, fake_provider: FakeProvider,
                                                   sdk_http: Any) -> None:
    path = f"/v1/projects/{PROJECT}/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"
    fake_provider.add("POST", path, Reply(body=b'{"input_tokens": 17}'))
    before = len(meter.rows())
    counted = vertex_client("us-east5", sdk_http).messages.count_tokens(
        model=SONNET_ID, messages=[{"role": "user", "content": "PROMPT-CANARY count"}])
    assert counted.input_tokens == 17
    [row] = meter.wait_for_calls(before + 1)[before:]
    assert (row["endpoint_kind"], row["billable"], row["cost_nanos"]) == ("count_tokens", 0, 0)
    assert row["model_requested"] == SONNET_ID and row["extra"] == {"counted_input_tokens": 17}


@pytest.mark.e2e
def test_gemini_on_vertex_array_stream_through_the_meter(meter: MeterProcess, fake_provider: FakeProvider) -> None:
    """No Google client is installed: httpx speaks the documented REST call (JSON-array stream, no `alt`)."""
    path = f"/v1/projects/{PROJECT}/locations/europe-west1/publishers/google/models/gemini-2.5-flash:" \
           "streamGenerateContent"
    fake_provider.clear()
    fake_provider.add("POST", path, Reply(pieces=array_stream(FLASH_STREAM),
                                          headers={"content-type": "application/json; charset=UTF-8"}))
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem, timeout=30) as client:
        response = client.post(f"https://europe-west1-aiplatform.googleapis.com{path}",
                               headers={"authorization": f"Bearer {ACCESS_TOKEN}"},
                               json={"contents": [{"role": "user", "parts": [{"text": "PROMPT-CANARY"}]}]})
    assert response.status_code == 200 and len(response.json()) == 3
    [row] = meter.wait_for_calls(before + 1)[before:]
    assert (row["provider"], row["endpoint_kind"], row["model"], row["streamed"]) == (
        "vertex", "generate_content", "gemini-2.5-flash", 1)
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (2048, 2048, 77)
    # Gemini 2.5 Flash: $0.30 in, $0.03 cached, $2.50 out per MTok.
    assert row["cost_nanos"] == 2048 * 300 + 2048 * 30 + 77 * 2_500
    check_no_credential(row)
