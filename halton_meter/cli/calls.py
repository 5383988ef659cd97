from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from halton_meter.cli._options import now
from halton_meter.config import load_config
from halton_meter.errors import UsageError

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
        terminal.calls_table(records)


def _follow(db: Path, limit: int, filters: CallFilters, as_json: bool, interval: float) -> None:
    """Print the last `limit` calls that ended, then every call as it ends, until Ctrl-C (exit 0)."""
    from halton_meter import terminal
    from halton_meter.store.queries import Tail, list_calls, open_reader, tail_poll, tail_start
    from halton_meter.store.schema import initialised

    def emit(records: list[CallRecord]) -> None:
        for record in records:
            if as_json:
                sys.stdout.write(json.dumps(record.to_public(), separators=(",", ":")) + "\n")
            else:
                terminal.call_line(record)
        sys.stdout.flush()

    try:
        if not as_json:
            terminal.call_line_header()
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
