from __future__ import annotations

import click

from halton_meter.config import load_config


@click.command("calls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of call records.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True,
              help="Show the most recent N calls (0: all).")
def command(as_json: bool, limit: int) -> None:
    """List recorded calls, oldest first."""
    from halton_meter import terminal
    from halton_meter.store.queries import list_calls, open_reader

    config = load_config()
    records = []
    if config.paths.db.exists():
        records = list_calls(open_reader(config.paths.db), limit or None)
    if as_json:
        terminal.print_json([r.to_public() for r in records])
    elif not records:
        terminal.line("No calls recorded yet. Start the meter with `halton-meter serve`, then "
                      "`halton-meter run -- <your tool>`.")
    else:
        terminal.calls_table(records)
