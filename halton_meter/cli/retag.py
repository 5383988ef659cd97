from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from halton_meter import terminal
from halton_meter.cli._options import window_from, window_options
from halton_meter.config import load_config, valid_project_name
from halton_meter.errors import UsageError
from halton_meter.terminal import money, plural, usd_nanos


@click.command("retag")
@click.option("--from", "source", required=True, metavar="PROJECT", help="The project to move calls out of.")
@click.option("--to", "target", required=True, metavar="PROJECT", help="The project to move them to.")
@window_options(None, calendar=False)
@click.option("--dry-run", is_flag=True, help="Say how many calls (and what cost) would move; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(source: str, target: str, dry_run: bool, as_json: bool, **params: Any) -> None:
    """Move past calls (and unmetered gaps) from one project to another; their source becomes `retag`."""
    from halton_meter import terminal
    from halton_meter.store.retag import retag
    from halton_meter.store.schema import initialised

    if not valid_project_name(target):
        raise UsageError(f"--to {target!r} is not a project name (1-100 characters, no slashes or control "
                         "characters, no spaces at either end)")
    if not source.strip():
        raise UsageError("--from names no project; see `halton-meter projects` for the names")
    if source == target:
        raise UsageError(f"--from and --to are both {source!r}: nothing would move")
    config = load_config()
    window = window_from(params, None)
    if not initialised(config.paths.db):
        raise UsageError(f"no database at {config.paths.db} yet: there is nothing to retag")
    result = retag(config.paths.db, source, target, window.since_iso, window.until_iso, dry_run)
    if as_json:
        terminal.print_json(result.to_json())
    else:
        show_retag(result.to_json())


def show_retag(data: dict[str, Any]) -> None:
    """`halton-meter retag`: what moved (or, with --dry-run, would move)."""
    console = terminal.console()
    moved = data["calls"] + data["subscription_calls"]
    verb = "Would move" if data["dry_run"] else "Moved"
    if not moved and not data["gaps"]:
        console.print(f"No calls of project {data['from']!r} in this window: nothing to move (see "
                      "`halton-meter projects`).")
    else:
        what = f"{plural(moved, 'call')} ({money(usd_nanos(data['cost_usd']))} charged"
        if data["subscription_calls"]:
            what += f", {money(usd_nanos(data['subscription_list_price_usd']))} subscription at list price"
        what += ")"
        if data["gaps"]:
            what += f" and {plural(data['gaps'], 'unmetered gap')}"
        console.print(f"{verb} {what} from {data['from']!r} to {data['to']!r}.")
        if data["dry_run"]:
            console.print("Dry run: nothing was changed. Run again without --dry-run to move them.")
    if data["in_progress_skipped"]:
        console.print(Text(f"{plural(data['in_progress_skipped'], 'call')} still in progress "
                           f"{'would stay' if data['dry_run'] else 'stayed'}: run retag again once "
                           f"{'it ends' if data['in_progress_skipped'] == 1 else 'they end'}.", style="yellow"))
