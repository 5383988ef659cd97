from __future__ import annotations

import sys
from typing import Any

import click

from halton_meter.cli._options import filter_options, filters_from, window_from, window_options
from halton_meter.config import load_config
from halton_meter.errors import UsageError
from halton_meter.timewindow import DEFAULT_SINCE


@click.command("report")
@window_options(DEFAULT_SINCE)
@click.option("--by", "by", multiple=True, metavar="DIM[,DIM…]",
              help="Group by project, model, provider, client, branch, key, day or hour (local); several nest in "
                   "the order given (--by project,model). Default: project.")
@filter_options
@click.option("--vs-previous", is_flag=True, help="Also show the change against the previous window of the same "
                                                  "length.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema in the README).")
@click.option("--csv", "as_csv", is_flag=True, help="Print one CSV row per group, with a header row.")
def command(by: tuple[str, ...], vs_previous: bool, as_json: bool, as_csv: bool, **params: Any) -> None:
    """What was spent, on what, in a window: calls, tokens, cost, cache savings, latency, with notes on
    anything unpriced, estimated, incomplete or unmetered."""
    from halton_meter import report, terminal

    if as_json and as_csv:
        raise UsageError("--json and --csv cannot be combined: choose one format")
    config = load_config()
    window = window_from(params, DEFAULT_SINCE)
    grouping = report.parse_by(by) or report.DEFAULT_BY
    filters = filters_from(params, config.key_names)
    result = report.build(config.paths.db, window, by=grouping, filters=filters, vs_previous=vs_previous,
                          key_names=config.key_names)
    if as_json:
        terminal.print_json(result.to_json())
    elif as_csv:
        sys.stdout.write(result.to_csv())
    else:
        terminal.report(result.view())
