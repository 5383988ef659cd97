"""What is stored about a call's URL and errors (docs/privacy.md): credentials are redacted from stored paths
by parameter name and by shape, and provider free text never reaches `error_type` or `extra`.

Unit and property tests first; the last test sends canary credentials in paths and unlisted query
parameters, and provider errors quoting a canary, through a real meter and searches everything it wrote.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import uuid
from typing import Any
from urllib.parse import quote, unquote

import pytest
from corpus import Case, all_cases, replay, sse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import halton_meter.redact as redact_module
from halton_meter.core.records import CREDENTIAL_QUERY_PARAMS, Observed, build_record, redact_path
from halton_meter.redact import (
    PATH_REDACTED,
    TOKEN_MIN_LENGTH,
    is_high_entropy_token,
    is_identifier,
    is_label,
    looks_secret,
    natural_identifier,
    safe_error_type,
    safe_extra,
    shannon_entropy,
)
from halton_meter.testing.fake_provider import FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess
from halton_meter.types import Endpoint, ParseOutcome, Provider, RequestFacts
from halton_meter_plugins.providers._common import BodyParser
from halton_meter_plugins.providers.groq import GroqProvider
from halton_meter_plugins.providers.openai import OpenAICompatibleProvider
from halton_meter_plugins.providers.xai import XAIProvider

R = PATH_REDACTED
B62 = string.ascii_letters + string.digits
B64URL = B62 + "-_"

# --------------------------------------------------------------------------------------------------
# What must be kept: realistic identifiers, every corpus path
# --------------------------------------------------------------------------------------------------

MODEL_IDS = [
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-1-20250805",
    "claude-3-7-sonnet-20250219",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4o-realtime-preview-2024-12-17",
    "o4-mini-deep-research-2025-06-26",
    "gemini-2.5-flash-preview-05-20",
    "gemini-2.5-flash-lite-preview-06-17",
    "gemini-2.0-flash-thinking-exp-01-21",
    "text-multilingual-embedding-002",
    "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
    "eu.anthropic.claude-3-5-sonnet-20240620-v1:0",
    "anthropic.claude-3-5-sonnet-20241022-v2:0",
    "mistral.mistral-large-2407-v1:0",
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0",
    "arn:aws:bedrock:us-west-2:123456789012:application-inference-profile/a1b2c3d4e5f6",
    "llama-4-scout-17b-16e-instruct",
    "llama-3.3-70b-versatile",
    "moonshotai/kimi-k2-instruct-0905",
    "accounts/fireworks/models/llama-v3p1-405b-instruct",
    "claude-3-5-haiku@20241022",
    "gpt-35-turbo-16k-0613",
]
DEPLOYMENT_NAMES = [  # Azure deployments are named by their owners
    "my-gpt-4o-deployment",
    "gpt-4o-mini-prod-eastus2",
    "openai-gpt4o-eastus2-prod-01",
    "Contoso-GPT4o-Deployment-01",
    "text-embedding-3-large",
    "DeepSeek-R1-Distill-Qwen-32B",
    "Llama-4-Maverick-17B-128E-Instruct-FP8",
    "Qwen3-Coder-480B-A35B-Instruct",
    "Meta-Llama-3-70B-Instruct-Turbo",
    "Mistral-Large-Instruct-2411",
    "Cohere-command-r-plus-08-2024",
    "MiniMax-M1-80k-Thinking",
]
OTHER_IDS = [
    "123e4567-e89b-12d3-a456-426614174000",
    "123E4567-E89B-12D3-A456-426614174000",
    "batch_abc123",
    "msgbatch_01",
    "file-abc123",
    "streamGenerateContent",
    "serverStreamingPredict",
    "fetchPredictOperation",
    "20250929",
    "2024-10-21",
    "12345678901234567890123",  # digits only: a number, not a key
]
KEPT_IDS = MODEL_IDS + DEPLOYMENT_NAMES + OTHER_IDS


def where_ids_appear(name: str) -> list[str]:
    """Paths in which a model, deployment or resource id appears in real APIs."""
    return [
        f"/v1beta/models/{name}:streamGenerateContent?alt=sse",
        f"/model/{name}/invoke",
        f"/model/{quote(name, safe='')}/converse-stream",  # Bedrock percent-encodes ARNs and colons
        f"/openai/deployments/{name}/chat/completions?api-version=2024-10-21",
        f"/v1/projects/p-123/locations/us-central1/publishers/google/models/{name}:generateContent",
        f"/v1/models?model={quote(name, safe='')}&pageSize=50",
        f"/v1/messages/batches/{name}/results#{name}",
    ]


@pytest.mark.parametrize("name", KEPT_IDS)
def test_model_ids_deployment_names_and_ids_are_kept(name: str) -> None:
    assert not looks_secret(name)
    for path in where_ids_appear(name):
        assert redact_path(path) == path


def corpus_paths() -> list[tuple[str, str]]:
    return sorted({(c.path, c.expect.get("path", c.path)) for c in all_cases()})


@pytest.mark.parametrize(("path", "stored"), corpus_paths())
def test_every_corpus_path_is_stored_as_before(path: str, stored: str) -> None:
    assert redact_path(path) == stored
    if "key=" not in path:
        assert stored == path


def test_common_query_strings_are_kept() -> None:
    for query in ("alt=sse", "beta=true", "api-version=2024-10-21", "api-version=2025-04-01-preview",
                  "client_version=0.46.0", "pageSize=50", "pageToken=", "limit=20&after_id=msg_01", "q=hello%20world"):
        assert redact_path(f"/v1/x?{query}") == f"/v1/x?{query}"


@given(st.uuids())
def test_uuids_are_kept(value: uuid.UUID) -> None:
    # (Written without hyphens a UUID is 32 hex digits, which is what a hex key looks like: redacted.)
    for text in (str(value), str(value).upper(), value.urn):
        path = f"/v1/threads/{text}/runs?run_id={text}"
        assert redact_path(path) == path


_FAMILIES = ("claude", "gpt", "gemini", "llama", "mistral", "grok", "qwen", "deepseek", "command", "o4")
_WORDS = ("sonnet", "opus", "haiku", "mini", "nano", "flash", "lite", "pro", "preview", "instruct", "turbo",
          "versatile", "thinking", "exp", "large", "small", "reasoning", "fast", "latest", "chat", "coder")


@st.composite
def lowercase_model_ids(draw: st.DrawFn) -> str:
    """Model ids as vendors write them: family, versions, words and dates between separators."""
    parts = [draw(st.sampled_from(_FAMILIES))]
    for _ in range(draw(st.integers(1, 5))):
        parts.append(draw(st.one_of(
            st.sampled_from(_WORDS),
            st.integers(0, 999).map(str),
            st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 9), st.integers(0, 9)),
            st.builds(lambda y, m, d: f"{y}{m:02}{d:02}", st.integers(2023, 2027), st.integers(1, 12), st.integers(1, 28)),
            st.builds(lambda y, m, d: f"{y}-{m:02}-{d:02}", st.integers(2023, 2027), st.integers(1, 12), st.integers(1, 28)),
            st.builds(lambda n, u: f"{n}{u}", st.integers(1, 999), st.sampled_from("bkm")),
            st.builds(lambda n: f"v{n}", st.integers(0, 9)),
        )))
    joined = parts[0]
    for part in parts[1:]:
        joined += draw(st.sampled_from("-_.")) + part
    return joined


@given(lowercase_model_ids())
def test_lowercase_model_ids_are_kept(name: str) -> None:
    for path in where_ids_appear(name):
        assert redact_path(path) == path


# --------------------------------------------------------------------------------------------------
# What must go: credentials by name, by known shape, by randomness
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "stored"),
    [
        ("/x?key=abc&alt=sse", f"/x?key={R}&alt=sse"),
        ("/x?key=", f"/x?key={R}"),
        ("/x?X-Goog-Api-Key=short", f"/x?X-Goog-Api-Key={R}"),
        ("/x?apiKey=short&API_KEY=short&api-key=short", f"/x?apiKey={R}&API_KEY={R}&api-key={R}"),
        ("/x?%6Bey=short", f"/x?%6Bey={R}"),  # the name percent-encoded
        ("/x?sig=short&auth=short&signature=s", f"/x?sig={R}&auth={R}&signature={R}"),
        ("/x?monkey=1&tokens=2&keys=3", "/x?monkey=1&tokens=2&keys=3"),  # only whole names
        ("/x#access_token=short&state=1", f"/x#access_token={R}&state=1"),
        ("/x?next=https%3A%2F%2Fh%2Fcb%3Ftoken%3Dshort", f"/x?next={R}"),  # a credential inside a URL value
    ],
)
def test_named_parameters_are_always_redacted(path: str, stored: str) -> None:
    assert redact_path(path) == stored


def test_provider_secret_params_add_names() -> None:
    assert redact_path("/x?foo=1&bar=2", frozenset({"foo"})) == f"/x?foo={R}&bar=2"
    assert redact_path("/x?key=1", CREDENTIAL_QUERY_PARAMS) == f"/x?key={R}"


def _b62(r: random.Random, n: int) -> str:
    return "".join(r.choice(B62) for _ in range(n))


SHAPES: dict[str, Any] = {
    # Random keys without a known prefix: what `secrets` and the providers' key generators produce.
    "token_urlsafe": lambda r: base64.urlsafe_b64encode(r.randbytes(r.randint(24, 48))).rstrip(b"=").decode(),
    "token_hex": lambda r: r.randbytes(r.randint(16, 32)).hex(),
    "token_hex_upper": lambda r: r.randbytes(r.randint(16, 32)).hex().upper(),
    "azure_sas_sig": lambda r: base64.b64encode(r.randbytes(32)).decode(),
    "aws_secret": lambda r: base64.b64encode(r.randbytes(30)).decode(),
    "base62": lambda r: _b62(r, r.randint(32, 64)),
    # Known prefixes (halton_meter.redact._PATTERNS), with any tail.
    "google_key": lambda r: "AIza" + "".join(r.choice(B64URL) for _ in range(35)),
    "anthropic": lambda r: "sk-ant-api03-" + "".join(r.choice(B64URL) for _ in range(95)),
    "openai_project": lambda r: "sk-proj-" + "".join(r.choice(B64URL) for _ in range(48)),
    "groq": lambda r: "gsk_" + _b62(r, 52),
    "xai": lambda r: "xai-" + _b62(r, 80),
    "github": lambda r: "ghp_" + _b62(r, 36),
    "aws_key_id": lambda r: "AKIA" + "".join(r.choice(string.ascii_uppercase + "234567") for _ in range(16)),
    "google_oauth": lambda r: "ya29." + "".join(r.choice(B64URL) for _ in range(100)),
    "jwt": lambda r: "eyJhbGciOiJSUzI1NiJ9." + ".".join(
        base64.urlsafe_b64encode(r.randbytes(n)).rstrip(b"=").decode() for n in (40, 64)),
}


@st.composite
def secrets_(draw: st.DrawFn) -> str:
    """A credential of one of `SHAPES`, from a seeded generator (random bytes, as keys are: hypothesis
    would otherwise shrink towards `AAAA…`, which no shape test can tell from a name)."""
    kind = draw(st.sampled_from(sorted(SHAPES)), label="shape")
    return SHAPES[kind](random.Random(draw(st.integers(0, 2**64), label="seed")))


NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]+")
_IN_PATH = {"segment", "model_segment", "segment_with_text", "bare_query"}
ENCODINGS = {
    "raw": lambda s: s,
    "encoded": lambda s: quote(s, safe=""),
    "encoded_twice": lambda s: quote(quote(s, safe=""), safe=""),
    "encoded_partly": lambda s: s[: len(s) // 2] + "".join(f"%{ord(c):02X}" for c in s[len(s) // 2:]),
}
PLACES = {
    # (path with the secret in it, path as stored)
    "segment": lambda v, n: (f"/v1/keys/{v}/usage?alt=sse", f"/v1/keys/{R}/usage?alt=sse"),
    "model_segment": lambda v, n: (f"/v1beta/models/{v}:generateContent?alt=sse", f"/v1beta/models/{R}?alt=sse"),
    "segment_with_text": lambda v, n: (f"/v1/files/report-{v}.json", f"/v1/files/{R}"),
    "unlisted_query": lambda v, n: (f"/v1/chat/completions?alt=sse&{n}={v}&beta=true",
                                    f"/v1/chat/completions?alt=sse&{n}={R}&beta=true"),
    "first_query": lambda v, n: (f"/v1/x?{n}={v}", f"/v1/x?{n}={R}"),
    "bare_query": lambda v, n: (f"/v1/x?alt=sse&{v}", f"/v1/x?alt=sse&{R}"),
    "fragment": lambda v, n: (f"/v1/x?alt=sse#{n}={v}&z=1", f"/v1/x?alt=sse#{n}={R}&z=1"),
    "url_in_query": lambda v, n: (f"/v1/x?redirect={quote('https://example.com/cb/' + unquote(v), safe='')}",
                                  f"/v1/x?redirect={R}"),
}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(secret=secrets_(), name=NAMES, place=st.sampled_from(sorted(PLACES)), encoding=st.sampled_from(sorted(ENCODINGS)))
def test_any_credential_anywhere_in_a_path_is_removed(secret: str, name: str, place: str, encoding: str) -> None:
    if place in _IN_PATH and encoding in ("raw", "encoded_partly") and not _URL_SAFE.fullmatch(secret):
        encoding = "encoded"  # a client must encode `/`, `+`, `=` there (a raw `/` would start a new segment)
    value = ENCODINGS[encoding](secret)
    path, expected = PLACES[place](value, name)
    stored = redact_path(path)
    # Replaced whole (no piece of the secret is left), every other byte kept as sent.
    assert stored == expected
    assert secret not in unquote(unquote(stored))


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_each_shape_is_a_secret(kind: str) -> None:
    rng = random.Random(kind)
    for _ in range(200):
        assert looks_secret(SHAPES[kind](rng))


def test_random_tokens_of_20_to_31_characters_are_caught_nearly_always() -> None:
    """The documented rates (docs/privacy.md): from 32 characters no miss was ever seen; between 20 and
    31 a random base64url, base64, base62 or hex string reads like a name about once in 10,000 (hex: only
    when it happens to be all digits, or to repeat itself)."""
    rng = random.Random(20251122)
    alphabets = {"base64url": B64URL, "base64": B62 + "+/", "base62": B62, "hex": "0123456789abcdef"}
    for name, alphabet in alphabets.items():
        misses = [s for s in ("".join(rng.choice(alphabet) for _ in range(rng.randint(20, 31)))
                              for _ in range(4000)) if not looks_secret(s)]
        assert len(misses) <= 2, (name, misses)
        long_misses = [s for s in ("".join(rng.choice(alphabet) for _ in range(rng.randint(32, 64)))
                                   for _ in range(4000)) if not looks_secret(s)]
        assert long_misses == [], (name, long_misses)


def test_the_token_definition_at_its_thresholds() -> None:
    hex_key = "9f86d081884c7d659a2f"  # 20 hex characters, one letter case, letters and digits
    assert len(hex_key) == TOKEN_MIN_LENGTH and is_high_entropy_token(hex_key)
    assert not is_high_entropy_token(hex_key[:-1])  # 19: too short
    assert not is_high_entropy_token("a1" * 15)  # repetition: entropy 1 bit per character
    assert shannon_entropy("a1" * 15) == 1.0
    assert not is_high_entropy_token("12345678901234567890123")  # digits only
    assert not is_high_entropy_token("abcdefghijklmnopqrstuvwxyz")  # letters in one case only
    assert is_high_entropy_token("Xk9mQ2vR7pL4tN8wZ3bY")  # base62, 20 characters
    assert is_high_entropy_token("gpt4omini20240718deployment")  # unbroken with digits: looks random
    assert is_high_entropy_token("GPT4oMiniProdEastUS2Deploy")  # one mixed-case word with digits
    assert not is_high_entropy_token("streamGenerateContent")  # camelCase
    assert natural_identifier("DeepSeek-R1-Distill-Qwen-32B") and not is_high_entropy_token("DeepSeek-R1-Distill-Qwen-32B")
    assert not natural_identifier("ysdxMvfTdwJesoB-tytzHackmP-BeuV8")  # random, though mostly lowercase
    assert is_high_entropy_token("msgbatch_013Zva2CMHLNnXjNJJKqJ2EF")  # an opaque random id: redacted too


def test_redaction_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("bug")

    monkeypatch.setattr(redact_module, "looks_secret", broken)
    assert redact_path("/v1/messages?beta=true") == R


# --------------------------------------------------------------------------------------------------
# Provider free text: error ids and extra
# --------------------------------------------------------------------------------------------------

SENTENCE = "Incorrect API key provided: sk-CANARY***. You can find your API key at https://example.com."


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("rate_limit_exceeded", True), ("RESOURCE_EXHAUSTED", True), ("1300", True), ("402", True),
        ("invalid_request_error", True), ("unsupported_country_region_territory", True),
        ("grpc.status:UNAVAILABLE", True),
        ("", False), ("Client specified an invalid argument", False), (SENTENCE, False),
        ("the_model_grok_9_does_not_exist_or_your_team_has_no_access", False),  # a slugged sentence
        ("x" * 65, False), ("sk-ant-api03-CANARYabcdefghijklmnop", False), ("9f86d081884c7d659a2feaa0", False),
        (None, False), (42, False),
    ],
)
def test_what_counts_as_an_identifier(value: Any, ok: bool) -> None:
    assert is_identifier(value) is ok


def test_error_type_is_an_identifier_or_a_generic_id() -> None:
    assert safe_error_type("rate_limit_exceeded", 429) == "rate_limit_exceeded"
    assert safe_error_type(None, 500) is None  # the record builder names it http_500
    assert safe_error_type(SENTENCE, 400) == "http_400"
    assert safe_error_type(SENTENCE, 200, "stream_error") == "stream_error"
    assert safe_error_type(SENTENCE, 200) == "error"
    assert safe_error_type(SENTENCE, None) == "error"


def test_extra_keeps_labels_numbers_and_structure_and_nothing_else() -> None:
    extra = {
        "service_tier": "default", "upstream_provider": "Google AI Studio", "reported_cost_usd": "0.02415",
        "is_byok": False, "cost_in_usd_ticks": 23775000, "resets_at": 1795000000, "none": None,
        "usage_breakdown": [{"model": "openai/gpt-oss-120b", "input_tokens": 1800}],
        "batch_usage": {"requests": 3, "succeeded": 2},
        "stream_error": "Model output exceeded the maximum length of 8192 tokens, please retry",
        "message": SENTENCE, "label_with_key": "key sk-proj-CANARYabcdefghijk",
        "nested": {"deep": [{"error": "Your team CANARY-team has no access."}]},
        "Free text as a key!": 1, "odd": object(),
    }
    stored = safe_extra(extra)
    assert stored == {
        "service_tier": "default", "upstream_provider": "Google AI Studio", "reported_cost_usd": "0.02415",
        "is_byok": False, "cost_in_usd_ticks": 23775000, "resets_at": 1795000000, "none": None,
        "usage_breakdown": [{"model": "openai/gpt-oss-120b", "input_tokens": 1800}],
        "batch_usage": {"requests": 3, "succeeded": 2},
        "stream_error": R, "message": R, "label_with_key": R, "nested": {"deep": [{"error": R}]}, "odd": R,
    }
    assert is_label("Google AI Studio") and not is_label("Rate limit reached for model x")


SEEN = dict(method="POST", host="api.example.com", path="/v1/chat/completions",
            started_at="2026-11-22T12:00:00.000000Z", ended_at="2026-11-22T12:00:01.000000Z", eof=True)


def test_a_third_party_plugin_cannot_store_provider_text() -> None:
    """The rule is central (build_record): whatever a parser reports, a sentence never reaches the row."""
    provider = Provider()
    provider.name, provider.hosts = "third-party", ("api.example.com",)
    outcome = ParseOutcome(complete=True, error_type="The model CANARY-model does not exist.",
                           extra={"error_message": "CANARY: your key sk-CANARY0123456789abcdefghij is invalid",
                                  "error_code": "model_not_found"})
    record = build_record(provider, Endpoint("chat.completions", billable=True), RequestFacts(), outcome,
                          Observed(status=404, **SEEN))
    assert record.error_type == "http_404"
    assert record.extra == {"error_message": R, "error_code": "model_not_found"}
    stream = ParseOutcome(error_type="Upstream said: CANARY overloaded, try later", incomplete_reason="stream_error")
    record = build_record(provider, Endpoint("chat.completions", billable=True), RequestFacts(), stream,
                          Observed(status=200, **SEEN))
    assert (record.error_type, record.incomplete_reason) == ("stream_error", "stream_error")


XAI_SENTENCE_CODE = Case(
    name="xai/error-400-unknown-sentence-code",
    host="api.x.ai", path="/v1/chat/completions", request={"model": "grok-9", "messages": []}, status=400,
    response=json.dumps({"code": "The model grok-9 does not exist or your team CANARY-team has no access",
                         "error": "CANARY: see https://console.x.ai"}).encode(),
    expect={},
)
GROQ_FREE_TEXT = Case(
    name="groq/stream-free-text-error",
    host="api.groq.com", path="/openai/v1/chat/completions", sse=True,
    request={"model": "llama-3.3-70b-versatile", "messages": [], "stream": True},
    response=sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "llama-3.3-70b-versatile",
                  "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                  "x_groq": {"id": "req_1", "error": "CANARY: model output exceeded the maximum length"}})
    + b"data: [DONE]\n\n",
    expect={},
)
OPENAI_SENTENCE_CODE = Case(
    name="openai-compatible/error-400-sentence-code",
    host="api.openai.com", path="/v1/chat/completions", request={"model": "gpt-4o", "messages": []}, status=400,
    response=json.dumps({"error": {"message": SENTENCE, "type": "invalid_request_error",
                                   "code": "The key CANARY-code was rejected"}}).encode(),
    expect={},
)


@pytest.mark.parametrize(
    ("case", "provider", "error_type"),
    [
        (XAI_SENTENCE_CODE, XAIProvider(), "http_400"),  # was a slug of the sentence
        (GROQ_FREE_TEXT, GroqProvider(), "stream_error"),  # its text was kept in extra.stream_error
        (OPENAI_SENTENCE_CODE, OpenAICompatibleProvider(), "invalid_request_error"),  # was the sentence
    ],
    # ids stable across processes (pytest-xdist compares them): the case and the provider's class, never a repr
    ids=lambda v: v.name if isinstance(v, Case) else v if isinstance(v, str) else type(v).__name__,
)
def test_provider_error_text_never_reaches_the_record(case: Case, provider: Any, error_type: str) -> None:
    record = replay(case, provider)
    assert record.error_type == error_type
    stored = json.dumps({"error_type": record.error_type, "extra": record.extra, "path": record.path})
    assert "CANARY" not in stored and "exceeded" not in stored and "does not exist" not in stored


def test_parser_errors_name_the_exception_type_only() -> None:
    class Fragile(BodyParser):
        def on_event(self, event: Any) -> None:
            raise KeyError("CANARY-provider-value")

        def on_document(self, document: Any) -> None:
            raise ValueError(f"bad value {document!r}")

    endpoint = Endpoint("chat.completions", billable=True)
    parser = Fragile(endpoint, RequestFacts(), 200, "text/event-stream")
    parser.feed(b'data: {"secret": "CANARY"}\n\n')
    assert parser.finish(True).extra["parser_errors"] == ["KeyError in on_event"]
    parser = Fragile(endpoint, RequestFacts(), 200, "application/json")
    parser.feed(b'{"secret": "CANARY"}')
    assert parser.finish(True).extra["parser_errors"] == ["ValueError in on_document"]


# --------------------------------------------------------------------------------------------------
# End to end: canaries in paths, unlisted parameters and provider errors, through a real meter
# --------------------------------------------------------------------------------------------------

# Every value contains CANARY, so the session-end search (tests/conftest.py) looks for them too.
PATH_KEY = "sk-ant-api03-CANARYpathKey-Xq7Lz2Wm9Kd4Rt8Vb3Ny6Hj"  # a known shape, as a path segment
PATH_TOKEN = "CANARYr4Nd0mTk3Jx9QmZt7Lp2VwR8sYbE"  # no known prefix: caught by its shape only
SAS_SIG = "CANARYsig/q8Zr2mX+9vLk4PwT8sB3nYd6Qe1Ha5Uc7Gf="  # base64, percent-encoded on the wire
AUTH_TOKEN = "CANARYauthZk8Qw2Er5Ty7Ui9Op1AsDf3"
GOOG_KEY = "AIzaSyCANARY-goog-query-0123456789abcdefgh"
SESSION_TOKEN = "CANARYs3ss10nZk8Qw2Er5Ty7Ui9Op1As4"  # under a name no list has
ENCODED_KEY = "sk-proj-CANARYencoded-Abc123Def456Ghi789"  # percent-encoded twice
ERROR_CANARY = "CANARY-in-a-provider-message"

GEMINI_OK = json.dumps({
    "candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}],
    "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10},
    "modelVersion": "gemini-2.0-flash",
}).encode()


def test_canary_values_are_caught_by_the_rules_the_e2e_test_relies_on() -> None:
    for value in (PATH_TOKEN, SAS_SIG, AUTH_TOKEN, SESSION_TOKEN):
        assert any(is_high_entropy_token(run) for run in redact_module._RUN.findall(value)), value
    for value in (PATH_KEY, GOOG_KEY, ENCODED_KEY):
        assert redact_module.has_credential_shape(value), value


@pytest.mark.e2e
def test_no_canary_from_a_path_query_or_provider_error_is_stored(meter: MeterProcess,
                                                                  fake_provider: FakeProvider) -> None:
    fake = fake_provider
    gemini_path = "/v1beta/models/gemini-2.0-flash:generateContent"
    fake.add("POST", gemini_path, Reply(body=GEMINI_OK))
    fake.add("GET", f"/v1/messages/{PATH_KEY}/x", Reply(body=b'{"ok": true}'))
    fake.add("GET", f"/v1/files/{PATH_TOKEN}/content", Reply(body=b'{"ok": true}'))
    fake.add("POST", "/v1/chat/completions", Reply(status=400, body=json.dumps({"error": {
        "message": f"Incorrect API key provided: {ERROR_CANARY}.", "type": "invalid_request_error",
        "code": f"The key {ERROR_CANARY} was rejected"}}).encode()))
    fake_xai = json.dumps({"code": f"Your team {ERROR_CANARY} has no access to grok-9",
                           "error": f"{ERROR_CANARY}: see the console"}).encode()
    groq_stream = sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "llama-3.3-70b-versatile",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                       "x_groq": {"id": "req_1", "error": f"{ERROR_CANARY}: output exceeded the maximum length"}})
    fake.add("POST", "/openai/v1/chat/completions", Reply(body=groq_stream + b"data: [DONE]\n\n", sse=True))
    query = (f"alt=sse&sig={quote(SAS_SIG, safe='')}&auth={AUTH_TOKEN}&x-goog-api-key={GOOG_KEY}"
             f"&session={SESSION_TOKEN}&state={quote(quote(ENCODED_KEY, safe=''), safe='')}")
    before = len(meter.rows())
    with meter.client(extra_ca=fake.ca_pem, timeout=20) as client:
        answers = [
            client.post(f"https://generativelanguage.googleapis.com{gemini_path}?{query}",
                        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
            client.get(f"https://api.anthropic.com/v1/messages/{PATH_KEY}/x"),
            client.get(f"https://api.openai.com/v1/files/{PATH_TOKEN}/content?purpose=batch"),
            client.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o", "messages": []}),
        ]
        fake.add("POST", "/v1/chat/completions", Reply(status=400, body=fake_xai))  # api.x.ai, same path
        answers.append(client.post("https://api.x.ai/v1/chat/completions", json={"model": "grok-9", "messages": []}))
        answers.append(client.post("https://api.groq.com/openai/v1/chat/completions",
                                   json={"model": "llama-3.3-70b-versatile", "messages": [], "stream": True}))
    assert [a.status_code for a in answers] == [200, 200, 200, 400, 400, 200]
    assert ERROR_CANARY in answers[3].text and ERROR_CANARY in answers[4].text  # the client gets every byte
    # The provider received every credential as sent ...
    assert any(SESSION_TOKEN in r.query for r in fake.requests)
    rows = meter.wait_for_calls(before + 6)[before:]
    by_host = {}
    for row in rows:
        by_host.setdefault(row["host"], []).append(row)
    # ... and the rows keep each parameter's name and every other byte of the path, and no credential.
    assert [r["path"] for r in by_host["generativelanguage.googleapis.com"]] == [
        f"{gemini_path}?alt=sse&sig={R}&auth={R}&x-goog-api-key={R}&session={R}&state={R}"]
    assert by_host["generativelanguage.googleapis.com"][0]["input_tokens"] == 7
    assert [r["path"] for r in by_host["api.anthropic.com"]] == [f"/v1/messages/{R}/x"]
    openai = sorted(by_host["api.openai.com"], key=lambda r: r["path"])
    assert [(r["path"], r["error_type"]) for r in openai] == [
        ("/v1/chat/completions", "invalid_request_error"), (f"/v1/files/{R}/content?purpose=batch", None)]
    assert [r["error_type"] for r in by_host["api.x.ai"]] == ["http_400"]
    assert [(r["error_type"], r["incomplete_reason"]) for r in by_host["api.groq.com"]] == [
        ("stream_error", "stream_error")]
    assert "CANARY" not in json.dumps(meter.rows(include_in_progress=True))
    # Nothing at rest anywhere: database, WAL, spool, logs, the serve output.
    meter.stop()
    searched, hits = 0, []
    for path in meter.files_at_rest():
        if path.parent.name == "ca":  # certificates: public material, no traffic
            continue
        searched += 1
        if b"CANARY" in path.read_bytes():
            hits.append(str(path))
    assert searched >= 3 and hits == []
