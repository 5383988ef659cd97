"""pytest fixtures for Halton Meter and its plugins: a fake provider and a real meter in front of it.

Enable in a `conftest.py` with `pytest_plugins = ["halton_meter.testing.pytest_plugin"]`, then:

    def test_my_provider(meter, fake_provider):
        fake_provider.add("POST", "/v1/chat/completions", Reply(body=bodies.openai_chat(...)))
        with meter.client(extra_ca=fake_provider.ca_pem) as client:
            client.post("https://llm.example.internal/v1/chat/completions", json={...})
        [row] = meter.wait_for_calls(1)

Override `fake_provider_hosts` to serve extra host names (a plugin's own hosts). Both fixtures are
module-scoped: one fake and one `serve` per test module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from halton_meter.testing.fake_provider import FakeProvider
from halton_meter.testing.meter import MeterProcess


@pytest.fixture(scope="module")
def fake_provider_hosts() -> tuple[str, ...]:
    """Host names the fake serves besides the built-in providers' (override in your conftest)."""
    return ()


@pytest.fixture(scope="module")
def fake_provider(fake_provider_hosts: tuple[str, ...]) -> Iterator[FakeProvider]:
    with FakeProvider(extra_hosts=fake_provider_hosts) as fake:
        yield fake


@pytest.fixture(scope="module")
def meter(fake_provider: FakeProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeterProcess]:
    """A real `halton-meter serve` (edge, core, API) on ephemeral ports, upstream routed to the fake."""
    home = tmp_path_factory.mktemp("meter") / "home"
    with MeterProcess.start(home, fake_provider) as running:
        yield running
