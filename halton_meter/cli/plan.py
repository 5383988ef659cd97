"""`halton-meter plan`: the Claude and ChatGPT plan windows (and API-key rate limits) as the providers last
reported them, with pace, projection and who used them. The figures come from `halton_meter.plan`; this
module only opens the database read-only and draws them."""

from __future__ import annotations

import datetime
from typing import Any

import click
from rich.text import Text

from halton_meter import terminal

BY = ("project", "client", "branch")
HOW = ("plan limits appear after the first call through the meter from a tool signed in with a Claude or "
       "ChatGPT plan (Claude Code, Codex).")
NO_DATA = f"No plan limits seen yet: {HOW}"
PROVIDER_NAMES = {"anthropic": "Claude", "codex": "ChatGPT (Codex)", "openai": "OpenAI"}
BAR = 10


@click.command("plan")
@click.option("--by", "by", type=click.Choice(BY), default="project", show_default=True,
              help="Who used each window: per project, tool (client) or git branch.")
@click.option("--json", "as_json", is_flag=True, help="Print every window's state as JSON.")
def command(by: str, as_json: bool) -> None:
    """Your plan limits: how much of each window is used, when it resets, the pace, when it would run out at
    that pace, and which projects used it (this machine's calls only)."""
    data = collect()
    if as_json:
        terminal.print_json(data)
    else:
        show_plan(data, by)


def collect() -> dict[str, Any]:
    """The JSON document: {"now", "windows": [plan windows], "api": [API-key rate limits]}."""
    from halton_meter import plan
    from halton_meter.attribution.keys import key_label
    from halton_meter.cli._options import now
    from halton_meter.clock import utc_stamp
    from halton_meter.config import load_config
    from halton_meter.store.aggregate import snapshot
    from halton_meter.store.schema import initialised

    config = load_config()
    moment = now().timestamp()
    states: list[plan.WindowState] = []
    if initialised(config.paths.db):
        with snapshot(config.paths.db) as conn:
            states = plan.current(conn, moment)
    rows = []
    for s in states:
        row = s.to_json()
        row["account_label"] = key_label(s.account, config.key_names) if s.account else None
        rows.append(row)
    return {"now": utc_stamp(moment), "windows": [r for r in rows if not r["api"]],
            "api": [r for r in rows if r["api"]]}


# ---- drawing -------------------------------------------------------------------------------------------------

def _moment(iso: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()


def clock_text(iso: str, now: datetime.datetime) -> str:
    """A local time: `16:40` today, `Mon 09:00` within the week, else `2026-11-30 09:00`."""
    moment, today = _moment(iso), now.astimezone().date()
    if moment.date() == today:
        return moment.strftime("%H:%M")
    if abs((moment.date() - today).days) < 7:
        return moment.strftime("%a %H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def span(seconds: float) -> str:
    """`2h 14m`, `3d 4h`, `12m`, `<1m`."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "<1m"
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {mins:02d}m" if hours else f"{mins}m"


def bar(utilization: float) -> str:
    filled = min(BAR, max(0, round(utilization * BAR)))
    return "█" * filled + "░" * (BAR - filled)


def style_for(row: dict[str, Any]) -> str:
    """The same levels as the statusline and the dashboard: red when rejected or at 90 % and more, yellow
    from 75 % or when the provider warns."""
    status, used = row["status"] or "", row["utilization"] or 0
    if status.startswith("rejected") or used >= 0.9:
        return "red"
    if status == "allowed_warning" or used >= 0.75:
        return "yellow"
    return ""


def _account(row: dict[str, Any]) -> str:
    return row.get("account_label") or row["account"] or "(no key)"


def _used(row: dict[str, Any]) -> Text:
    if row["utilization"] is None:
        return Text("—")
    return Text(f"{bar(row['utilization'])} {row['utilization'] * 100:4.0f}%", style=style_for(row))


def _resets(row: dict[str, Any], now: datetime.datetime) -> str:
    if not row["resets_at"]:
        return "—"
    if row["reset"]:
        return f"reset at {clock_text(row['resets_at'], now)}"
    left = (_moment(row["resets_at"]) - now).total_seconds()
    return f"{clock_text(row['resets_at'], now)} (in {span(left)})"


def _runs_out(row: dict[str, Any], now: datetime.datetime) -> str:
    if row["reset"]:
        return "—"
    if row["runs_out_at"]:
        if (row["utilization"] or 0) >= 1:
            return "used up"
        return clock_text(row["runs_out_at"], now)
    return "lasts until reset" if row["outlasts_reset"] else "—"


def _pace(row: dict[str, Any]) -> str:
    return "—" if row["burn_per_hour"] is None else f"{row['burn_per_hour'] * 100:+.1f}%/h"


def _status(row: dict[str, Any]) -> Text:
    if row["reset"]:
        return Text("new window", style="dim")
    return Text(row["status"] or "—", style=style_for(row))


def show_plan(data: dict[str, Any], by: str = "project") -> None:
    """`halton-meter plan`: takes `collect()`'s JSON document."""
    console = terminal.console()
    if not data["windows"] and not data["api"]:
        console.print(NO_DATA, soft_wrap=True)
        return
    now = _moment(data["now"])
    accounts: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in data["windows"]:
        accounts.setdefault((row["provider"], _account(row)), []).append(row)
    for (provider, account), rows in accounts.items():
        title = f"{PROVIDER_NAMES.get(provider, provider)} plan · {account}"
        table = terminal.table([("window", "left"), ("used", "left"), ("resets", "left"), ("pace", "right"),
                                ("runs out", "left"), ("status", "left")], title=title)
        for row in rows:
            table.add_row(Text(row["window"], style="bold"), _used(row), _resets(row, now), _pace(row),
                          _runs_out(row, now), _status(row))
        console.print(table)
        console.print()
        for row in rows:
            _who(console, row, by, now)
    if data["api"]:
        _api_table(console, data["api"], now)


def _who(console: Any, row: dict[str, Any], by: str, now: datetime.datetime) -> None:
    shares = row["by"].get(by) or []
    if row["reset"] or not shares:
        return
    since = clock_text(row["instance_start"], now) if row["instance_start"] else "?"
    head = (f"Who used {row['window']} (since {since}: {row['used_points']:.1f} pp seen here"
            + (f", {row['baseline'] * 100:.0f}% before the meter saw it)" if row["baseline"] else ")"))
    console.print(Text(head, style="bold"), soft_wrap=True)
    table = terminal.table([(by, "left"), ("pp", "right"), ("API-equivalent cost", "right"), ("calls", "right")],
                           wrap=(by,))
    for share in shares:
        table.add_row(Text(share["name"]), f"{share['points']:.1f}", terminal.usd_short(share["cost_usd"]),
                      terminal.compact(share["calls"]))
    console.print(table)
    console.print()


def _api_table(console: Any, rows: list[dict[str, Any]], now: datetime.datetime) -> None:
    table = terminal.table([("provider", "left"), ("account", "left"), ("limit", "left"), ("used", "right"),
                            ("remaining", "right"), ("resets", "left")], title="API-key rate limits")
    for row in rows:
        used = "—" if row["utilization"] is None else f"{row['utilization'] * 100:.0f}%"
        remaining = "—" if row["remaining"] is None else terminal.compact(row["remaining"])
        if row["limit_value"] is not None:
            remaining += f" of {terminal.compact(row['limit_value'])}"
        table.add_row(row["provider"], Text(_account(row)), row["window"], Text(used, style=style_for(row)),
                      remaining, _resets(row, now))
    console.print(table)
