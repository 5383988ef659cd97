from __future__ import annotations

from typing import Any

import click

from halton_meter.cli._options import window_from, window_options
from halton_meter.config import load_config


@click.command("projects")
@window_options(None)
@click.option("--json", "as_json", is_flag=True, help="Print the projects as JSON.")
def command(as_json: bool, **params: Any) -> None:
    """Projects with calls: calls, cost, when last seen, and where their attribution came from."""
    from halton_meter import terminal
    from halton_meter.store.queries import open_reader, project_summaries
    from halton_meter.store.schema import initialised

    config = load_config()
    window = window_from(params, None)
    summaries = []
    if initialised(config.paths.db):
        summaries = project_summaries(open_reader(config.paths.db), window.since_iso, window.until_iso)
    data = {"window": window.label, "since": window.since_iso, "until": window.until_iso,
            "projects": [s.to_json() for s in summaries]}
    if as_json:
        terminal.print_json(data)
    else:
        terminal.projects(data)
