from __future__ import annotations

import datetime

import click

from halton_meter.config import load_config
from halton_meter.timewindow import parse_moment


@click.command("report")
@click.option("--since", default="30d", show_default=True,
              help="Start of the window: 7d, 24h, 90m, a date (2026-11-01, local midnight) or an ISO time.")
@click.option("--until", default=None, help="End of the window (same forms; default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def command(since: str, until: str | None, as_json: bool) -> None:
    """Totals, and breakdowns by project and by model, for a time window."""
    from halton_meter import terminal
    from halton_meter.store.queries import Report, Totals, build_report, open_reader

    config = load_config()
    now = datetime.datetime.now(datetime.UTC)
    start = parse_moment(since, now, "--since")
    end = parse_moment(until, now, "--until") if until else now
    if start >= end:
        raise click.UsageError(f"--since ({since}) must be before --until ({until or 'now'})")
    since_iso, until_iso = (m.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for m in (start, end))
    if config.paths.db.exists():
        report = build_report(open_reader(config.paths.db), since_iso, until_iso)
    else:
        report = Report(since_iso, until_iso, Totals())
    data = report.to_json()
    if as_json:
        terminal.print_json(data)
    else:
        terminal.report(data)
