"""User-declared compatible endpoints: `[[compatible]]` hosts that speak the OpenAI or Anthropic format.

For self-hosted gateways, vLLM or Ollama behind TLS, corporate LLM proxies. Each entry becomes a provider
named after it; prices come from `price_as` (a public price list, when the gateway serves public models)
or from `[prices.NAME."MODEL"]` overrides, and are otherwise honestly unknown.

    [[compatible]]
    name = "corp-gateway"
    hosts = ["llm.corp.example"]
    format = "openai"          # or "anthropic"
    path_prefix = "/v1"        # optional
    price_as = "openai"        # optional
"""

from __future__ import annotations

from typing import Any

from halton_meter import hookimpl
from halton_meter.types import Provider
from halton_meter_plugins.providers.anthropic import AnthropicCompatibleProvider
from halton_meter_plugins.providers.openai import OpenAICompatibleProvider


def provider_for(endpoint: Any) -> Provider:
    factory = OpenAICompatibleProvider if endpoint.format == "openai" else AnthropicCompatibleProvider
    provider = factory(
        id=f"provider.compatible.{endpoint.name}",
        name=endpoint.name,
        hosts=endpoint.hosts,
        price_provider_id=endpoint.price_as,
        path_prefix=endpoint.path_prefix,
    )
    provider.billing = endpoint.billing
    return provider


@hookimpl
def halton_register_providers(register: Any, config: Any) -> None:
    for endpoint in getattr(config, "compatible", ()):
        register(provider_for(endpoint))
