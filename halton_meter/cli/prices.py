from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click
from rich.text import Text

from halton_meter import terminal
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
    import dataclasses

    from halton_meter import terminal
    from halton_meter.errors import ExitCode, HaltonError, UsageError
    from halton_meter.host import PluginHost
    from halton_meter.pricing import Pricer, similar_models

    config = load_config()
    pricer = Pricer(config)
    providers = PluginHost(config).load().validate_config().registries.providers
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
        # Every provider that prices the model, the direct API first (its own price list), then the others;
        # providers sharing one price list (Codex bills at OpenAI's) are named together on one sheet.
        order = sorted(names.items(), key=lambda item: (item[0] != item[1], item[0]))
        by_sheet: dict[tuple[str | None, str, str], Any] = {}
        for name, price_id in order:
            if provider is not None and name != provider:
                continue
            sheet = pricer.sheet(name, price_id, model)
            if sheet is None:
                continue
            key = (price_id if not sheet.source.startswith("config") else name, sheet.model, sheet.source)
            if key in by_sheet:
                by_sheet[key] = dataclasses.replace(by_sheet[key], also=(*by_sheet[key].also, name))
                continue
            by_sheet[key] = sheet
        sheets = list(by_sheet.values())
        if not sheets and provider is not None:
            elsewhere = [n for n, pid in order if pricer.sheet(n, pid, model) is not None]
            if elsewhere:
                raise HaltonError(f"{provider} has no price for {model!r}; it is priced under {', '.join(elsewhere)} "
                                  f"(`halton-meter prices {model}`)", exit_code=ExitCode.FAILURE)
    if as_json:
        terminal.print_json([sheet_json(s) for s in sheets])
        return
    if not sheets:
        if model is None:
            terminal.line("No local price overrides; prices come from the bundled genai-prices data. "
                          "Ask for one model: halton-meter prices claude-sonnet-4-5")
            return
        close = similar_models(model)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise HaltonError(f"no price known for {model!r}: calls to it are recorded as unpriced.{hint} To price it, add "
                          f'[prices.PROVIDER."{model}"] input = … output = … to config.toml')
    price_sheets(sheets)


def _per_million(value: Any) -> str:
    """A per-million price, with long-context tiers: `$3 (>200k: $6)`."""
    if value is None:
        return "—"
    base = getattr(value, "base", value)
    text = f"${base.normalize():f}" if hasattr(base, "normalize") else f"${base}"
    for tier in getattr(value, "tiers", None) or ():
        text += f" (>{tier.start // 1000}k: ${tier.price.normalize():f})"
    return text


def sheet_json(sheet: Any) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if value is None:
            return None
        if hasattr(value, "base"):
            return {"base": str(value.base), "tiers": [{"above": t.start, "price": str(t.price)} for t in value.tiers]}
        return str(value)

    return {
        "provider": sheet.provider, "also": list(getattr(sheet, "also", ())), "model": sheet.model,
        "source": sheet.source,
        "per_million_tokens": {k: plain(getattr(sheet, k)) for k in
                               ("input", "cache_read", "cache_write", "cache_write_1h", "output")},
        "web_searches_per_thousand": plain(sheet.web_searches_per_thousand),
        "variants": list(sheet.variants),
    }


def price_sheets(sheets: Iterable[Any]) -> None:
    console = terminal.console()
    for sheet in sheets:
        also = f" (also {', '.join(sheet.also)})" if getattr(sheet, "also", ()) else ""
        console.print(Text.assemble((f"{sheet.provider}{also} · {sheet.model}", "bold"), f"   from {sheet.source}"))
        table = terminal.table([("per 1M tokens", "left"), ("price", "left")], wrap=("price",))
        for label, key in (("input", "input"), ("cache read", "cache_read"), ("cache write (5 min)", "cache_write"),
                           ("cache write (1 h)", "cache_write_1h"), ("output (incl. reasoning)", "output")):
            table.add_row(label, _per_million(getattr(sheet, key)))
        if sheet.web_searches_per_thousand is not None:
            table.add_row("web searches, per 1,000", _per_million(sheet.web_searches_per_thousand))
        console.print(table)
        if sheet.variants:
            console.print(f"  price variants: {'; '.join(sheet.variants)}")
        console.print()
