"""`halton-meter report --team` and `projects --team`: the whole team's calls from the [[sync]] target a team
can query (the team Postgres, docs/sync.md), grouped by user, machine, project, provider, model, client,
branch, key or day (UTC), with `report`'s filters and `--vs-previous`.

It reads what every meter has synced, so it equals the sum of each member's own `report` for the same
window, filters and grouping (days are UTC days here: every member's rows meet in one place, whatever their
zone).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from halton_meter import terminal
from halton_meter.config import Config
from halton_meter.errors import HaltonError, UsageError
from halton_meter.timewindow import Window
from halton_meter.types import nanos_to_usd

SUMS = ("calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_nanos",
        "subscription_cost_nanos")
FILTERS = {"projects": "project", "models": "model", "providers": "provider", "clients": "client",
           "branches": "branch"}
"""`report`'s filter options (their click destinations) → team dimension; `--key` is resolved apart."""


def _by(values: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out or ["user"]


def team_filters(config: Config, params: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The filter options given (`--project acme --model 'claude-*' --key team`) as team filters."""
    from halton_meter.report import key_filter

    filters = {dim: tuple(params.get(dest) or ()) for dest, dim in FILTERS.items()}
    filters["key"] = key_filter(params.get("keys") or (), config.key_names)
    return {dim: values for dim, values in filters.items() if values}


def _query(config: Config) -> tuple[Any, Any]:
    from halton_meter.host import PluginHost

    targets = PluginHost(config).load().registries.sync_targets
    usable = [(s, targets.get(f"sync.{s.target}")) for s in config.sync if f"sync.{s.target}" in targets.ids()]
    usable = [(s, t) for s, t in usable if t.team_rows is not None]
    if not usable:
        raise UsageError("--team reads the team's database: add a [[sync]] block with target = \"postgres\" "
                         "(see docs/sync.md)")
    return usable[0]


def _rows(settings: Any, target: Any, window: Window, by: list[str],
          filters: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    try:
        groups: list[dict[str, Any]] = target.team_rows(settings.options, window.since_iso, window.until_iso, by,
                                                        filters)
    except HaltonError:
        raise
    except Exception as exc:  # noqa: BLE001  # the database is down, the password wrong: one line
        raise HaltonError(f"cannot read the team database ({settings.name}): {' '.join(str(exc).split())[:200]}; "
                          "`halton-meter sync status` shows the target") from None
    return groups


def _money(row: dict[str, Any]) -> None:
    row["cost_usd"] = nanos_to_usd(row["cost_nanos"])
    row["subscription_list_price_usd"] = nanos_to_usd(row["subscription_cost_nanos"])


def change(now: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per sum: {"abs", "pct"} against the previous window (pct null when the previous was 0), money in USD."""
    out: dict[str, dict[str, Any]] = {}
    for name in SUMS:
        a, b = int(now.get(name) or 0), int(before.get(name) or 0)
        key = {"cost_nanos": "cost_usd", "subscription_cost_nanos": "subscription_list_price_usd"}.get(name, name)
        diff: Any = nanos_to_usd(a - b) if key != name else a - b
        out[key] = {"abs": diff, "pct": None if b == 0 else round((a - b) * 100 / b, 1)}
    return out


def team_document(config: Config, window: Window, by: list[str], filters: Mapping[str, Sequence[str]] | None = None,
                  *, vs_previous: bool = False) -> dict[str, Any]:
    settings, target = _query(config)
    filters = dict(filters or {})
    groups = _rows(settings, target, window, by, filters)
    groups.sort(key=lambda g: (-g["cost_nanos"], -g["calls"], [str(g[d]) for d in by]))
    totals: dict[str, Any] = {name: sum(g[name] for g in groups) for name in SUMS}
    document: dict[str, Any] = {"team": True, "target": settings.name, "window": window.label,
                                "since": window.since_iso, "until": window.until_iso, "by": by,
                                "filters": {k: list(v) for k, v in filters.items()}, "groups": groups,
                                "totals": totals}
    if vs_previous:
        before_window = window.previous()
        before = {tuple(g[d] for d in by): g for g in _rows(settings, target, before_window, by, filters)}
        empty = dict.fromkeys(SUMS, 0)
        for group in groups:
            group["previous"] = {n: before.get(tuple(group[d] for d in by), empty)[n] for n in SUMS}
            group["change"] = change(group, group["previous"])
        before_totals = {name: sum(g[name] for g in before.values()) for name in SUMS}
        totals["previous"], totals["change"] = before_totals, change(totals, before_totals)
        document["previous"] = {"window": before_window.label, "since": before_window.since_iso,
                                "until": before_window.until_iso}
        for row in (*[g["previous"] for g in groups], before_totals):
            _money(row)
    for row in (*groups, totals):
        _money(row)
    return document


def show_team(config: Config, window: Window, by_values: tuple[str, ...], *, as_json: bool, as_csv: bool,
              vs_previous: bool, params: dict[str, Any]) -> None:
    by = _by(by_values)
    document = team_document(config, window, by, team_filters(config, params), vs_previous=vs_previous)
    if as_json:
        terminal.print_json(document)
        return
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out)
        extra = [f"{n}_{part}" for n in SUMS for part in ("previous", "change", "change_pct")] if vs_previous else []
        writer.writerow([*by, *SUMS, *extra])
        for group in document["groups"]:
            row = [group[d] for d in by] + [group[n] for n in SUMS]
            if vs_previous:
                for name in SUMS:
                    key = {"cost_nanos": "cost_usd", "subscription_cost_nanos": "subscription_list_price_usd"}.get(
                        name, name)
                    row += [group["previous"][name], group["change"][key]["abs"], group["change"][key]["pct"]]
            writer.writerow(row)
        sys.stdout.write(out.getvalue())
        return
    from rich.table import Table

    title = f"Team · {document['window']} · from {document['target']}"
    if document["filters"]:
        title += " · " + ", ".join(f"{k} {'|'.join(v)}" for k, v in document["filters"].items())
    table = Table(title=title, box=None)
    for name in by:
        table.add_column(name)
    for name in ("calls", "tokens in", "tokens out", "cost", *(["vs previous"] if vs_previous else []),
                 "† list price"):
        table.add_column(name, justify="right")
    total_row = {**document["totals"], **{d: "total" if i == 0 else "" for i, d in enumerate(by)}}
    for group in [*document["groups"], total_row]:
        cells = [str(group[d] or "(none)") for d in by]
        cells += [f"{group['calls']:,}", terminal.compact(group["input_tokens"]),
                  terminal.compact(group["output_tokens"]), terminal.usd_short(group["cost_usd"])]
        if vs_previous:
            moved = group["change"]["cost_usd"]
            cells.append("—" if moved["pct"] is None else f"{moved['pct']:+.0f}%")
        cells.append(terminal.usd_short(group["subscription_list_price_usd"]))
        table.add_row(*cells)
    terminal.console().print(table)
    if not document["groups"]:
        terminal.console().print(f"No team calls ({document['window']}).")


def show_team_projects(config: Config, window: Window, as_json: bool) -> None:
    """`projects --team`: every project the team's meters have synced, with calls, cost, last seen and how
    many people and machines worked on it."""
    document = team_document(config, window, ["project"])
    projects = [{"project": g["project"], "calls": g["calls"], "cost_usd": g["cost_usd"],
                 "subscription_list_price_usd": g["subscription_list_price_usd"], "users": g["users"],
                 "machines": g["machines"], "last_seen": g["last_seen"]} for g in document["groups"]]
    data = {"team": True, "target": document["target"], "window": document["window"], "since": document["since"],
            "until": document["until"], "projects": projects}
    if as_json:
        terminal.print_json(data)
        return
    console = terminal.console()
    if not projects:
        console.print(f"No team projects with calls ({data['window']}).")
        return
    table = terminal.table([("project", "left"), ("calls", "right"), ("cost", "right"), ("people", "right"),
                            ("machines", "right"), ("last seen", "left")], wrap=("project",))
    for p in projects:
        table.add_row(p["project"] or "(none)", terminal.compact(p["calls"]), terminal.usd_short(p["cost_usd"]),
                      str(p["users"]), str(p["machines"]),
                      terminal.local_time(p["last_seen"])[:16] if p["last_seen"] else "—")
    console.print(table)
