from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from halton_meter import terminal


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict and rows as JSON.")
def command(as_json: bool) -> int:
    """One verdict and a row per component, each with its fix when it is not green.

    \b
    Exit codes: 0 HEALTHY · 6 DEGRADED (traffic flows, metering impaired) · 5 BROKEN (the proxy port
    does not answer, nothing runs, or config.toml is invalid so the meter cannot start or restart).
    JSON: {"verdict": "HEALTHY"|"DEGRADED"|"BROKEN", "summary": str,
           "rows": [{"id", "title", "status": "ok"|"warn"|"fail"|"skip"|"error", "summary", "fix",
                     "check": the doctor check id}]}
    Every row is one of `halton-meter doctor`'s checks (same code, same thresholds); status runs the fast
    ones.
    """
    from halton_meter import terminal
    from halton_meter.errors import ExitCode
    from halton_meter.lifecycle.status import collect

    # The doctor's fast checks; a config.toml that does not load is their first row, never a stop here.
    data = collect()
    if as_json:
        terminal.print_json(data)
    else:
        show_status(data)
    return {"HEALTHY": 0, "DEGRADED": int(ExitCode.DEGRADED), "BROKEN": int(ExitCode.NOT_RUNNING)}[data["verdict"]]


_VERDICT_STYLE = {"HEALTHY": "bold green", "DEGRADED": "bold yellow", "BROKEN": "bold red"}
_ROW_MARK = {"ok": ("●", "green"), "warn": ("●", "yellow"), "fail": ("●", "red"), "skip": ("○", "dim"),
             "error": ("●", "red")}


def show_status(data: dict[str, Any], verbose: bool = False) -> None:
    console = terminal.console()
    console.print(Text.assemble((data["verdict"], _VERDICT_STYLE[data["verdict"]]), f"  {data['summary']}"),
                  soft_wrap=True)
    for row in data["rows"]:
        mark, style = _ROW_MARK.get(row["status"], ("?", ""))
        console.print(Text.assemble((f"{mark} ", style), (f"{row['title']:<11}", "bold"), row["summary"]),
                      soft_wrap=True)
        if row.get("fix") and row["status"] != "ok":
            console.print(Text(f"    fix: {row['fix']}", style="cyan"), soft_wrap=True)
