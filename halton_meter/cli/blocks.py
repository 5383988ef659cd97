"""`halton-meter blocks`: past plan windows (5-hour by default) as the provider defined them, by reset time, one
row each with the account's calls, tokens and API-equivalent cost. The figures come from
`halton_meter.plan.blocks`; this module opens the database read-only and draws them."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from halton_meter import terminal
from halton_meter.cli._options import window_from, window_options

DEFAULT_SINCE = "7d"


@click.command("blocks")
@window_options(DEFAULT_SINCE)
@click.option("--window", "window_name", default="5h", show_default=True, metavar="WINDOW",
              help="Which plan window: 5h, 7d, 7d_opus, 7d_sonnet, or another the provider reports.")
@click.option("--json", "as_json", is_flag=True, help="Print the blocks as JSON.")
def command(window_name: str, as_json: bool, **params: Any) -> None:
    """Past plan windows, one row each: start and end (local time), calls, tokens, API-equivalent cost, the
    highest utilization seen and the last status; the window still open is marked active."""
    from halton_meter import plan
    from halton_meter.attribution.keys import key_label
    from halton_meter.cli._options import now
    from halton_meter.config import load_config
    from halton_meter.errors import UsageError
    from halton_meter.store.aggregate import snapshot
    from halton_meter.store.schema import initialised

    if plan.window_minutes(window_name) is None:
        raise UsageError(f"--window {window_name!r} is not a window; use 5h, 7d, 7d_opus or 7d_sonnet")
    config = load_config()
    window = window_from(params, DEFAULT_SINCE)
    found: list[plan.Block] = []
    if initialised(config.paths.db):
        with snapshot(config.paths.db) as conn:
            found = plan.blocks(conn, window.since_iso, window.until_iso, window_name, now=now().timestamp())
    rows = []
    for block in found:
        row = block.to_json()
        row["account_label"] = key_label(block.account, config.key_names) if block.account else None
        rows.append(row)
    data = {"window": window_name, "range": window.label, "since": window.since_iso, "until": window.until_iso,
            "blocks": rows}
    if as_json:
        terminal.print_json(data)
    else:
        show_blocks(data)


def show_blocks(data: dict[str, Any]) -> None:
    """`halton-meter blocks`: takes its JSON document."""
    from halton_meter.cli.plan import HOW, style_for

    console = terminal.console()
    if not data["blocks"]:
        console.print(f"No {data['window']} plan windows in {data['range']}: {HOW}", soft_wrap=True)
        return
    several = len({(b["provider"], b["account"]) for b in data["blocks"]}) > 1
    columns = [("start – end", "left"), ("calls", "right"), ("tokens", "right"), ("cost (API eq.)", "right"),
               ("peak", "right"), ("status", "left")]
    if several:
        columns.insert(1, ("account", "left"))
    table = terminal.table(columns, title=f"{data['window']} plan windows · {data['range']}")
    this_year = terminal.local_time(data["until"])[:4]
    for b in data["blocks"]:
        start, end = terminal.local_time(b["start"])[:16], terminal.local_time(b["end"])[:16]
        end = end[11:] if end[:10] == start[:10] else end[5:]
        start = start[5:] if start[:4] == this_year else start
        peak = "—" if b["peak"] is None else f"{b['peak'] * 100:.0f}%"
        style = style_for({"status": b["status"], "utilization": b["peak"]})
        status = Text(b["status"] or "—", style=style)
        if b["active"]:
            status.append(" ◀ active", style="bold")
        cells: list[Any] = [f"{start} – {end}", terminal.compact(b["calls"]), terminal.compact(b["tokens"]),
                            terminal.usd_short(b["cost_usd"]), Text(peak, style=style), status]
        if several:
            cells.insert(1, Text(f"{b['provider']} {b.get('account_label') or b['account'] or '(no key)'}"))
        table.add_row(*cells)
    console.print(table)
