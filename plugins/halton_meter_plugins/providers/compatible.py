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

from collections.abc import Callable

from halton_meter.plugin import CompatibleEndpoint, PluginConfig, Provider, hookimpl
from halton_meter_plugins.providers.anthropic import AnthropicCompatibleProvider
from halton_meter_plugins.providers.openai import OpenAICompatibleProvider, include_usage_mode


def provider_for(endpoint: CompatibleEndpoint, include_usage: str = "inject") -> Provider:
    """The provider for one `[[compatible]]` entry; an OpenAI-format one follows `[plugins.openai]
    include_usage` (`include_usage`), as every OpenAI-compatible provider does."""
    provider: OpenAICompatibleProvider | AnthropicCompatibleProvider
    provider_id = f"provider.compatible.{endpoint.name}"
    if endpoint.format == "openai":
        provider = OpenAICompatibleProvider(id=provider_id, name=endpoint.name, hosts=endpoint.hosts,
                                            price_provider_id=endpoint.price_as, path_prefix=endpoint.path_prefix,
                                            include_usage=include_usage)
    else:
        provider = AnthropicCompatibleProvider(id=provider_id, name=endpoint.name, hosts=endpoint.hosts,
                                               price_provider_id=endpoint.price_as, path_prefix=endpoint.path_prefix)
    provider.billing = endpoint.billing
    return provider


@hookimpl
def halton_register_providers(register: Callable[[Provider], None], config: PluginConfig | None) -> None:
    if config is None:
        return
    include_usage = include_usage_mode(config)
    for endpoint in config.compatible:
        register(provider_for(endpoint, include_usage))
