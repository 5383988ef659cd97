"""Example Halton Meter plugin: meter an OpenAI-compatible gateway at `llm.example.internal`."""

from __future__ import annotations

from halton_meter import hookimpl
from halton_meter.types import Check, CheckContext, CheckResult
from halton_meter_plugins.providers.openai import OpenAICompatibleProvider

GATEWAY_HOST = "llm.example.internal"


@hookimpl
def halton_register_providers(register):
    register(
        OpenAICompatibleProvider(
            id="provider.example-gateway",
            name="example-gateway",
            hosts=(GATEWAY_HOST,),
            price_provider_id=None,  # a private gateway: tokens are exact, cost is honestly unknown
        )
    )


def _gateway_configured(ctx: CheckContext) -> CheckResult:
    resolved = ctx.config is not None and any(rule.host == GATEWAY_HOST for rule in ctx.config.upstream_resolve)
    if resolved:
        return CheckResult("ok", f"{GATEWAY_HOST} is routed by upstream.resolve")
    return CheckResult("ok", f"{GATEWAY_HOST} resolves through DNS")


@hookimpl
def halton_register_checks(register):
    register(Check("check.example-gateway", "example gateway", _gateway_configured))
