"""`halton-meter report --team`: the whole team's calls from the [[sync]] target a team can query (the team
Postgres, docs/sync.md), grouped by user, machine, project, provider, model, client, branch or day (UTC).

It reads what every meter has synced, so it equals the sum of each member's own `report` for the same
window and grouping (days are UTC days here: every member's rows meet in one place, whatever their zone).
Filters (`--project` …) and `--vs-previous` are not offered with `--team` yet; they are refused rather than
ignored.
"""

from __future__ import annotations

import csv
import io
import sys
from typing import Any

from halton_meter import terminal
from halton_meter.config import Config
from halton_meter.errors import HaltonError, UsageError
from halton_meter.timewindow import Window
from halton_meter.types import nanos_to_usd

SUMS = ("calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_nanos",
        "subscription_cost_nanos")


def _by(values: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out or ["user"]


def team_document(config: Config, window: Window, by: list[str]) -> dict[str, Any]:
    from halton_meter.host import PluginHost

    targets = PluginHost(config).load().registries.sync_targets
    usable = [(s, targets.get(f"sync.{s.target}")) for s in config.sync if f"sync.{s.target}" in targets.ids()]
    usable = [(s, t) for s, t in usable if t.team_rows is not None]
    if not usable:
        raise UsageError("--team reads the team's database: add a [[sync]] block with target = \"postgres\" "
                         "(see docs/sync.md)")
    settings, target = usable[0]
    assert target.team_rows is not None
    try:
        groups = target.team_rows(settings.options, window.since_iso, window.until_iso, by)
    except HaltonError:
        raise
    except Exception as exc:  # noqa: BLE001  # the database is down, the password wrong: one line
        raise HaltonError(f"cannot read the team database ({settings.name}): {' '.join(str(exc).split())[:200]}; "
                          "`halton-meter sync status` shows the target") from None
    groups.sort(key=lambda g: (-g["cost_nanos"], -g["calls"], [str(g[d]) for d in by]))
    totals = {name: sum(g[name] for g in groups) for name in SUMS}
    for row in (*groups, totals):
        row["cost_usd"] = nanos_to_usd(row["cost_nanos"])
        row["subscription_list_price_usd"] = nanos_to_usd(row["subscription_cost_nanos"])
    return {"team": True, "target": settings.name, "window": window.label, "since": window.since_iso,
            "until": window.until_iso, "by": by, "groups": groups, "totals": totals}


def show_team(config: Config, window: Window, by_values: tuple[str, ...], *, as_json: bool, as_csv: bool,
              vs_previous: bool, params: dict[str, Any]) -> None:
    if vs_previous or any(params.get(name) for name in ("project", "model", "provider", "client", "branch", "key")):
        raise UsageError("--team takes a window and --by only (filters and --vs-previous are not offered with it yet)")
    by = _by(by_values)
    document = team_document(config, window, by)
    if as_json:
        terminal.print_json(document)
        return
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([*by, *SUMS])
        for group in document["groups"]:
            writer.writerow([group[d] for d in by] + [group[n] for n in SUMS])
        sys.stdout.write(out.getvalue())
        return
    from rich.table import Table

    table = Table(title=f"Team · {document['window']} · from {document['target']}", box=None)
    for name in by:
        table.add_column(name)
    for name in ("calls", "tokens in", "tokens out", "cost", "† list price"):
        table.add_column(name, justify="right")
    for group in [*document["groups"], {**document["totals"], **{d: "total" if i == 0 else "" for i, d in enumerate(by)}}]:
        table.add_row(*(str(group[d] or "(none)") for d in by), f"{group['calls']:,}",
                      terminal.compact(group["input_tokens"]), terminal.compact(group["output_tokens"]),
                      terminal.usd_short(nanos_to_usd(group["cost_nanos"])),
                      terminal.usd_short(nanos_to_usd(group["subscription_cost_nanos"])))
    terminal.console().print(table)

