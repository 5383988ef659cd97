from __future__ import annotations

import click

from halton_meter.config import load_config


@click.command("prices")
@click.argument("model", required=False)
@click.option("--provider", help="Only this provider (as recorded: anthropic, openai, gemini, …).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def command(model: str | None, provider: str | None, as_json: bool) -> None:
    """Show what the meter charges for MODEL (USD per million tokens) and where the price comes from.

    Without MODEL, lists the local overrides from [prices] in config.toml. Prices come from those
    overrides first, then from the genai-prices data bundled with this version (never fetched).
    """
    from halton_meter import terminal
    from halton_meter.errors import HaltonError, UsageError
    from halton_meter.host import PluginHost
    from halton_meter.pricing import Pricer

    config = load_config()
    pricer = Pricer(config)
    providers = PluginHost(config).load().registries.providers
    names = {p.name: p.price_provider_id for p in providers}
    if provider is not None and provider not in names:
        raise UsageError(f"unknown provider {provider!r}; known: {', '.join(sorted(names))}")
    sheets = []
    if model is None:
        for (prov, overridden), _ in sorted(pricer.overrides.items()):
            sheet = pricer.sheet(prov, None, overridden)
            if sheet is not None and (provider is None or prov == provider):
                sheets.append(sheet)
    else:
        seen: set[tuple[str | None, str]] = set()
        for name, price_id in sorted(names.items()):
            if provider is not None and name != provider:
                continue
            sheet = pricer.sheet(name, price_id, model)
            if sheet is None or (price_id, sheet.model) in seen and not sheet.source.startswith("config"):
                continue
            seen.add((price_id, sheet.model))
            sheets.append(sheet)
    if as_json:
        terminal.print_json([terminal.sheet_json(s) for s in sheets])
        return
    if not sheets:
        if model is None:
            terminal.line("No local price overrides; prices come from the bundled genai-prices data. "
                          "Ask for one model: halton-meter prices claude-sonnet-4-5")
            return
        raise HaltonError(f"no price known for {model!r}; calls to it are recorded as unpriced. "
                         f'Add one in config.toml: [prices.PROVIDER."{model}"] input = … output = …')
    terminal.price_sheets(sheets)
