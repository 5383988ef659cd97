from __future__ import annotations

import datetime
from typing import Any

import click
from rich.text import Text

from halton_meter import terminal
from halton_meter.clock import utc_stamp
from halton_meter.config import load_config
from halton_meter.terminal import local_time, usd_text
from halton_meter.timewindow import parse_moment


@click.command("reprice")
@click.option("--since", default="30d", show_default=True, help="Start of the window (7d, 24h, 2026-11-01, ISO time).")
@click.option("--until", default=None, help="End of the window (default: now).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(since: str, until: str | None, dry_run: bool, as_json: bool) -> None:
    """Recompute stored costs with the current prices and overrides, and report what changed.

    Use after editing [prices] in config.toml or upgrading the price data. Token counts never change;
    only cost, priced and price source do.
    """
    from halton_meter import terminal
    from halton_meter.host import PluginHost
    from halton_meter.pricing import Pricer
    from halton_meter.store.queries import open_reader
    from halton_meter.store.reprice import RepriceResult, reprice
    from halton_meter.store.schema import make_engine

    config = load_config()
    providers = PluginHost(config).load().validate_config().registries.providers  # prices that apply, or exit 2
    now = datetime.datetime.now(datetime.UTC)
    start = parse_moment(since, now, "--since")
    end = parse_moment(until, now, "--until") if until else now
    if start >= end:
        raise click.UsageError(f"--since ({since}) must be before --until ({until or 'now'})")
    window = [utc_stamp(m) for m in (start, end)]
    result = RepriceResult()
    if config.paths.db.exists():
        read = open_reader(config.paths.db)
        price_ids = {p.name: p.price_provider_id for p in providers}
        write = None if dry_run else make_engine(config.paths.db, immediate=True)
        result = reprice(read, write, Pricer(config), window[0], window[1], price_ids)
    data = result.to_json()
    data.update({"since": window[0], "until": window[1], "dry_run": dry_run})
    if as_json:
        terminal.print_json(data)
    else:
        show_reprice(data)


def _repriced_cost(usd: str | None, unpriced: int) -> str:
    """A model's cost before or after a reprice: "unpriced" when no call had a price, never "$0.00"."""
    if usd is None:
        return "unpriced"
    return usd_text(usd) + (f" + {unpriced:,} unpriced" if unpriced else "")


def show_reprice(data: dict[str, Any]) -> None:
    console = terminal.console()
    mode = "dry run: nothing written" if data["dry_run"] else ("written" if data["written"] else "nothing to write")
    console.print(Text.assemble(("Repriced ", "bold"), f"{data['examined']:,} calls "
                                f"{local_time(data['since'])} → {local_time(data['until'])} ({mode})"))
    console.print(f"  changed: {data['changed']:,} · now priced: {data['newly_priced']:,} · "
                  f"now unpriced: {data['newly_unpriced']:,}")
    console.print(f"  total: {usd_text(data['before_usd'])} → {usd_text(data['after_usd'])}")
    if data["by_model"]:
        table = terminal.table([("model", "left"), ("calls", "right"), ("before", "right"), ("after", "right")])
        for row in data["by_model"][:20]:
            table.add_row(row["model"], f"{row['calls']:,}", _repriced_cost(row["before_usd"], row["before_unpriced"]),
                          _repriced_cost(row["after_usd"], row["after_unpriced"]))
        console.print(table)
