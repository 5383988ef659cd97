"""The out-of-tree example plugin (contrib/halton-meter-provider-example), installed for real with pip.

This is the proof that `pip install halton-meter-provider-x` works: the distribution is found through the
entry-point group, listed by `plugins --json`, and its provider meters a call end to end.
"""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Reply

pytestmark = pytest.mark.e2e

GATEWAY = "llm.example.internal"


def _installed() -> bool:
    try:
        metadata.distribution("halton-meter-provider-example")
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module", autouse=True)
def _require_contrib() -> None:
    # Not a skip: CI must prove the plugin installs, so a missing install is a failure with the fix.
    assert _installed(), "pip install -e contrib/halton-meter-provider-example (make test does this)"


@pytest.fixture(scope="module")
def fake_provider_hosts() -> tuple[str, ...]:
    return (GATEWAY,)


def test_listed_by_plugins_json(meter) -> None:
    plugins = {p["name"]: p for p in json.loads(meter.cli("plugins", "--json").stdout)}
    example = plugins["example"]
    assert (example["source"], example["status"], example["version"]) == ("entry_point", "ok", "0.1.0")
    assert example["provides"] == {"providers": ["provider.example-gateway"], "checks": ["check.example-gateway"]}


def test_meters_a_call_to_its_host(meter, fake_provider: FakeProvider) -> None:
    fake_provider.add("POST", "/v1/chat/completions", Reply(body=bodies.openai_chat(
        model="qwen2.5-coder-32b", prompt_tokens=321, completion_tokens=45, cached_tokens=21)))
    before = len(meter.rows())
    with meter.client(extra_ca=fake_provider.ca_pem) as client:
        response = client.post(f"https://{GATEWAY}/v1/chat/completions", json={"model": "qwen2.5-coder-32b"})
    assert response.status_code == 200
    [row] = meter.wait_for_calls(before + 1)[before:]
    assert (row["provider"], row["endpoint_kind"], row["model"]) == ("example-gateway", "chat.completions",
                                                                    "qwen2.5-coder-32b")
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (300, 21, 45)
    # A private gateway has no public prices: unknown, never a silent $0.
    assert (row["cost_nanos"], row["priced"], row["price_source"]) == (None, 0, "no price data for this provider")


def test_its_check_looks_the_host_up_instead_of_assuming(meter, cli, tmp_path, monkeypatch) -> None:
    """With upstream.resolve it is routed; without, the check asks DNS (offline here: it does not resolve)
    and says so, never "resolves" unseen."""
    routed = json.loads(meter.cli("doctor", "--only", "check.example-gateway", "--json", check=False).stdout)
    assert routed["checks"][0]["summary"] == f"{GATEWAY} is routed by upstream.resolve"
    monkeypatch.setenv("HALTON_METER_HOME", str(tmp_path / "elsewhere"))
    result = cli("doctor", "--only", "check.example-gateway", "--json")
    [row] = json.loads(result.stdout)["checks"]
    assert row["status"] == "warn" and row["summary"] == f"{GATEWAY} does not resolve: calls to it fail", row
    assert "upstream" in row["fix"]
