"""All terminal output. The only module that imports rich.

Honours NO_COLOR and COLUMNS; output written to a pipe has no colour. Errors go to stderr as one line.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from halton_meter.types import CallRecord, nanos_to_usd


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False, no_color="NO_COLOR" in os.environ or None)


def error(message: str) -> None:
    console = _console(stderr=True)
    console.print(Text.assemble(("halton-meter: ", "bold red"), ("error: ", "red"), message), soft_wrap=True)


def warn(message: str) -> None:
    _console(stderr=True).print(Text.assemble(("halton-meter: ", "bold yellow"), ("warning: ", "yellow"), message),
                                soft_wrap=True)


def line(message: str = "", style: str | None = None) -> None:
    _console().print(Text(message, style=style or ""), soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def money(nanos: int | None) -> str:
    if nanos is None:
        return "unpriced"
    usd = nanos_to_usd(nanos) or "0"
    whole, _, frac = usd.partition(".")
    frac = frac[:6] if abs(nanos) >= 10_000 else frac  # show sub-cent amounts in full
    return f"${whole}.{frac.rstrip('0').ljust(2, '0')}"


def tokens(n: int) -> str:
    return f"{n:,}"


def local_time(iso: str) -> str:
    moment = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _table(columns: Sequence[tuple[str, str]], title: str | None = None, wrap: Sequence[str] = ()) -> Table:
    """Columns never wrap (numbers and names stay whole) except those in `wrap`, which fold."""
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, box=None, header_style="bold")
    for name, justify in columns:
        if name in wrap:
            table.add_column(name, justify=justify, overflow="fold", ratio=1)  # type: ignore[arg-type]
        else:
            table.add_column(name, justify=justify, no_wrap=True, min_width=len(name))  # type: ignore[arg-type]
    return table


def calls_table(records: Iterable[CallRecord]) -> None:
    table = _table(
        [("time", "left"), ("provider", "left"), ("model", "left"), ("in", "right"), ("cache r/w", "right"),
         ("out", "right"), ("cost", "right"), ("project", "left"), ("status", "left")]
    )
    for r in records:
        status = str(r.status) if r.status is not None else "—"
        if r.error_type:
            status += f" {r.error_type}"
        if not r.complete:
            status += " (incomplete)"
        table.add_row(
            local_time(r.started_at),
            r.provider,
            r.model or "—",
            tokens(r.input_tokens),
            f"{tokens(r.cache_read_tokens)}/{tokens(r.cache_write_tokens)}",
            tokens(r.output_tokens),
            money(r.cost_nanos) if r.billable or r.cost_nanos is None else "—",
            r.project,
            status,
        )
    _console().print(table)


def plugins_table(plugins: Iterable[dict[str, Any]]) -> None:
    table = _table([("plugin", "left"), ("version", "left"), ("source", "left"), ("status", "left"),
                    ("provides", "left")], wrap=("provides",))
    for p in plugins:
        provides = " ".join(i for items in p["provides"].values() for i in items) or "—"
        status = Text(p["status"], style={"ok": "green", "error": "red"}.get(p["status"], "yellow"))
        table.add_row(p["name"], p["version"], p["source"], status, provides)
        if p["error"]:
            table.add_row("", "", "", "", Text(p["error"], style="red"))
    _console().print(table)


def report(data: dict[str, Any]) -> None:
    console = _console()
    totals = data["totals"]
    console.print(
        Text.assemble(
            ("Halton Meter report ", "bold"), f"{local_time(data['since'])} → {local_time(data['until'])}"
        )
    )
    if not totals["calls"]:
        console.print("No calls recorded in this window.")
        return
    console.print(
        f"{totals['calls']:,} calls · {tokens(totals['input_tokens'])} in · "
        f"{tokens(totals['cache_read_tokens'])} cache read · {tokens(totals['cache_write_tokens'])} cache write · "
        f"{tokens(totals['output_tokens'])} out · total {_usd_text(totals['cost_usd'])}"
    )
    notes = []
    if totals["subscription_calls"]:
        notes.append(
            f"{totals['subscription_calls']} call(s) were covered by a subscription (ChatGPT, Claude or Code Assist "
            f"sign-in): {_usd_text(totals['subscription_list_price_usd'])} at list prices, not charged per token "
            "and not in the total"
        )
    if totals["unpriced_calls"]:
        notes.append(
            f"{totals['unpriced_calls']} call(s) unpriced (unknown model or no usage reported): the total excludes them"
        )
    if totals["estimated_calls"]:
        notes.append(f"{totals['estimated_calls']} call(s) have estimated tokens (the provider reported none)")
    if totals["incomplete_calls"]:
        notes.append(f"{totals['incomplete_calls']} call(s) incomplete (stream cut or error): numbers may be short")
    if data.get("gaps"):
        notes.append(f"{data['gaps']} call(s) passed through unmetered while the core was down")
    for note in notes:
        console.print(Text("note: " + note, style="yellow"))
    for key, title in (("by_project", "project"), ("by_model", "model")):
        table = _table([(title, "left"), ("calls", "right"), ("in", "right"), ("cache r/w", "right"),
                        ("out", "right"), ("cost", "right")])
        for row in data[key]:
            table.add_row(
                str(row[title]), f"{row['calls']:,}", tokens(row["input_tokens"]),
                f"{tokens(row['cache_read_tokens'])}/{tokens(row['cache_write_tokens'])}",
                tokens(row["output_tokens"]), _usd_text(row["cost_usd"]),
            )
        console.print()
        console.print(table)


def _usd_text(value: str | None) -> str:
    if value is None:
        return "unpriced"
    from decimal import Decimal

    return money(int(Decimal(value).scaleb(9)))


def serving(runtime: dict[str, Any]) -> None:
    console = _console()
    console.print(Text("Halton Meter is metering.", style="bold green"))
    console.print(f"  proxy  127.0.0.1:{runtime['edge_port']}   wrap a command: halton-meter run -- claude")
    console.print(f"  api    127.0.0.1:{runtime['api_port']}")
    console.print(f"  data   {runtime['db']}")
    console.print("Stop with Ctrl-C.")


def _per_million(value: Any) -> str:
    """A per-million price, with long-context tiers: `$3 (>200k: $6)`."""
    if value is None:
        return "—"
    base = getattr(value, "base", value)
    text = f"${base.normalize():f}" if hasattr(base, "normalize") else f"${base}"
    for tier in getattr(value, "tiers", None) or ():
        text += f" (>{tier.start // 1000}k: ${tier.price.normalize():f})"
    return text


def sheet_json(sheet: Any) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if value is None:
            return None
        if hasattr(value, "base"):
            return {"base": str(value.base), "tiers": [{"above": t.start, "price": str(t.price)} for t in value.tiers]}
        return str(value)

    return {
        "provider": sheet.provider, "model": sheet.model, "source": sheet.source,
        "per_million_tokens": {k: plain(getattr(sheet, k)) for k in
                               ("input", "cache_read", "cache_write", "cache_write_1h", "output")},
        "web_searches_per_thousand": plain(sheet.web_searches_per_thousand),
        "variants": list(sheet.variants),
    }


def price_sheets(sheets: Iterable[Any]) -> None:
    console = _console()
    for sheet in sheets:
        console.print(Text.assemble((f"{sheet.provider} · {sheet.model}", "bold"), f"   from {sheet.source}"))
        table = _table([("per 1M tokens", "left"), ("price", "left")], wrap=("price",))
        for label, key in (("input", "input"), ("cache read", "cache_read"), ("cache write (5 min)", "cache_write"),
                           ("cache write (1 h)", "cache_write_1h"), ("output (incl. reasoning)", "output")):
            table.add_row(label, _per_million(getattr(sheet, key)))
        if sheet.web_searches_per_thousand is not None:
            table.add_row("web searches, per 1,000", _per_million(sheet.web_searches_per_thousand))
        console.print(table)
        if sheet.variants:
            console.print(f"  price variants: {'; '.join(sheet.variants)}")
        console.print()


def reprice(data: dict[str, Any]) -> None:
    console = _console()
    mode = "dry run: nothing written" if data["dry_run"] else ("written" if data["written"] else "nothing to write")
    console.print(Text.assemble(("Repriced ", "bold"), f"{data['examined']:,} calls "
                                f"{local_time(data['since'])} → {local_time(data['until'])} ({mode})"))
    console.print(f"  changed: {data['changed']:,} · now priced: {data['newly_priced']:,} · "
                  f"now unpriced: {data['newly_unpriced']:,}")
    console.print(f"  total: {_usd_text(data['before_usd'])} → {_usd_text(data['after_usd'])}")
    if data["by_model"]:
        table = _table([("model", "left"), ("calls", "right"), ("before", "right"), ("after", "right")])
        for row in data["by_model"][:20]:
            table.add_row(row["model"], f"{row['calls']:,}", _usd_text(row["before_usd"]), _usd_text(row["after_usd"]))
        console.print(table)


# ---- lifecycle: init, status, uninstall, logs ----------------------------------------------------------

_STEP_MARK = {"done": ("✓", "green"), "applied": ("✓", "green"), "skipped": ("–", "dim"), "undone": ("↺", "cyan"),
              "failed": ("✗", "bold red"), "apply": ("→", "yellow"), "undo": ("↺", "cyan")}


def init_step(index: int, total: int, title: str, status: str, detail: str) -> None:
    mark, style = _STEP_MARK.get(status, ("?", ""))
    words = {"done": "already in place", "applied": "done", "skipped": "skipped", "undone": "undone",
             "failed": "FAILED", "apply": "will apply", "undo": "will undo"}[status]
    text = Text.assemble((f"{index}/{total} ", "dim"), (f"{mark} ", style), f"{title}: ", (words, style))
    if detail and detail not in ("already in place", "will apply"):
        text.append(f" · {detail}", style="dim" if status != "failed" else "red")
    _console().print(text, soft_wrap=True)


def init_done(ok: bool, message: str) -> None:
    style = "bold green" if ok else "bold red"
    _console().print(Text.assemble(("✓ " if ok else "✗ ", style), (message, style if not ok else "")),
                     soft_wrap=True)


_VERDICT_STYLE = {"HEALTHY": "bold green", "DEGRADED": "bold yellow", "BROKEN": "bold red"}
_ROW_MARK = {"ok": ("●", "green"), "warn": ("●", "yellow"), "fail": ("●", "red"), "skip": ("○", "dim"),
             "error": ("●", "red")}


def status(data: dict[str, Any], verbose: bool = False) -> None:
    console = _console()
    console.print(Text.assemble((data["verdict"], _VERDICT_STYLE[data["verdict"]]), f"  {data['summary']}"),
                  soft_wrap=True)
    for row in data["rows"]:
        mark, style = _ROW_MARK.get(row["status"], ("?", ""))
        console.print(Text.assemble((f"{mark} ", style), (f"{row['title']:<11}", "bold"), row["summary"]),
                      soft_wrap=True)
        if row.get("fix") and row["status"] != "ok":
            console.print(Text(f"    fix: {row['fix']}", style="cyan"), soft_wrap=True)


def log_lines(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(line if line.endswith("\n") else line + "\n")
    sys.stdout.flush()


# ---- doctor --------------------------------------------------------------------------------------------

_DOCTOR_MARK = {"ok": ("✓", "green"), "warn": ("!", "bold yellow"), "fail": ("✗", "bold red"), "skip": ("○", "dim"),
                "error": ("⚠", "bold red")}
_HOP_MARK = {"ok": ("✓", "green"), "fail": ("✗", "bold red"), "skip": ("○", "dim")}


def doctor_report(data: dict[str, Any], verbose: bool = False) -> None:
    """`halton-meter doctor`: one line per check in the report's order, the fix under each problem, and a
    footer counting issues. Takes the `--json` document, so both outputs always agree."""
    console = _console()
    checks = data["checks"]
    width = max((len(c["title"]) for c in checks), default=0)
    for check in checks:
        mark, style = _DOCTOR_MARK.get(check["status"], ("?", ""))
        text = Text.assemble((f"{mark} ", style), (f"{check['title']:<{width}}", "bold"), "  ", check["summary"])
        console.print(text, soft_wrap=True)
        for hop in check["details"].get("hops", ()) if isinstance(check["details"], dict) else ():
            hop_mark, hop_style = _HOP_MARK.get(hop.get("status"), ("?", ""))
            console.print(Text.assemble("    ", (f"{hop_mark} ", hop_style), (f"{hop.get('hop', '?'):<7}", "bold"),
                                        str(hop.get("detail", ""))), soft_wrap=True)
        if check.get("fix") and check["status"] not in ("ok", "skip"):
            console.print(Text(f"    fix: {check['fix']}", style="cyan"), soft_wrap=True)
        if verbose:
            console.print(Text(f"    {check['id']} · {check['duration_ms']} ms", style="dim"), soft_wrap=True)
            for key, value in check["details"].items():
                if key != "hops":
                    shown = value if isinstance(value, str) else json.dumps(value)
                    console.print(Text(f"    {key}: {shown}", style="dim"), soft_wrap=True)
    counts = data["summary"]
    parts = [f"{counts['ok']} ok", f"{counts['warn']} warning{'s' if counts['warn'] != 1 else ''}",
             f"{counts['fail']} failed", f"{counts['skip']} skipped",
             f"{counts['error']} error{'s' if counts['error'] != 1 else ''}"]
    console.print()
    console.print(Text(f"{len(checks)} check{'s' if len(checks) != 1 else ''}: " + " · ".join(parts)),
                  soft_wrap=True)
    problems = counts["fail"] + counts["error"]
    if problems:
        console.print(Text(f"{problems} problem{'s' if problems != 1 else ''} found: apply the fix under each, then "
                           "run `halton-meter doctor` again.", style="bold red"), soft_wrap=True)
    elif counts["warn"]:
        console.print(Text(f"No problems; {counts['warn']} warning{'s' if counts['warn'] != 1 else ''} worth a look.",
                           style="bold yellow"), soft_wrap=True)
    else:
        console.print(Text("No problems found.", style="bold green"), soft_wrap=True)
