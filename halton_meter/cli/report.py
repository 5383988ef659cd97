from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from halton_meter import terminal
from halton_meter.cli._options import filter_options, filters_from, window_from, window_options
from halton_meter.config import load_config
from halton_meter.errors import UsageError
from halton_meter.terminal import (
    compact,
    cost_cell,
    duration,
    hanging,
    local_time,
    plural,
    sparkline,
    usd_nanos,
    usd_short,
    zone,
)
from halton_meter.timewindow import DEFAULT_SINCE


@click.command("report")
@window_options(DEFAULT_SINCE)
@click.option("--by", "by", multiple=True, metavar="DIM[,DIM…]",
              help="Group by project, model, provider, client, branch, key, day or hour (local); several nest in "
                   "the order given (--by project,model). Default: project.")
@filter_options
@click.option("--vs-previous", is_flag=True, help="Also show the change against the previous window of the same "
                                                  "length.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema: docs/reference/reports.md).")
@click.option("--csv", "as_csv", is_flag=True, help="Print one CSV row per group, with a header row.")
@click.option("--team", is_flag=True, help="The whole team's calls, from the [[sync]] Postgres (docs/sync.md); "
                                           "--by also takes user and machine.")
def command(by: tuple[str, ...], vs_previous: bool, as_json: bool, as_csv: bool, team: bool, **params: Any) -> None:
    """What was spent, on what, in a window: calls, tokens, cost, cache savings, latency, with notes on
    anything unpriced, estimated, incomplete or unmetered."""
    from halton_meter import report, terminal

    if as_json and as_csv:
        raise UsageError("--json and --csv cannot be combined: choose one format")
    config = load_config()
    window = window_from(params, DEFAULT_SINCE)
    if team:
        from halton_meter.cli.team import show_team

        show_team(config, window, by, as_json=as_json, as_csv=as_csv, vs_previous=vs_previous, params=params)
        return
    grouping = report.parse_by(by) or report.DEFAULT_BY
    filters = filters_from(params, config.key_names)
    result = report.build(config.paths.db, window, by=grouping, filters=filters, vs_previous=vs_previous,
                          key_names=config.key_names)
    if as_json:
        terminal.print_json(result.to_json())
    elif as_csv:
        sys.stdout.write(result.to_csv())
    else:
        show_report(result.view())


SPARK_MAX = 60


def _signed(value: int | float | None, pct: float | None = None) -> str:
    if value is None:
        return "—"
    text = f"+{compact(value)}" if isinstance(value, int) and value > 0 else compact(value) if isinstance(
        value, int) else f"{value:+.1f}"
    return text if pct is None else f"{text} ({pct:+.0f}%)"


def _money_change(change: dict[str, Any]) -> str:
    if change["abs"] is None:
        return "—"
    text = usd_short(change["abs"])
    return text if text.startswith("-") else "+" + text


def _pct(change: dict[str, Any]) -> str:
    return "new" if change["pct"] is None and change["abs"] not in (None, 0, "0.000000000") else (
        "—" if change["pct"] is None else f"{change['pct']:+.0f}%")


def _daily_line(data: dict[str, Any], width: int = 80) -> Text | None:
    """The trend line: one mark per day (or per few days), as many marks as fit `width` (at most
    SPARK_MAX, at least 7), then the span and the largest mark."""
    daily = data["daily"]
    if len(daily) < 2:
        return None
    charged = [usd_nanos(d["cost_usd"]) for d in daily]
    listed = [usd_nanos(d["subscription_list_price_usd"]) for d in daily]
    series, what = charged, "cost/day"
    show: Callable[[str], str] | None = usd_short
    if not any(charged):
        series, what = (listed, "list price/day") if any(listed) else ([d["calls"] for d in daily], "calls/day")
        show = usd_short if any(listed) else None
    first, last = daily[0]["date"][5:], daily[-1]["date"][5:]
    most = SPARK_MAX
    while True:
        per = -(-len(series) // most)  # days per mark, to stay within `most` marks
        marks = [sum(series[i:i + per]) for i in range(0, len(series), per)]
        top = max(marks)
        top_text = (show(f"{top / 1e9:.9f}") if show else f"{top:,}") if top else "0"
        unit = f"{per} days" if per > 1 else "day"
        tail = f"  {first} → {last} · max {top_text}{'/' + unit if per > 1 else ''}"
        room = width - 15 - cell_len(tail)
        if len(marks) <= room or most <= 7:
            break
        most = max(7, min(most - 1, room))
    return Text.assemble((f"{what:<15}", "bold"), sparkline(marks), (tail, "dim"))


def show_report(data: dict[str, Any]) -> None:
    """`halton-meter report`: takes `Report.view()` (the JSON document plus display rows)."""
    console = terminal.console()
    totals = data["totals"]
    title = Text.assemble(("Halton Meter report", "bold"), f" · {data['window']}")
    if data["filters"]:
        title.append(" · " + " ".join(f"{k}={','.join(v)}" for k, v in data["filters"].items()), style="dim")
    console.print(title)
    console.print(f"{local_time(data['since'])[:16]} {zone(data['since'])} → {local_time(data['until'])[:16]} "
                  f"{zone(data['until'])}")
    if not totals["calls"] and not data.get("previous"):
        console.print("No calls recorded in this window.")
        for note in data["notes"]:
            console.print(Text(note["text"], style="yellow"))
        return
    cost = cost_cell(totals)
    line = Text.assemble((f"{totals['calls']:,} calls", "bold"), " · cost ", (cost, "bold"))
    if usd_nanos(totals["cache_savings_usd"]):
        line.append(f" · cache saved {usd_short(totals['cache_savings_usd'])}")
    console.print(line)
    hanging(console, Text("tokens   "), Text(
        f"{compact(totals['input_tokens'])} in · {compact(totals['output_tokens'])} out · "
        f"{compact(totals['cache_read_tokens'])} cache read · "
        f"{compact(totals['cache_write_tokens'])} cache write"))
    hanging(console, Text("latency  "), Text(
        f"avg {duration(totals['avg_latency_ms'])} · p95 {duration(totals['p95_latency_ms'])}   "
        f"TTFT avg {duration(totals['avg_ttft_ms'])} · p95 {duration(totals['p95_ttft_ms'])}"))
    if totals["subscription_calls"]:
        hanging(console, Text("subscription  "), Text(
            f"{plural(totals['subscription_calls'], 'call')} · "
            f"{usd_short(totals['subscription_list_price_usd'])} at list price, not charged"))
    daily = _daily_line(data, console.width)
    if daily is not None:
        console.print(daily)
    if "previous" in data:
        _previous_line(console, data)
    if data["rows"]:
        console.print()
        console.print(_report_table(data))
    if data["notes"]:
        console.print()
    marks = {"unpriced": "* ", "subscription": "† "}
    for note in data["notes"]:
        console.print(Text(marks.get(note["kind"], "") + note["text"], style="yellow"))


def _previous_line(console: Console, data: dict[str, Any]) -> None:
    previous, change = data["totals"]["previous"], data["totals"]["change"]
    console.print(f"previous {local_time(data['previous']['since'])[:16]} → "
                  f"{local_time(data['previous']['until'])[:16]}: {plural(previous['calls'], 'call')} · "
                  f"cost {usd_short(previous['cost_usd'])}")
    console.print(Text.assemble(
        ("change   ", "bold"), "cost ", (f"{_money_change(change['cost_usd'])} ({_pct(change['cost_usd'])})", "bold"),
        f" · calls {_signed(change['calls']['abs'])} ({_pct(change['calls'])})",
    ))


def _report_table(data: dict[str, Any]) -> Table:
    compared = any("change" in r for r in data["rows"])
    if compared:
        columns = [(data["by_label"], "left"), ("calls", "right"), ("Δ calls", "right"), ("cost", "right"),
                   ("Δ cost", "right"), ("Δ %", "right")]
    else:
        columns = [(data["by_label"], "left"), ("calls", "right"), ("in", "right"), ("out", "right"),
                   ("cache rd", "right"), ("cost", "right"), ("saved", "right"), ("p95", "right")]
    table = terminal.table(columns, wrap=(data["by_label"],))
    table.padding = (0, 0, 0, 1)  # one space between columns: 80 columns hold a model name and every number

    def cells(row: dict[str, Any]) -> list[str]:
        if compared:
            change = row.get("change")
            if change is None:
                return [compact(row["calls"]), "", cost_cell(row), "", ""]
            return [compact(row["calls"]), _signed(change["calls"]["abs"]), cost_cell(row),
                    _money_change(change["cost_usd"]), _pct(change["cost_usd"])]
        return [compact(row["calls"]), compact(row["input_tokens"]), compact(row["output_tokens"]),
                compact(row["cache_read_tokens"]), cost_cell(row), usd_short(row["cache_savings_usd"]),
                duration(row["p95_latency_ms"])]

    for row in data["rows"]:
        style = "bold" if row["subtotal"] else ""
        table.add_row(Text("  " * row["depth"] + row["label"]), *cells(row), style=style)  # names are not markup
    table.add_section()
    table.add_row("total", *cells(data["totals"]), style="bold")
    return table
