from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from halton_meter import terminal
from halton_meter.cli._options import now
from halton_meter.config import load_config
from halton_meter.errors import UsageError
from halton_meter.terminal import local_time, money, tokens
from halton_meter.types import SELF_TEST_KIND, CallRecord

if TYPE_CHECKING:
    from halton_meter.store.queries import CallFilters
    from halton_meter.types import CallRecord

POLL_MIN, POLL_MAX = 0.1, 10.0


@click.command("calls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of call records (with --follow: one JSON "
                                                      "object per line).")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="Show the most recent N calls (0: all). Default 50; 10 with --follow.")
@click.option("--project", "projects", multiple=True, metavar="NAME", help="Only this project; repeat for several.")
@click.option("--model", "models", multiple=True, metavar="NAME",
              help="Only this model (globs like 'gpt-5*' work); repeat for several.")
@click.option("--provider", "providers", multiple=True, metavar="NAME", help="Only this provider; repeat for several.")
@click.option("--client", "clients", multiple=True, metavar="NAME", help="Only this tool; repeat for several.")
@click.option("--status", "statuses", multiple=True, metavar="STATUS",
              help="ok, error, incomplete, in-progress, an HTTP status (429) or class (5xx); repeat for several.")
@click.option("--since", default=None, metavar="WHEN", help="Only calls since: 7d, 24h, 90m, a date or an ISO time.")
@click.option("--until", default=None, metavar="WHEN", help="Only calls before this time.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing calls as they end, until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(POLL_MIN, POLL_MAX), default=1.0, show_default=True,
              metavar="SECONDS", help="With --follow: how often to look for new calls.")
def command(as_json: bool, limit: int | None, projects: tuple[str, ...], models: tuple[str, ...],
            providers: tuple[str, ...], clients: tuple[str, ...], statuses: tuple[str, ...], since: str | None,
            until: str | None, follow: bool, interval: float) -> None:
    """List recorded calls, oldest first; --follow keeps printing them as they end."""
    from halton_meter import terminal
    from halton_meter.store.queries import CallFilters, list_calls, open_reader, parse_status
    from halton_meter.store.schema import initialised
    from halton_meter.timewindow import iso, resolve_window

    config = load_config()
    statuses = parse_status(statuses)
    window = None
    if since is not None or until is not None:
        window = resolve_window(since=since, until=until, default_since=None, now=now())
    if follow and until is not None:
        raise UsageError("--follow shows calls as they end: it cannot be combined with --until")
    if follow and "in-progress" in statuses:
        raise UsageError("--follow shows calls when they end, so never in progress: drop --status in-progress")
    filters = CallFilters(projects=projects, models=models, providers=providers, clients=clients, statuses=statuses,
                          since=iso(window.since) if window and since is not None else None,
                          until=iso(window.until) if window and until is not None else None)
    if limit is None:
        limit = 10 if follow else 50
    if follow:
        _follow(config.paths.db, limit, filters, as_json, interval)
        return
    records = []
    if initialised(config.paths.db):
        records = list_calls(open_reader(config.paths.db), limit or None, filters)
    if as_json:
        terminal.print_json([r.to_public() for r in records])
    elif not records:
        if filters != CallFilters():
            terminal.line("No calls match.")
        else:
            terminal.line("No calls recorded yet. Start the meter with `halton-meter serve`, then "
                          "`halton-meter run -- <your tool>`.")
    else:
        calls_table(records)


def _follow(db: Path, limit: int, filters: CallFilters, as_json: bool, interval: float) -> None:
    """Print the last `limit` calls that ended, then every call as it ends, until Ctrl-C (exit 0)."""
    from halton_meter.store.queries import Tail, list_calls, open_reader, tail_poll, tail_start
    from halton_meter.store.schema import initialised

    def emit(records: list[CallRecord]) -> None:
        for record in records:
            if as_json:
                sys.stdout.write(json.dumps(record.to_public(), separators=(",", ":")) + "\n")
            else:
                call_line(record)
        sys.stdout.flush()

    try:
        if not as_json:
            call_line_header()
        engine = open_reader(db) if initialised(db) else None
        tail = Tail()
        if engine is not None:
            tail = tail_start(engine)
            ended = replace(filters, statuses=filters.statuses or ("ok", "error", "incomplete"))
            emit(list_calls(engine, limit or None, ended, up_to_rowid=tail.last_rowid))
        while True:
            time.sleep(interval)
            if engine is None:  # no database yet: the meter creates it on its first start
                if not initialised(db):
                    continue
                engine = open_reader(db)
            emit(tail_poll(engine, tail, filters))
    except KeyboardInterrupt:
        sys.stdout.flush()


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
    header = _LINE.format("time", "provider", "model", "in", "out", "cost", "project", "status")
    terminal.console().print(Text(header, style="bold"), soft_wrap=True)


def call_line(r: CallRecord) -> None:
    """`calls --follow`: one call per line, aligned with `call_line_header`."""
    cost = money(r.cost_nanos) if r.billable or r.cost_nanos is None else "—"
    text = _LINE.format(local_time(r.started_at)[5:], r.provider, r.model or "—", tokens(r.input_tokens),
                        tokens(r.output_tokens), cost, _project_text(r), _status_text(r))
    terminal.console().print(Text(text), soft_wrap=True)


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
    console = terminal.console()
    columns, gap = calls_layout(records, console.width)
    needed = sum(c.width for c in columns) + gap * (len(columns) - 1)
    if needed > console.width:  # only figures left: longer lines, never a cut number
        console = terminal.console(width=needed)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold",
                  padding=(0, 1) if gap == 2 else (0, 0, 0, 1))
    for column in columns:
        table.add_column(column.name, justify=column.justify, width=column.width,  # type: ignore[arg-type]
                         no_wrap=True, overflow="ellipsis")
    for row in zip(*(c.cells for c in columns), strict=True):
        table.add_row(*(Text(cell) for cell in row))  # names are not markup
    console.print(table)
