from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from halton_meter import terminal
from halton_meter.cli._options import window_from, window_options
from halton_meter.config import load_config
from halton_meter.terminal import compact, cost_cell, local_time


@click.command("projects")
@window_options(None)
@click.option("--json", "as_json", is_flag=True, help="Print the projects as JSON.")
@click.option("--team", is_flag=True, help="The whole team's projects, from the [[sync]] Postgres (docs/sync.md): "
                                           "calls, cost, people and machines.")
def command(as_json: bool, team: bool, **params: Any) -> None:
    """Projects with calls: calls, cost, when last seen, and where their attribution came from."""
    from halton_meter import terminal
    from halton_meter.store.queries import open_reader, project_summaries
    from halton_meter.store.schema import initialised

    config = load_config()
    window = window_from(params, None)
    if team:
        from halton_meter.cli.team import show_team_projects

        show_team_projects(config, window, as_json)
        return
    summaries = []
    if initialised(config.paths.db):
        summaries = project_summaries(open_reader(config.paths.db), window.since_iso, window.until_iso)
    data = {"window": window.label, "since": window.since_iso, "until": window.until_iso,
            "projects": [s.to_json() for s in summaries]}
    if as_json:
        terminal.print_json(data)
    else:
        show_projects(data)


def show_projects(data: dict[str, Any]) -> None:
    """`halton-meter projects`: takes its JSON document."""
    console = terminal.console()
    if not data["projects"]:
        console.print(f"No projects with calls ({data['window']}).")
        return
    table = terminal.table([("project", "left"), ("calls", "right"), ("cost", "right"), ("last seen", "left"),
                            ("attributed by", "left")], wrap=("project", "attributed by"))
    for p in data["projects"]:
        total = sum(s["calls"] for s in p["sources"]) or 1
        sources = ", ".join(f"{s['name']} {s['calls'] * 100 // total}%" for s in p["sources"][:2])
        if len(p["sources"]) > 2:
            sources += ", …"
        cost = cost_cell({"cost_usd": p["cost_usd"], "unpriced_calls": p["unpriced_calls"],
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
