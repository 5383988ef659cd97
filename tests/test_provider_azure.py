"""Azure OpenAI: hosts and paths, the deployment name as the requested model, the `[plugins.azure-openai]`
deployments mapping, when usage is asked for on the client's behalf, Azure's stream quirks, and the official
`openai.AzureOpenAI` client through a real meter.

Normative references: docs/providers/azure-openai.md and docs/providers/openai.md. Whole wire cases are in
tests/corpus/azure_openai.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from corpus.azure_openai import GPT4O, SAFE, chat_completion, chat_stream, chat_usage, dumps, opening_chunk
from hypothesis import given, settings
from hypothesis import strategies as st

from halton_meter.core.routing import RoutingTable
from halton_meter.errors import ConfigError
from halton_meter.testing.fake_provider import FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess
from halton_meter.testing.providers import parse_call
from halton_meter_plugins.providers.azure_openai import (
    AzureOpenAIProvider,
    deployments_mapping,
    halton_configure,
)

A = AzureOpenAIProvider(deployments={"my-gpt": "gpt-4o", "llama": "meta/llama-3.3-70b"})
DEPLOYMENT_CHAT = "/openai/deployments/gpt4o-prod/chat/completions"
V1_CHAT = "/openai/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]

# --------------------------------------------------------------------------------------------------
# hosts and paths
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "claimed"), [
    ("contoso.openai.azure.com", True),
    ("contoso-ai.cognitiveservices.azure.com", True),
    ("contoso-foundry.services.ai.azure.com", True),
    ("openai.azure.com", False),
    ("management.azure.com", False),
    ("contoso.blob.core.windows.net", False),
])
def test_hosts(host: str, claimed: bool) -> None:
    assert (RoutingTable([A]).lookup(host, 443) is A) is claimed


@pytest.mark.parametrize(("method", "path", "kind", "billable"), [
    ("POST", DEPLOYMENT_CHAT, "chat.completions", True),
    ("POST", DEPLOYMENT_CHAT + "/", "chat.completions", True),
    ("POST", "/openai/deployments/gpt4o-prod/extensions/chat/completions", "chat.completions", True),
    ("POST", "/openai/deployments/davinci/completions", "completions", True),
    ("POST", "/openai/deployments/embed-small/embeddings", "embeddings", True),
    ("POST", "/openai/deployments/gpt4o-prod/responses", "responses", True),
    ("POST", "/openai/deployments/whisper/audio/transcriptions", "usage_not_read", True),
    ("POST", "/openai/deployments/dalle3/images/generations", "usage_not_read", True),
    ("POST", V1_CHAT, "chat.completions", True),
    ("POST", "/openai/v1/responses", "responses", True),
    ("POST", "/openai/v1/responses/input_tokens", "count_tokens", False),
    ("POST", "/openai/v1/embeddings", "embeddings", True),
    ("POST", "/openai/responses", "responses", True),
    ("POST", "/models/chat/completions", "chat.completions", True),
    ("POST", "/anthropic/v1/messages", "messages", True),
    ("POST", "/anthropic/v1/messages/count_tokens", "count_tokens", False),
    ("GET", "/openai/v1/responses/resp_123", "other", False),
    ("GET", "/openai/deployments", "other", False),
    ("POST", "/openai/v1/files", "other", False),
    ("POST", "/openai/deployments/x/unknown", "other", False),
])
def test_routes(method: str, path: str, kind: str, billable: bool) -> None:
    endpoint = A.route(method, path)
    assert endpoint is not None and (endpoint.kind, endpoint.billable) == (kind, billable)


def test_identity() -> None:
    assert (A.id, A.name, A.price_provider_id) == ("provider.azure-openai", "azure-openai", "azure")


# --------------------------------------------------------------------------------------------------
# request facts and the usage request
# --------------------------------------------------------------------------------------------------


def facts_for(path: str, body: dict[str, Any], provider: AzureOpenAIProvider = A) -> Any:
    endpoint = provider.route("POST", path)
    assert endpoint is not None
    raw = json.dumps(body).encode()
    facts = provider.inspect_request(endpoint, path, raw)
    return facts, provider.rewrite_request(endpoint, facts, raw)


def test_deployment_is_the_requested_model_when_the_body_names_none() -> None:
    facts, _ = facts_for(DEPLOYMENT_CHAT, {"messages": MESSAGES})
    assert facts.model_requested == "gpt4o-prod"
    facts, _ = facts_for(DEPLOYMENT_CHAT, {"model": "gpt-4o", "messages": MESSAGES})
    assert facts.model_requested == "gpt-4o"
    facts, _ = facts_for("/openai/deployments/gpt%2D4o%20eu/chat/completions", {"messages": MESSAGES})
    assert facts.model_requested == "gpt-4o eu"


def test_v1_stream_is_injected_deployment_stream_is_estimated() -> None:
    stream = {"model": "my-gpt", "messages": MESSAGES, "stream": True}
    facts, rewritten = facts_for(V1_CHAT, stream)
    assert rewritten is not None and json.loads(rewritten)["stream_options"] == {"include_usage": True}
    assert facts.usage_injected and "prompt_text_bytes" not in facts.extra
    facts, rewritten = facts_for(DEPLOYMENT_CHAT, stream)
    assert rewritten is None and not facts.usage_injected and facts.extra["prompt_text_bytes"] == 2
    # A client that asks itself is left alone on either form, and nothing is estimated.
    asked = {**stream, "stream_options": {"include_usage": True}}
    for path in (V1_CHAT, DEPLOYMENT_CHAT):
        facts, rewritten = facts_for(path, asked)
        assert rewritten is None and "prompt_text_bytes" not in facts.extra


def test_include_usage_off_applies_to_azure_too() -> None:
    off = AzureOpenAIProvider(include_usage="off")
    facts, rewritten = facts_for(V1_CHAT, {"model": "my-gpt", "messages": MESSAGES, "stream": True}, off)
    assert rewritten is None and facts.extra["prompt_text_bytes"] == 2


def test_mapping_is_found_by_deployment_or_v1_model() -> None:
    facts, _ = facts_for("/openai/deployments/my-gpt/chat/completions", {"messages": MESSAGES})
    assert facts.extra["deployment_model"] == "gpt-4o"
    facts, _ = facts_for(V1_CHAT, {"model": "my-gpt", "messages": MESSAGES})
    assert facts.extra["deployment_model"] == "gpt-4o"
    facts, _ = facts_for(V1_CHAT, {"model": "other", "messages": MESSAGES})
    assert "deployment_model" not in facts.extra


# --------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------


def test_opening_chunk_empty_model_and_id_are_not_values() -> None:
    upstream, _ = chat_stream(GPT4O, ("Hi",), chat_usage(10, 2), usage_null=True)
    record = parse_call(A, upstream, path=DEPLOYMENT_CHAT, request={"messages": MESSAGES, "stream": True,
                                                                    "stream_options": {"include_usage": True}},
                        response_headers={"content-type": "text/event-stream"}).record
    assert record.model == GPT4O and record.provider_request_id and record.provider_request_id.startswith("chatcmpl")
    # Only the opening chunk: nothing names the model, so it stays the deployment (never "").
    only = parse_call(A, [opening_chunk()], path=DEPLOYMENT_CHAT, request={"messages": MESSAGES, "stream": True},
                      response_headers={"content-type": "text/event-stream"}, eof=False).record
    assert only.model == "gpt4o-prod" and only.provider_request_id is None


def test_content_filter_flag() -> None:
    clean = parse_call(A, chat_completion(GPT4O, chat_usage(5, 1)), path=DEPLOYMENT_CHAT, request={}).record
    assert "content_filtered" not in clean.extra
    blocked = chat_completion(GPT4O, chat_usage(5, 1), finish="content_filter",
                              filters={**SAFE, "sexual": {"filtered": True, "severity": "medium"}})
    record = parse_call(A, blocked, path=DEPLOYMENT_CHAT, request={}).record
    assert record.extra["content_filtered"] is True and record.billable and record.output_tokens == 1


@pytest.mark.parametrize(("deployment", "model", "price_as"), [
    ("my-gpt", GPT4O, "openai/gpt-4o"),  # configured: the mapping, tried after the reported model
    ("llama", None, "meta/llama-3.3-70b"),  # a `vendor/model` value is used as written
    ("gpt4o-prod", GPT4O, f"openai/{GPT4O}"),  # not configured: the reported model
    ("gpt4o-prod", None, None),  # neither: nothing to price as
])
def test_price_as(deployment: str, model: str | None, price_as: str | None) -> None:
    path = f"/openai/deployments/{deployment}/chat/completions"
    record = parse_call(A, chat_completion(model, chat_usage(5, 1)), path=path, request={}).record
    assert record.extra.get("price_as") == price_as


@settings(max_examples=60, deadline=None)
@given(path=st.sampled_from([DEPLOYMENT_CHAT, V1_CHAT, "/openai/v1/responses", "/openai/deployments/e/embeddings",
                             "/anthropic/v1/messages", "/openai/deployments/w/audio/speech"]),
       body=st.binary(max_size=300), status=st.sampled_from([200, 400, 429]), sse=st.booleans(), eof=st.booleans())
def test_parsers_never_raise_on_garbage(path: str, body: bytes, status: int, sse: bool, eof: bool) -> None:
    content_type = "text/event-stream" if sse else "application/json"
    parse_call(A, body, path=path, request=body, status=status, response_headers={"content-type": content_type},
               eof=eof)


def test_refusal_is_openai_shaped() -> None:
    status, _, body = A.refusal("Budget reached", 10)
    assert status == 429 and json.loads(body)["error"]["code"] == "budget_exceeded"


# --------------------------------------------------------------------------------------------------
# [plugins.azure-openai]
# --------------------------------------------------------------------------------------------------


def config(block: Any) -> Any:
    return SimpleNamespace(plugin_config=lambda name: block if name == "azure-openai" else {})


def test_mapping_from_config() -> None:
    assert deployments_mapping(None) == {}
    assert deployments_mapping(config({})) == {}
    assert deployments_mapping(config({"deployments": {"my-gpt": "gpt-4o", "x": "openai/o4-mini"}})) == {
        "my-gpt": "gpt-4o", "x": "openai/o4-mini"}
    halton_configure(config({"deployments": {"my-gpt": "gpt-4o"}}))


@pytest.mark.parametrize(("block", "names"), [
    ({"deployment": {"a": "gpt-4o"}}, "[plugins.azure-openai] deployment"),
    ({"deployments": "gpt-4o"}, "[plugins.azure-openai] deployments must be a table"),
    ({"deployments": {"my-gpt": 4}}, "[plugins.azure-openai.deployments] my-gpt"),
    ({"deployments": {"my-gpt": ""}}, "[plugins.azure-openai.deployments] my-gpt"),
    ({"deployments": {"my-gpt": "gpt 4o"}}, "[plugins.azure-openai.deployments] my-gpt"),
])
def test_bad_config_is_one_line_naming_the_key(block: Any, names: str) -> None:
    with pytest.raises(ConfigError) as raised:
        halton_configure(config(block))
    assert names in raised.value.message and "\n" not in raised.value.message


def test_config_toml_reaches_the_provider(paths: Any) -> None:
    from halton_meter.config import load_config
    from halton_meter.host import PluginHost

    paths.home.mkdir(parents=True, exist_ok=True)
    (paths.home / "config.toml").write_text('[plugins.azure-openai.deployments]\nmy-gpt = "gpt-4o"\n')
    host = PluginHost(load_config(paths)).load(entry_points=False)
    assert host.plugins["azure-openai"].status == "ok"
    assert host.registries.providers.get("provider.azure-openai").deployments == {"my-gpt": "gpt-4o"}
    (paths.home / "config.toml").write_text('[plugins.azure-openai]\ndeploymnets = {}\n')
    with pytest.raises(ConfigError, match=r"unknown key \[plugins.azure-openai\] deploymnets"):
        PluginHost(load_config(paths)).load(entry_points=False)


# --------------------------------------------------------------------------------------------------
# the official client through a real meter
# --------------------------------------------------------------------------------------------------

API_KEY = "CANARYazureSDKkey0123456789abcdef"
ENTRA_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.CANARYentra.sig"
API_VERSION = "2024-10-21"
ENDPOINT = "https://contoso.openai.azure.com"
METER_CONFIG = '[plugins.azure-openai.deployments]\nmy-gpt = "gpt-4o"\n'


@pytest.fixture(scope="module")
def meter(fake_provider: FakeProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterProcess]:
    """A meter whose config maps the `my-gpt` deployment (this module's own, for the mapping)."""
    home = tmp_path_factory.mktemp("azure-meter") / "home"
    with MeterProcess.start(home, fake_provider, extra_config=METER_CONFIG) as running:
        yield running


@pytest.fixture
def sdk_http(meter: MeterProcess, fake_provider: FakeProvider) -> Iterator[Any]:
    httpx2 = pytest.importorskip("httpx2")  # the SDK's own httpx fork: it insists on its Client class
    fake_provider.clear()
    with httpx2.Client(proxy=meter.proxy_url, verify=meter.ssl_context(fake_provider.ca_pem), trust_env=False,
                       timeout=30) as client:
        yield client


def azure_client(http: Any, **kwargs: Any) -> Any:
    openai = pytest.importorskip("openai")
    options = {"azure_endpoint": ENDPOINT, "api_key": API_KEY, **kwargs}
    return openai.AzureOpenAI(api_version=API_VERSION, http_client=http, max_retries=0, **options)


def new_row(meter: MeterProcess, before: int) -> dict[str, Any]:
    [row] = meter.wait_for_calls(before + 1)[before:]
    assert row["key_fingerprint"], "the credential is fingerprinted"
    text = json.dumps(row)
    assert API_KEY not in text and ENTRA_TOKEN not in text and "CANARY" not in text
    return row


@pytest.mark.e2e
def test_azure_sdk_chat_deployment_form(meter: MeterProcess, fake_provider: FakeProvider, sdk_http: Any) -> None:
    fake_provider.add("POST", "/openai/deployments/gpt4o-prod/chat/completions",
                      Reply(body=chat_completion(GPT4O, chat_usage(2000, 150, cached=1536))))
    before = len(meter.rows())
    completion = azure_client(sdk_http).chat.completions.create(
        model="gpt4o-prod", messages=[{"role": "user", "content": "PROMPT-CANARY azure"}])
    assert completion.usage.prompt_tokens == 2000 and completion.model == GPT4O
    [received] = fake_provider.requests
    assert received.header("api-key") == API_KEY and f"api-version={API_VERSION}" in received.query
    row = new_row(meter, before)
    assert (row["provider"], row["endpoint_kind"], row["host"]) == ("azure-openai", "chat.completions",
                                                                    "contoso.openai.azure.com")
    assert (row["model"], row["model_requested"]) == (GPT4O, "gpt4o-prod")
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (464, 1536, 150)
    # gpt-4o list price: $2.50 in, $1.25 cached, $10 out per MTok.
    assert row["cost_nanos"] == 464 * 2_500 + 1536 * 1_250 + 150 * 10_000 and row["priced"]
    assert row["extra"] == {"price_as": f"openai/{GPT4O}"}


@pytest.mark.e2e
def test_azure_sdk_stream_with_usage_and_entra_token(meter: MeterProcess, fake_provider: FakeProvider,
                                                     sdk_http: Any) -> None:
    upstream, _ = chat_stream(GPT4O, ("Hel", "lo ✓"), chat_usage(900, 33, cached=512), usage_null=True)
    fake_provider.add("POST", "/openai/deployments/my-gpt/chat/completions", Reply(pieces=upstream, sse=True))
    before = len(meter.rows())
    client = azure_client(sdk_http, api_key=None, azure_ad_token=ENTRA_TOKEN)
    stream = client.chat.completions.create(model="my-gpt", stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "PROMPT-CANARY stream"}])
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello ✓" and usage is not None and usage.completion_tokens == 33
    [received] = fake_provider.requests
    assert received.header("authorization") == f"Bearer {ENTRA_TOKEN}"
    row = new_row(meter, before)
    assert (row["model"], row["model_requested"], row["streamed"], row["complete"]) == (GPT4O, "my-gpt", 1, 1)
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (388, 512, 33)
    assert row["extra"] == {"price_as": "openai/gpt-4o"}  # the config's mapping for my-gpt
    assert row["cost_nanos"] == 388 * 2_500 + 512 * 1_250 + 33 * 10_000


@pytest.mark.e2e
def test_openai_client_on_the_v1_api_gets_usage_injected(meter: MeterProcess, fake_provider: FakeProvider,
                                                         sdk_http: Any) -> None:
    openai = pytest.importorskip("openai")
    upstream, view = chat_stream(GPT4O, ("Hi", " there"), chat_usage(40, 7), usage_null=True)
    fake_provider.add("POST", "/openai/v1/chat/completions", Reply(pieces=upstream, sse=True))
    before = len(meter.rows())
    client = openai.OpenAI(base_url=f"{ENDPOINT}/openai/v1/", api_key=API_KEY, http_client=sdk_http, max_retries=0)
    chunks = list(client.chat.completions.create(model="my-gpt", stream=True,
                                                 messages=[{"role": "user", "content": "PROMPT-CANARY v1"}]))
    # The client sees the stream it asked for: no usage chunk (the opening content-filter chunk is Azure's own).
    assert all(c.usage is None for c in chunks) and len(chunks) == 5
    [received] = fake_provider.requests
    assert received.json()["stream_options"] == {"include_usage": True}
    row = new_row(meter, before)
    assert (row["model_requested"], row["usage_reported"], row["estimated"]) == ("my-gpt", 1, 0)
    assert (row["input_tokens"], row["output_tokens"]) == (40, 7)
    assert row["extra"] == {"usage_injected": True, "price_as": "openai/gpt-4o"}


@pytest.mark.e2e
def test_azure_sdk_embeddings_on_cognitive_services(meter: MeterProcess, fake_provider: FakeProvider,
                                                    sdk_http: Any) -> None:
    fake_provider.add("POST", "/openai/deployments/embed-small/embeddings", Reply(body=dumps({
        "data": [{"embedding": [0.1, 0.2], "index": 0, "object": "embedding"}], "model": "text-embedding-3-small",
        "object": "list", "usage": {"prompt_tokens": 12, "total_tokens": 12}})))
    before = len(meter.rows())
    client = azure_client(sdk_http, azure_endpoint="https://contoso-ai.cognitiveservices.azure.com")
    result = client.embeddings.create(model="embed-small", input="PROMPT-CANARY embed", encoding_format="float")
    assert result.usage.prompt_tokens == 12
    row = new_row(meter, before)
    assert (row["endpoint_kind"], row["host"], row["model"], row["model_requested"]) == (
        "embeddings", "contoso-ai.cognitiveservices.azure.com", "text-embedding-3-small", "embed-small")
    assert row["cost_nanos"] == 12 * 20  # $0.02 per MTok
