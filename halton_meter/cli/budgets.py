"""`halton-meter budgets`: each budget's spend, limit and state (`halton_meter.budgets.view`, the same
document the dashboard shows); `budgets override NAME --for 1h` / `--clear` to let calls through a budget
for a while; `budgets history [NAME]` for what was alerted and overridden.

Reads are read-only and work without a database (every budget is then `unknown`). Overrides are written
to `budget_events` in the database (a `BEGIN IMMEDIATE` transaction on a short-lived connection), where the
running meter picks them up within a few seconds; without a database there is nothing to override (exit 3).
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from halton_meter import terminal

if TYPE_CHECKING:
    from halton_meter.budgets.spend import Event

DOCS = "docs/budgets.md"
NO_BUDGETS = f"No budgets configured: add [[budgets]] to config.toml to cap spend (see {DOCS})."
STATE_STYLE = {"ok": "green", "warned": "yellow", "blocked": "bold red", "overridden": "cyan", "unknown": "yellow"}
_DURATION = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")
MAX_OVERRIDE_SECONDS = 366 * 86400


@click.group("budgets", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print every budget's state as JSON.")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """Spend caps from [[budgets]] in config.toml: spent and limit this period, when it resets, and the
    state (ok, warned, blocked, overridden, unknown)."""
    if ctx.invoked_subcommand is not None:
        return
    from halton_meter.budgets.view import document
    from halton_meter.cli._options import now
    from halton_meter.config import load_config

    data = document(load_config(), now())
    if as_json:
        terminal.print_json(data)
    else:
        show_budgets(data)


@command.command("override")
@click.argument("name")
@click.option("--for", "span", metavar="DURATION", help="How long calls pass: 30m, 2h, 1d.")
@click.option("--clear", is_flag=True, help="End a running override now.")
@click.option("--json", "as_json", is_flag=True, help="Print the event written as JSON.")
def override(name: str, span: str | None, clear: bool, as_json: bool) -> None:
    """Let calls through budget NAME for a while (--for 1h), or end that (--clear). The running meter picks
    it up within a few seconds."""
    from halton_meter.budgets import spend
    from halton_meter.cli._options import now
    from halton_meter.clock import utc_stamp
    from halton_meter.config import load_config
    from halton_meter.errors import UsageError

    if (span is None) == (not clear):
        raise UsageError("say --for DURATION (like --for 1h) to override, or --clear to end an override")
    config = load_config()
    budget = next((b for b in config.budgets if b.name == name), None)
    if budget is None:
        names = ", ".join(b.name for b in config.budgets)
        raise UsageError(f"no budget named {name!r} in config.toml; "
                         + (f"the budgets are: {names}" if names else f"none are configured (see {DOCS})"))
    moment = now()
    seconds = None if span is None else duration_seconds(span)
    until = None if seconds is None else utc_stamp(moment + datetime.timedelta(seconds=seconds))
    event = spend.Event(at=utc_stamp(moment), budget=name, period_start=spend.period_start(budget, moment),
                        kind="override_cleared" if clear else "override", until=until,
                        detail="halton-meter budgets override")
    was_running = write_event(config.paths.db, event, moment)
    if as_json:
        terminal.print_json(event.to_json())
    elif clear:
        terminal.line(f"Override of budget {name} cleared: its limit applies again." if was_running else
                      f"No override of budget {name} was running; its limit applies.")
    else:
        assert until is not None and seconds is not None
        from halton_meter.cli.plan import clock_text
        from halton_meter.cli.plan import span as span_text

        terminal.line(f"Budget {name} overridden until {clock_text(until, moment)} (in {span_text(seconds)}): "
                      f"calls pass. The running meter picks this up within a few seconds; "
                      f"`halton-meter budgets override {name} --clear` ends it sooner.")


@command.command("history")
@click.argument("name", required=False)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000),
              help="How many events (newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
def history(name: str | None, limit: int, as_json: bool) -> None:
    """What budgets alerted (warn, limit, spend unknown) and who overrode them, newest first."""
    from halton_meter.budgets import spend
    from halton_meter.config import load_config
    from halton_meter.store.aggregate import snapshot
    from halton_meter.store.schema import initialised

    config = load_config()
    events: list[spend.Event] = []
    if initialised(config.paths.db):
        with snapshot(config.paths.db) as conn:
            events = spend.history(conn, name, limit=limit)
    if as_json:
        terminal.print_json({"budget": name, "events": [e.to_json() for e in events]})
        return
    show_history(events, name, [b.name for b in config.budgets])


# ---- writing ---------------------------------------------------------------------------------------------

def duration_seconds(text: str) -> int:
    """`30m`, `2h`, `1d` → seconds; UsageError otherwise."""
    from halton_meter.errors import UsageError

    match = _DURATION.match(text)
    seconds = int(match.group(1)) * {"m": 60, "h": 3600, "d": 86400}[match.group(2)] if match else 0
    if not 0 < seconds <= MAX_OVERRIDE_SECONDS:
        raise UsageError(f"--for {text!r} is not a duration: write minutes, hours or days like 30m, 2h or 1d "
                         "(at most 366d)")
    return seconds


def write_event(db: Path, event: Event, moment: datetime.datetime) -> bool:
    """Store an override event; returns whether an override was running just before. DatabaseError (exit 3)
    when there is no database (or one too old to hold budget events)."""
    import sqlite3

    from halton_meter.budgets import spend
    from halton_meter.errors import DatabaseError
    from halton_meter.store.schema import connect, immediate, initialised

    if not initialised(db):
        raise DatabaseError(f"no database at {db} yet: start the meter (`halton-meter start`) so it creates one, "
                            "then override again")
    conn = connect(db)
    try:
        if not spend.has_events_table(conn):
            raise DatabaseError(f"database {db} predates budgets: restart the meter (`halton-meter restart`) so it "
                                "upgrades the database, then override again")
        with immediate(conn):
            was_running = event.budget in spend.overrides(conn, moment)
            spend.record(conn, event)
        return was_running
    except sqlite3.OperationalError as exc:
        raise DatabaseError(f"cannot write to database {db} ({exc}); try again, or `halton-meter doctor` "
                            "says what is wrong") from None
    finally:
        conn.close()


# ---- drawing ---------------------------------------------------------------------------------------------

def _scope(scope: dict[str, list[str]]) -> str:
    if not scope:
        return "all calls"
    return ", ".join(f"{k}={'|'.join(v)}" for k, v in scope.items())


BAR = 6
WIDE = 130
"""From this many columns the table shows scope, action and the local reset time too."""


def _share(row: dict[str, Any]) -> Text:
    if row["share"] is None:
        return Text("—")
    filled = min(BAR, max(0, round(row["share"] * BAR)))
    return Text(f"{'█' * filled}{'░' * (BAR - filled)} {row['share'] * 100:3.0f}%",
                style=STATE_STYLE.get(row["state"], ""))


def _when(iso: str, now: datetime.datetime) -> str:
    """A local time: `16:40` today, `Mon 09:00` within the week, else `Jan 01 00:00`."""
    moment = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    days = (moment.date() - now.astimezone().date()).days
    return moment.strftime("%H:%M" if days == 0 else "%a %H:%M" if abs(days) < 7 else "%b %d %H:%M")


def _resets(row: dict[str, Any], now: datetime.datetime, wide: bool = True) -> str:
    from halton_meter.cli.plan import span

    if row["period_end"] is None:
        return "window not seen yet" if row.get("plan_window") else "rolling"
    if not wide:
        return f"in {span(row['resets_in_seconds'])}"
    return f"{_when(row['period_end'], now)} (in {span(row['resets_in_seconds'])})"


def _spent(row: dict[str, Any]) -> str:
    from decimal import Decimal

    if row.get("plan_window"):  # a plan budget: the window's utilization against its limit
        used = "?" if row["utilization"] is None else f"{row['utilization'] * 100:.0f} %"
        return f"{row['plan_window']} {used} / {row['limit_plan'] * 100:.0f} %"
    if row["spent_nanos"] is None:
        return f"? / ${row['limit_usd']}"
    return f"{terminal.usd_short(str(Decimal(row['spent_nanos']).scaleb(-9)))} / ${row['limit_usd']}"


def _state(row: dict[str, Any], now: datetime.datetime) -> Text:
    text = row["state"]
    if row["state"] == "overridden" and row["override_until"]:
        text += f" until {_when(row['override_until'], now)}"
    if row["blocked_calls"]:
        text += f", {terminal.plural(row['blocked_calls'], 'call')} refused"
    return Text(text, style=STATE_STYLE.get(row["state"], ""))


def show_budgets(data: dict[str, Any]) -> None:
    """`halton-meter budgets`: takes `view.document`'s JSON."""
    console = terminal.console()
    if not data["budgets"]:
        console.print(Text(NO_BUDGETS), soft_wrap=True)
        return
    now = datetime.datetime.fromisoformat(data["now"].replace("Z", "+00:00")).astimezone()
    wide = console.width >= WIDE
    columns = [("budget", "left"), ("scope", "left"), ("period", "left"), ("action", "left"),
               ("spent / limit", "right"), ("share", "left"), ("resets", "left"), ("state", "left")]
    if not wide:  # 80 columns: scope and action go, resets says only how long
        columns = [c for c in columns if c[0] not in ("scope", "action")]
    table = terminal.table(columns, wrap=("scope", "state"))
    for row in data["budgets"]:
        cells: list[Any] = [Text(row["name"]), Text(_scope(row["scope"])), row["period"], row["action"],
                            _spent(row), _share(row), _resets(row, now, wide), _state(row, now)]
        table.add_row(*(cells if wide else [cells[0], *cells[2:3], *cells[4:]]))
    console.print(table)
    if data["database"]["problem"]:
        console.print(Text(f"Spend unknown: {data['database']['problem']}.", style="yellow"), soft_wrap=True)
    if any(r["state"] == "blocked" for r in data["budgets"]):
        console.print(Text("Blocked budgets refuse new calls until they reset; `halton-meter budgets override "
                           "NAME --for 1h` lets calls through."), soft_wrap=True)


def show_history(events: list[Event], name: str | None, configured: list[str]) -> None:
    console = terminal.console()
    if not events:
        what = f"budget {name}" if name else "any budget"
        hint = "" if not name or name in configured else (
            f" ({name!r} is not configured; the budgets are: {', '.join(configured) or 'none'})")
        console.print(Text(f"No events for {what} yet{hint}."), soft_wrap=True)
        return
    table = terminal.table([("when", "left"), ("budget", "left"), ("event", "left"), ("spent", "right"),
                            ("detail", "left")], wrap=("detail",))
    for e in events:
        table.add_row(terminal.local_time(e.at)[:16], Text(e.budget), _event_kind(e), _money(e.spent_nanos),
                      Text(_detail(e)))
    console.print(table)


def _event_kind(e: Event) -> Text:
    if e.kind == "warn" and e.threshold is not None:
        return Text(f"warn {round(e.threshold * 100, 1):g} %", style="yellow")
    styles = {"limit": "bold red", "override": "cyan", "override_cleared": "cyan", "spend_unknown": "yellow"}
    return Text(e.kind.replace("_", " "), style=styles.get(e.kind, ""))


def _money(nanos: int | None) -> str:
    from halton_meter.budget_config import usd

    return "—" if nanos is None else f"${usd(nanos)}"


def _detail(e: Event) -> str:
    if e.kind == "override" and e.until:
        return f"until {terminal.local_time(e.until)[:16]}"
    if e.kind == "limit" and e.limit_nanos is not None:
        return f"limit ${_money(e.limit_nanos)[1:]}"
    return e.detail or ""
