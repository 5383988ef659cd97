"""All terminal output. The only module that imports rich.

Honours NO_COLOR and COLUMNS; output written to a pipe has no colour. Errors go to stderr as one line.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from halton_meter.types import SELF_TEST_KIND, CallRecord, nanos_to_usd


def _console(stderr: bool = False, width: int | None = None) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False, no_color="NO_COLOR" in os.environ or None,
                   width=width)


def error(message: str) -> None:
    console = _console(stderr=True)
    console.print(Text.assemble(("halton-meter: ", "bold red"), ("error: ", "red"), message), soft_wrap=True)


def warn(message: str) -> None:
    _console(stderr=True).print(Text.assemble(("halton-meter: ", "bold yellow"), ("warning: ", "yellow"), message),
                                soft_wrap=True)


def line(message: str = "", style: str | None = None) -> None:
    _console().print(Text(message, style=style or ""), soft_wrap=True)


HANGING_MIN = 20
"""Narrower than this beside its lead, a line is printed whole instead (the terminal wraps it)."""


def _hanging(console: Console, lead: Text, body: Text) -> None:
    """`lead` then `body`, wrapped between words to the console's width, later lines starting under the
    body's first character (a word longer than the room is folded, never cut)."""
    room = console.width - lead.cell_len
    if room < HANGING_MIN:
        console.print(Text.assemble(lead, body), soft_wrap=True)
        return
    for i, part in enumerate(body.wrap(console, room, overflow="fold")):
        part.rstrip()
        console.print(Text.assemble(lead if i == 0 else " " * lead.cell_len, part), soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def money(nanos: int | None) -> str:
    if nanos is None:
        return "unpriced"
    usd = nanos_to_usd(nanos) or "0"
    whole, _, frac = usd.partition(".")
    frac = frac[:6] if abs(nanos) >= 10_000 else frac  # show sub-cent amounts in full
    return f"${whole}.{frac.rstrip('0').ljust(2, '0')}"


def tokens(n: int) -> str:
    return f"{n:,}"


def local_time(iso: str) -> str:
    moment = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _table(columns: Sequence[tuple[str, str]], title: str | None = None, wrap: Sequence[str] = ()) -> Table:
    """Columns never wrap (numbers and names stay whole) except those in `wrap`, which fold."""
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, box=None, header_style="bold")
    for name, justify in columns:
        if name in wrap:
            table.add_column(name, justify=justify, overflow="fold", ratio=1)  # type: ignore[arg-type]
        else:
            table.add_column(name, justify=justify, no_wrap=True, min_width=len(name))  # type: ignore[arg-type]
    return table


def _status_text(r: CallRecord) -> str:
    if r.incomplete_reason == "in_progress":
        return "in progress"
    status = str(r.status) if r.status is not None else "—"
    if r.error_type:
        status += f" {r.error_type}"
    if not r.complete:
        status += " (incomplete)"
    return status


def _project_text(r: CallRecord) -> str:
    """The project column: a self-test row belongs to no project."""
    return "(self-test)" if r.endpoint_kind == SELF_TEST_KIND else r.project


_LINE = "{0:<14} {1:<10} {2:<28} {3:>8} {4:>7} {5:>9}  {6:<16} {7}"


def call_line_header() -> None:
    """`calls --follow`: the column names, once."""
    _console().print(Text(_LINE.format("time", "provider", "model", "in", "out", "cost", "project", "status"),
                          style="bold"), soft_wrap=True)


def call_line(r: CallRecord) -> None:
    """`calls --follow`: one call per line, aligned with `call_line_header`."""
    cost = money(r.cost_nanos) if r.billable or r.cost_nanos is None else "—"
    text = _LINE.format(local_time(r.started_at)[5:], r.provider, r.model or "—", tokens(r.input_tokens),
                        tokens(r.output_tokens), cost, _project_text(r), _status_text(r))
    _console().print(Text(text), soft_wrap=True)


# ---- calls ---------------------------------------------------------------------------------------------

_CALL_NAME_MIN = {"status": 8, "project": 8, "model": 10}
"""Name columns that may be shortened, least valuable first, and how short each may get."""
_CALL_STAGES: tuple[dict[str, Any], ...] = (
    {},
    {"year": False},
    {"gap": 1},
    {"drop": ("provider",)},
    {"shorten": True},
    {"drop": ("provider", "status")},
    {"wrap_time": True},
    {"wrap_cache": True},
    {"drop": ("provider", "status", "project")},
    {"drop": ("provider", "status", "project", "model")},
)


@dataclass
class _Column:
    name: str
    justify: str
    cells: list[str]
    width: int = 0

    def __post_init__(self) -> None:
        self.width = max([cell_len(part) for cell in self.cells for part in cell.split("\n")] + [len(self.name)])


def calls_layout(records: Sequence[CallRecord], width: int) -> tuple[list[_Column], int]:
    """The columns of `halton-meter calls` fitted to `width`, and the gap between them.

    Time, token counts (in, cache read/write, out) and cost are never cut. When the whole table is wider
    than `width` it gives way in this order, stopping as soon as it fits:

    1. the year goes from the time (`11-20 10:00:00`, as `calls --follow` shows it);
    2. one space between columns instead of two;
    3. the provider column goes (the model name says it in nearly every case);
    4. names are shortened with an ellipsis at the end, least valuable first: the status, then the project,
       then the model, each down to a minimum (8, 8 and 10 characters) before the next is touched;
    5. the status column goes;
    6. the time takes two lines (the date above the time of day);
    7. the cache counts take two lines (read above write);
    8. the project column goes;
    9. the model column goes.

    When even the time and the numbers alone are wider than `width`, the table is as wide as they need (the
    terminal wraps the lines) rather than cutting a figure.
    """
    cells = _call_cells(records)
    stage: dict[str, Any] = {}
    columns: list[_Column] = []
    gap = 2
    for step in _CALL_STAGES:
        stage = {**stage, **step}
        gap = stage.get("gap", 2)
        columns = _call_columns(cells, stage)
        needed = sum(c.width for c in columns) + gap * (len(columns) - 1)
        if needed <= width:
            return columns, gap
        if stage.get("shorten") and _shorten(columns, needed - width):
            return columns, gap
    return columns, gap


def _shorten(columns: list[_Column], excess: int) -> bool:
    """Take `excess` characters off the name columns, least valuable first (status, project, model), each
    down to its minimum before the next is touched. False when that is not enough."""
    names = [c for name in _CALL_NAME_MIN for c in columns if c.name == name]
    floors = {c.name: min(c.width, _CALL_NAME_MIN[c.name]) for c in names}
    if sum(c.width - floors[c.name] for c in names) < excess:
        return False
    for column in names:
        cut = min(excess, column.width - floors[column.name])
        column.width -= cut
        excess -= cut
    return True


def _call_cells(records: Sequence[CallRecord]) -> dict[str, list[str]]:
    """Each column's cells at full length, computed once for every layout tried."""
    return {
        "time": [local_time(r.started_at) for r in records],
        "provider": [r.provider for r in records],
        "model": [r.model or "—" for r in records],
        "in": [tokens(r.input_tokens) for r in records],
        "cache r/w": [f"{tokens(r.cache_read_tokens)}/{tokens(r.cache_write_tokens)}" for r in records],
        "out": [tokens(r.output_tokens) for r in records],
        "cost": [money(r.cost_nanos) if r.billable or r.cost_nanos is None else "—" for r in records],
        "project": [_project_text(r) for r in records],
        "status": [_status_text(r) for r in records],
    }


_CALL_JUSTIFY = {"in": "right", "cache r/w": "right", "out": "right", "cost": "right"}


def _call_columns(cells: dict[str, list[str]], stage: dict[str, Any]) -> list[_Column]:
    shown = dict(cells)
    if not stage.get("year", True):
        shown["time"] = [text[5:] for text in shown["time"]]
    if stage.get("wrap_time"):
        shown["time"] = [text.replace(" ", "\n") for text in shown["time"]]
    if stage.get("wrap_cache"):
        shown["cache r/w"] = [text.replace("/", "/\n") for text in shown["cache r/w"]]
    return [_Column(name, _CALL_JUSTIFY.get(name, "left"), values) for name, values in shown.items()
            if name not in stage.get("drop", ())]


def calls_table(records: Iterable[CallRecord]) -> None:
    """`halton-meter calls`: fitted to the terminal's width as `calls_layout` says. The width is COLUMNS when
    set, else the terminal's (of stdin, stdout or stderr, so a pipe inside a terminal gets its width), else
    80: rich's own rule."""
    records = list(records)
    console = _console()
    columns, gap = calls_layout(records, console.width)
    needed = sum(c.width for c in columns) + gap * (len(columns) - 1)
    if needed > console.width:  # only figures left: longer lines, never a cut number
        console = _console(width=needed)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold",
                  padding=(0, 1) if gap == 2 else (0, 0, 0, 1))
    for column in columns:
        table.add_column(column.name, justify=column.justify, width=column.width,  # type: ignore[arg-type]
                         no_wrap=True, overflow="ellipsis")
    for row in zip(*(c.cells for c in columns), strict=True):
        table.add_row(*(Text(cell) for cell in row))  # names are not markup
    console.print(table)


def plugins_table(plugins: Iterable[dict[str, Any]]) -> None:
    table = _table([("plugin", "left"), ("version", "left"), ("source", "left"), ("status", "left"),
                    ("provides", "left")], wrap=("provides",))
    for p in plugins:
        provides = " ".join(i for items in p["provides"].values() for i in items) or "—"
        status = Text(p["status"], style={"ok": "green", "error": "red"}.get(p["status"], "yellow"))
        table.add_row(p["name"], p["version"], p["source"], status, provides)
        if p["error"]:
            table.add_row("", "", "", "", Text(p["error"], style="red"))
    _console().print(table)


# ---- report --------------------------------------------------------------------------------------------

_SPARKS = "▁▂▃▄▅▆▇█"
SPARK_MAX = 60


def compact(n: int | None) -> str:
    """A token or call count in at most 6 characters: 9,999 · 123.4k · 12.3M · 1.2B."""
    if n is None:
        return "—"
    sign, n = ("-" if n < 0 else ""), abs(n)
    if n < 10_000:
        return f"{sign}{n:,}"
    for limit, divisor, suffix in ((999_950, 1_000, "k"), (999_950_000, 1_000_000, "M")):
        if n < limit:
            return f"{sign}{n / divisor:.1f}{suffix}"
    return f"{sign}{n / 1_000_000_000:.1f}B"


def usd_short(value: str | None) -> str:
    """A decimal USD string for a table cell: $1,234.56 (cents), or two significant digits under a cent
    ($0.0014), so a small cost never reads as $0.00."""
    if value is None:
        return "—"
    from decimal import ROUND_HALF_EVEN, Decimal

    amount = Decimal(value)
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    if amount == 0:
        return "$0.00"
    places = 2 if amount >= Decimal("0.01") else min(9, -amount.adjusted() + 1)
    return f"{sign}${amount.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN):,}"


def _duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.1f}s"


def _cost_cell(row: dict[str, Any]) -> str:
    """The charged cost; `*` when unpriced calls are left out, `†` when subscription calls are not in it."""
    marks = ("*" if row["unpriced_calls"] else "") + ("†" if row["subscription_calls"] else "")
    if row["unpriced_calls"] and _usd_nanos(row["cost_usd"]) == 0:
        return "unpriced" + marks[1:]
    return usd_short(row["cost_usd"]) + marks


def _usd_nanos(value: str) -> int:
    from decimal import Decimal

    return int(Decimal(value).scaleb(9))


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


def sparkline(values: list[int]) -> str:
    top = max(values, default=0)
    if top <= 0:
        return "·" * len(values)
    return "".join("·" if v <= 0 else _SPARKS[min(len(_SPARKS) - 1, (v * len(_SPARKS) - 1) // top)] for v in values)


def _daily_line(data: dict[str, Any], width: int = 80) -> Text | None:
    """The trend line: one mark per day (or per few days), as many marks as fit `width` (at most
    SPARK_MAX, at least 7), then the span and the largest mark."""
    daily = data["daily"]
    if len(daily) < 2:
        return None
    charged = [_usd_nanos(d["cost_usd"]) for d in daily]
    listed = [_usd_nanos(d["subscription_list_price_usd"]) for d in daily]
    series, what, show = charged, "cost/day", usd_short
    if not any(charged):
        series, what = (listed, "list price/day") if any(listed) else ([d["calls"] for d in daily], "calls/day")
        show = usd_short if any(listed) else None  # type: ignore[assignment]
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


def report(data: dict[str, Any]) -> None:
    """`halton-meter report`: takes `Report.view()` (the JSON document plus display rows)."""
    console = _console()
    totals = data["totals"]
    title = Text.assemble(("Halton Meter report", "bold"), f" · {data['window']}")
    if data["filters"]:
        title.append(" · " + " ".join(f"{k}={','.join(v)}" for k, v in data["filters"].items()), style="dim")
    console.print(title)
    console.print(f"{local_time(data['since'])[:16]} {_zone(data['since'])} → {local_time(data['until'])[:16]} "
                  f"{_zone(data['until'])}")
    if not totals["calls"] and not data.get("previous"):
        console.print("No calls recorded in this window.")
        for note in data["notes"]:
            console.print(Text(note["text"], style="yellow"))
        return
    cost = _cost_cell(totals)
    line = Text.assemble((f"{totals['calls']:,} calls", "bold"), " · cost ", (cost, "bold"))
    if _usd_nanos(totals["cache_savings_usd"]):
        line.append(f" · cache saved {usd_short(totals['cache_savings_usd'])}")
    console.print(line)
    _hanging(console, Text("tokens   "), Text(
        f"{compact(totals['input_tokens'])} in · {compact(totals['output_tokens'])} out · "
        f"{compact(totals['cache_read_tokens'])} cache read · "
        f"{compact(totals['cache_write_tokens'])} cache write"))
    _hanging(console, Text("latency  "), Text(
        f"avg {_duration(totals['avg_latency_ms'])} · p95 {_duration(totals['p95_latency_ms'])}   "
        f"TTFT avg {_duration(totals['avg_ttft_ms'])} · p95 {_duration(totals['p95_ttft_ms'])}"))
    if totals["subscription_calls"]:
        _hanging(console, Text("subscription  "), Text(
            f"{_plural(totals['subscription_calls'], 'call')} · "
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


def _zone(iso: str) -> str:
    moment = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    return moment.strftime("%Z")


def _previous_line(console: Console, data: dict[str, Any]) -> None:
    previous, change = data["totals"]["previous"], data["totals"]["change"]
    console.print(f"previous {local_time(data['previous']['since'])[:16]} → "
                  f"{local_time(data['previous']['until'])[:16]}: {_plural(previous['calls'], 'call')} · "
                  f"cost {usd_short(previous['cost_usd'])}")
    console.print(Text.assemble(
        ("change   ", "bold"), "cost ", (f"{_money_change(change['cost_usd'])} ({_pct(change['cost_usd'])})", "bold"),
        f" · calls {_signed(change['calls']['abs'])} ({_pct(change['calls'])})",
    ))


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _report_table(data: dict[str, Any]) -> Table:
    compared = any("change" in r for r in data["rows"])
    if compared:
        columns = [(data["by_label"], "left"), ("calls", "right"), ("Δ calls", "right"), ("cost", "right"),
                   ("Δ cost", "right"), ("Δ %", "right")]
    else:
        columns = [(data["by_label"], "left"), ("calls", "right"), ("in", "right"), ("out", "right"),
                   ("cache rd", "right"), ("cost", "right"), ("saved", "right"), ("p95", "right")]
    table = _table(columns, wrap=(data["by_label"],))
    table.padding = (0, 0, 0, 1)  # one space between columns: 80 columns hold a model name and every number

    def cells(row: dict[str, Any]) -> list[str]:
        if compared:
            change = row.get("change")
            if change is None:
                return [compact(row["calls"]), "", _cost_cell(row), "", ""]
            return [compact(row["calls"]), _signed(change["calls"]["abs"]), _cost_cell(row),
                    _money_change(change["cost_usd"]), _pct(change["cost_usd"])]
        return [compact(row["calls"]), compact(row["input_tokens"]), compact(row["output_tokens"]),
                compact(row["cache_read_tokens"]), _cost_cell(row), usd_short(row["cache_savings_usd"]),
                _duration(row["p95_latency_ms"])]

    for row in data["rows"]:
        style = "bold" if row["subtotal"] else ""
        table.add_row(Text("  " * row["depth"] + row["label"]), *cells(row), style=style)  # names are not markup
    table.add_section()
    table.add_row("total", *cells(data["totals"]), style="bold")
    return table


def _usd_text(value: str | None) -> str:
    if value is None:
        return "unpriced"
    from decimal import Decimal

    return money(int(Decimal(value).scaleb(9)))


def projects(data: dict[str, Any]) -> None:
    """`halton-meter projects`: takes its JSON document."""
    console = _console()
    if not data["projects"]:
        console.print(f"No projects with calls ({data['window']}).")
        return
    table = _table([("project", "left"), ("calls", "right"), ("cost", "right"), ("last seen", "left"),
                    ("attributed by", "left")], wrap=("project", "attributed by"))
    for p in data["projects"]:
        total = sum(s["calls"] for s in p["sources"]) or 1
        sources = ", ".join(f"{s['name']} {s['calls'] * 100 // total}%" for s in p["sources"][:2])
        if len(p["sources"]) > 2:
            sources += ", …"
        cost = _cost_cell({"cost_usd": p["cost_usd"], "unpriced_calls": p["unpriced_calls"],
                           "subscription_calls": p["subscription_calls"]})
        calls = compact(p["calls"]) + (f" +{p['gaps']} gaps" if p["gaps"] else "")
        table.add_row(Text(p["project"]), calls, cost, local_time(p["last_seen"])[:16] if p["last_seen"] else "—",
                      Text(sources or "—"))
    console.print(table)
    if any(p["unpriced_calls"] for p in data["projects"]):
        console.print(Text("* the cost leaves out unpriced calls (their cost is unknown)", style="yellow"))
    if any(p["subscription_calls"] for p in data["projects"]):
        console.print(Text("† some calls were covered by a subscription: their list price is not in the cost",
                           style="yellow"))


def retag(data: dict[str, Any]) -> None:
    """`halton-meter retag`: what moved (or, with --dry-run, would move)."""
    console = _console()
    moved = data["calls"] + data["subscription_calls"]
    verb = "Would move" if data["dry_run"] else "Moved"
    if not moved and not data["gaps"]:
        console.print(f"No calls of project {data['from']!r} in this window: nothing to move (see "
                      "`halton-meter projects`).")
    else:
        what = f"{_plural(moved, 'call')} ({money(_usd_nanos(data['cost_usd']))} charged"
        if data["subscription_calls"]:
            what += f", {money(_usd_nanos(data['subscription_list_price_usd']))} subscription at list price"
        what += ")"
        if data["gaps"]:
            what += f" and {_plural(data['gaps'], 'unmetered gap')}"
        console.print(f"{verb} {what} from {data['from']!r} to {data['to']!r}.")
        if data["dry_run"]:
            console.print("Dry run: nothing was changed. Run again without --dry-run to move them.")
    if data["in_progress_skipped"]:
        console.print(Text(f"{_plural(data['in_progress_skipped'], 'call')} still in progress "
                           f"{'would stay' if data['dry_run'] else 'stayed'}: run retag again once "
                           f"{'it ends' if data['in_progress_skipped'] == 1 else 'they end'}.", style="yellow"))


def import_summary(results: Iterable[dict[str, Any]], dry_run: bool, settle_minutes: int) -> None:
    """`halton-meter import`: one line per source, then what the numbers need said."""
    console = _console()
    for r in results:
        if not r["found"]:
            console.print(Text(f"{r['source']}: no logs found at {' or '.join(r['locations'])}", style="dim"),
                          soft_wrap=True)
            continue
        verb = "would be imported" if dry_run else "imported"
        imported = f"{_plural(r['imported'], 'call')} {verb}"
        money_parts = []
        if _usd_nanos(r["cost_usd"]):
            money_parts.append(money(_usd_nanos(r["cost_usd"])))
        if _usd_nanos(r["subscription_list_price_usd"]):
            money_parts.append(f"{money(_usd_nanos(r['subscription_list_price_usd']))} subscription at list price")
        if r["unpriced_calls"]:
            money_parts.append(f"{r['unpriced_calls']:,} unpriced")
        if money_parts:
            imported += f" ({', '.join(money_parts)})"
        parts = [_plural(r["files"], "file") + " read", imported,
                 f"{r['already_metered']:,} already metered", f"{r['already_imported']:,} already imported",
                 f"{r['duplicates']:,} duplicate{'' if r['duplicates'] == 1 else 's'}",
                 _plural(r["unreadable_lines"], "unreadable line")]
        console.print(Text.assemble((f"{r['source']}: ", "bold"), " · ".join(parts)), soft_wrap=True)
        notes = []
        if r["imported"] or r["already_imported"]:
            basis = {"option": "as --billing said",
                     "meter": f"as the meter last saw {r['source']} pay; --billing changes it",
                     "default": f"{r['title']}'s logs do not say how calls were paid; "
                                f"--billing {'subscription' if r['billing'] == 'api' else 'api'} if they were "
                                f"{'covered by a plan' if r['billing'] == 'api' else 'paid per token'}"}
            notes.append(f"  billed as {r['billing']}: {basis.get(r['billing_basis'], r['billing_basis'])}")
        if r["rebilled"]:
            notes.append(f"  {_plural(r['rebilled'], 'call')} imported before now billed as {r['billing']}")
        if r["recent"]:
            notes.append(f"  {_plural(r['recent'], 'call')} from the last {settle_minutes} minutes left for the "
                         "next run (the tool may still be writing them)")
        if r["before_since"]:
            notes.append(f"  {_plural(r['before_since'], 'call')} before --since left out")
        if r["unreadable_files"]:
            notes.append(f"  {_plural(r['unreadable_files'], 'file')} could not be read: "
                         + "; ".join(r["problems"][:3]))
        for note in notes:
            console.print(Text(note, style="dim"), soft_wrap=True)
    if dry_run:
        console.print("Dry run: nothing was written.")


def serving(runtime: dict[str, Any]) -> None:
    console = _console()
    console.print(Text("Halton Meter is metering.", style="bold green"))
    console.print(f"  proxy  127.0.0.1:{runtime['edge_port']}   wrap a command: halton-meter run -- claude")
    console.print(f"  api    127.0.0.1:{runtime['api_port']}")
    console.print(f"  data   {runtime['db']}")
    console.print("Stop with Ctrl-C.")


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
    console = _console()
    for sheet in sheets:
        also = f" (also {', '.join(sheet.also)})" if getattr(sheet, "also", ()) else ""
        console.print(Text.assemble((f"{sheet.provider}{also} · {sheet.model}", "bold"), f"   from {sheet.source}"))
        table = _table([("per 1M tokens", "left"), ("price", "left")], wrap=("price",))
        for label, key in (("input", "input"), ("cache read", "cache_read"), ("cache write (5 min)", "cache_write"),
                           ("cache write (1 h)", "cache_write_1h"), ("output (incl. reasoning)", "output")):
            table.add_row(label, _per_million(getattr(sheet, key)))
        if sheet.web_searches_per_thousand is not None:
            table.add_row("web searches, per 1,000", _per_million(sheet.web_searches_per_thousand))
        console.print(table)
        if sheet.variants:
            console.print(f"  price variants: {'; '.join(sheet.variants)}")
        console.print()


def _repriced_cost(usd: str | None, unpriced: int) -> str:
    """A model's cost before or after a reprice: "unpriced" when no call had a price, never "$0.00"."""
    if usd is None:
        return "unpriced"
    return _usd_text(usd) + (f" + {unpriced:,} unpriced" if unpriced else "")


def reprice(data: dict[str, Any]) -> None:
    console = _console()
    mode = "dry run: nothing written" if data["dry_run"] else ("written" if data["written"] else "nothing to write")
    console.print(Text.assemble(("Repriced ", "bold"), f"{data['examined']:,} calls "
                                f"{local_time(data['since'])} → {local_time(data['until'])} ({mode})"))
    console.print(f"  changed: {data['changed']:,} · now priced: {data['newly_priced']:,} · "
                  f"now unpriced: {data['newly_unpriced']:,}")
    console.print(f"  total: {_usd_text(data['before_usd'])} → {_usd_text(data['after_usd'])}")
    if data["by_model"]:
        table = _table([("model", "left"), ("calls", "right"), ("before", "right"), ("after", "right")])
        for row in data["by_model"][:20]:
            table.add_row(row["model"], f"{row['calls']:,}", _repriced_cost(row["before_usd"], row["before_unpriced"]),
                          _repriced_cost(row["after_usd"], row["after_unpriced"]))
        console.print(table)


# ---- lifecycle: init, status, uninstall, logs ----------------------------------------------------------

_STEP_MARK = {"done": ("✓", "green"), "applied": ("✓", "green"), "skipped": ("–", "dim"), "undone": ("↺", "cyan"),
              "failed": ("✗", "bold red"), "apply": ("→", "yellow"), "undo": ("↺", "cyan")}


def init_step(index: int, total: int, title: str, status: str, detail: str) -> None:
    mark, style = _STEP_MARK.get(status, ("?", ""))
    words = {"done": "already in place", "applied": "done", "skipped": "skipped", "undone": "undone",
             "failed": "FAILED", "apply": "will apply", "undo": "will undo"}[status]
    text = Text.assemble((f"{index}/{total} ", "dim"), (f"{mark} ", style), f"{title}: ", (words, style))
    if detail and detail not in ("already in place", "will apply"):
        text.append(f" · {detail}", style="dim" if status != "failed" else "red")
    _console().print(text, soft_wrap=True)


def init_done(ok: bool, message: str) -> None:
    style = "bold green" if ok else "bold red"
    _console().print(Text.assemble(("✓ " if ok else "✗ ", style), (message, style if not ok else "")),
                     soft_wrap=True)


_VERDICT_STYLE = {"HEALTHY": "bold green", "DEGRADED": "bold yellow", "BROKEN": "bold red"}
_ROW_MARK = {"ok": ("●", "green"), "warn": ("●", "yellow"), "fail": ("●", "red"), "skip": ("○", "dim"),
             "error": ("●", "red")}


def status(data: dict[str, Any], verbose: bool = False) -> None:
    console = _console()
    console.print(Text.assemble((data["verdict"], _VERDICT_STYLE[data["verdict"]]), f"  {data['summary']}"),
                  soft_wrap=True)
    for row in data["rows"]:
        mark, style = _ROW_MARK.get(row["status"], ("?", ""))
        console.print(Text.assemble((f"{mark} ", style), (f"{row['title']:<11}", "bold"), row["summary"]),
                      soft_wrap=True)
        if row.get("fix") and row["status"] != "ok":
            console.print(Text(f"    fix: {row['fix']}", style="cyan"), soft_wrap=True)


_LOG_LEVEL_STYLE = {"debug": "dim", "warning": "yellow", "error": "red", "critical": "bold red",
                    "exception": "red"}


def log_entries(entries: Iterable[Any], raw: bool = False, day: str | None = None) -> str | None:
    """`halton-meter logs`: entries (`logread.LogEntry`, already in time order) as
    `09:46:42.876 core  warning  core unavailable: … reason=core did not answer the probe`, local time, a
    `── 2026-12-03 ──` line whenever the day changes (`day`: the last one shown; returned for the next
    batch). A multi-line value (a traceback) and continuation lines follow, indented. With `raw`, the
    lines exactly as the files hold them."""
    if raw:
        for entry in entries:
            for text in entry.raw:
                sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return day
    console = _console()
    for entry in entries:
        if entry.at is None:
            console.print(Text(f"{entry.process}: {entry.raw[0]}"), soft_wrap=True)
        else:
            moment = entry.at.astimezone()
            if moment.strftime("%Y-%m-%d") != day:
                day = moment.strftime("%Y-%m-%d")
                console.print(Text(f"── {day} ──", style="dim"), soft_wrap=True)
            text = Text.assemble((f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d} ", "dim"),
                                 f"{entry.process:<5} ",
                                 (f"{entry.level:<8}", _LOG_LEVEL_STYLE.get(entry.level, "")), " ", entry.event)
            blocks = []
            for key, value in entry.fields.items():
                shown = value if isinstance(value, str) else repr(value)
                if "\n" in shown:
                    blocks.append((key, shown))
                else:
                    text.append(f" {key}=", style="dim")
                    text.append(shown)
            console.print(text, soft_wrap=True)
            for key, shown in blocks:
                console.print(Text(f"    {key}:", style="dim"), soft_wrap=True)
                for part in shown.splitlines():
                    console.print(Text(f"      {part}"), soft_wrap=True)
        for part in entry.raw[1:]:
            console.print(Text(f"    {part}"), soft_wrap=True)
    return day


# ---- doctor --------------------------------------------------------------------------------------------

_DOCTOR_MARK = {"ok": ("✓", "green"), "warn": ("!", "bold yellow"), "fail": ("✗", "bold red"), "skip": ("○", "dim"),
                "error": ("⚠", "bold red")}
_HOP_MARK = {"ok": ("✓", "green"), "fail": ("✗", "bold red"), "skip": ("○", "dim")}


def doctor_report(data: dict[str, Any], verbose: bool = False) -> None:
    """`halton-meter doctor`: one line per check in the report's order, the fix under each problem, and a
    footer counting issues. Takes the `--json` document, so both outputs always agree. Long lines wrap at
    the width between words, continuing under where their text starts; nothing is cut."""
    console = _console()
    checks = data["checks"]
    width = max((len(c["title"]) for c in checks), default=0)
    for check in checks:
        mark, style = _DOCTOR_MARK.get(check["status"], ("?", ""))
        _hanging(console, Text.assemble((f"{mark} ", style), (f"{check['title']:<{width}}", "bold"), "  "),
                 Text(check["summary"]))
        for hop in check["details"].get("hops", ()) if isinstance(check["details"], dict) else ():
            hop_mark, hop_style = _HOP_MARK.get(hop.get("status"), ("?", ""))
            lead = Text.assemble("    ", (f"{hop_mark} ", hop_style), (f"{hop.get('hop', '?'):<7}", "bold"))
            _hanging(console, lead, Text(str(hop.get("detail", ""))))
        if check.get("fix") and check["status"] not in ("ok", "skip"):
            _hanging(console, Text("    fix: ", style="cyan"), Text(check["fix"], style="cyan"))
        if verbose:
            _hanging(console, Text("    "), Text(f"{check['id']} · {check['duration_ms']} ms", style="dim"))
            for key, value in check["details"].items():
                if key != "hops":
                    shown = value if isinstance(value, str) else json.dumps(value)
                    _hanging(console, Text(f"    {key}: ", style="dim"), Text(shown, style="dim"))
    counts = data["summary"]
    parts = [f"{counts['ok']} ok", f"{counts['warn']} warning{'s' if counts['warn'] != 1 else ''}",
             f"{counts['fail']} failed", f"{counts['skip']} skipped",
             f"{counts['error']} error{'s' if counts['error'] != 1 else ''}"]
    console.print()
    total = f"{len(checks)} check{'s' if len(checks) != 1 else ''}: "
    _hanging(console, Text(""), Text(total + " · ".join(parts)))
    problems = counts["fail"] + counts["error"]
    if problems:
        verdict = Text(f"{problems} problem{'s' if problems != 1 else ''} found: apply the fix under each, then "
                       "run `halton-meter doctor` again.", style="bold red")
    elif counts["warn"]:
        verdict = Text(f"No problems; {counts['warn']} warning{'s' if counts['warn'] != 1 else ''} worth a look.",
                       style="bold yellow")
    else:
        verdict = Text("No problems found.", style="bold green")
    _hanging(console, Text(""), verdict)
