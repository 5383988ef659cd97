"""Example Halton Meter plugin: meter an OpenAI-compatible gateway at `llm.example.internal`."""

from __future__ import annotations

from collections.abc import Callable

from halton_meter.plugin import (
    Check,
    CheckContext,
    CheckResult,
    OpenAICompatibleProvider,
    PluginConfig,
    Provider,
    hookimpl,
    include_usage_mode,
)

GATEWAY_HOST = "llm.example.internal"


@hookimpl
def halton_register_providers(register: Callable[[Provider], None], config: PluginConfig | None) -> None:
    register(
        OpenAICompatibleProvider(
            id="provider.example-gateway",
            name="example-gateway",
            hosts=(GATEWAY_HOST,),
            price_provider_id=None,  # a private gateway: tokens are exact, cost is honestly unknown
            include_usage=include_usage_mode(config),  # [plugins.openai] include_usage, as for OpenAI itself
        )
    )


def _gateway_configured(ctx: CheckContext) -> CheckResult:
    """Where calls to the gateway would go: an `upstream.resolve` rule, or what DNS actually says (looked
    up, never assumed)."""
    import socket

    resolved = ctx.config is not None and any(rule.host == GATEWAY_HOST for rule in ctx.config.upstream_resolve)
    if resolved:
        return CheckResult("ok", f"{GATEWAY_HOST} is routed by upstream.resolve")
    try:
        infos = socket.getaddrinfo(GATEWAY_HOST, 443, type=socket.SOCK_STREAM)
    except OSError:
        return CheckResult("warn", f"{GATEWAY_HOST} does not resolve: calls to it fail",
                           fix=f'route it in config.toml: [upstream] resolve = ["{GATEWAY_HOST}:443:ADDRESS:PORT"]')
    return CheckResult("ok", f"{GATEWAY_HOST} resolves to {infos[0][4][0]}")


@hookimpl
def halton_register_checks(register: Callable[[Check], None]) -> None:
    register(Check("check.example-gateway", "example gateway", _gateway_configured))
