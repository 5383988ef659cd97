from __future__ import annotations

import json
from typing import Any

import click
from rich.text import Text

from halton_meter import terminal
from halton_meter.doctor.runner import DEFAULT_TIMEOUT
from halton_meter.terminal import hanging


@click.command("doctor")
@click.option("--only", "only", multiple=True, metavar="ID",
              help="Run only this check (repeatable), e.g. --only check.core. Ids: `halton-meter doctor --json`.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema above).")
@click.option("--curl", "curl", is_flag=True,
              help="Also send one real HTTPS request through the running proxy to the meter's loopback canary and "
                   "show each hop: edge CONNECT, TLS issuer, the core's answer, the record landing. Uses curl when "
                   "installed, else Python. Its record is a self-test row, left out of reports.")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=300), default=DEFAULT_TIMEOUT, show_default=True,
              metavar="SECONDS", help="Time limit per check; a check that runs longer is an error row.")
@click.option("-v", "--verbose", is_flag=True, help="Also show each check's id, duration and details.")
def command(only: tuple[str, ...], as_json: bool, curl: bool, timeout: float, verbose: bool) -> int:
    """Check that everything the meter needs is in place, and say how to fix what is not.

    Read-only: the doctor never repairs anything (repairs go through `halton-meter init`). Each row is a
    check from a plugin (configuration, home, disk, CA, trust bundle, proxy and NO_PROXY variables, edge,
    core, API, service, database, writes, gaps, plugins, running AI clients). Checks run concurrently; one
    that crashes or runs past --timeout becomes an `error` row and the others still run. A check whose
    requirement did not pass is skipped.

    \b
    Exit codes:
        0  no check failed (warnings allowed)
        2  bad arguments (e.g. an unknown --only id)
        6  at least one check failed or could not run (fail or error);
           an invalid config.toml is such a row, not exit 2

    \b
    --json prints one object (schema version 1):
      {"version": 1,
       "verdict": "ok" | "issues",        # "issues" when any check is fail or error
       "summary": {"ok": N, "warn": N, "fail": N, "skip": N, "error": N},
       "checks": [{"id": "check.core",     # stable, dotted; what --only takes
                   "title": "core (mitmproxy)",
                   "status": "ok" | "warn" | "fail" | "skip" | "error",
                   "summary": "one line",
                   "fix": "a command or one sentence" | null,
                   "details": {...},          # check-specific facts
                   "duration_ms": N}, ...]}
    Rows come in a fixed order: each after the checks it requires, ties by id.
    """
    from halton_meter import terminal
    from halton_meter.doctor.runner import run_doctor

    report = run_doctor(only, curl=curl, timeout=timeout)
    data = report.to_json()
    if as_json:
        terminal.print_json(data)
    else:
        doctor_report(data, verbose=verbose)
    return int(report.exit_code)


_DOCTOR_MARK = {"ok": ("✓", "green"), "warn": ("!", "bold yellow"), "fail": ("✗", "bold red"), "skip": ("○", "dim"),
                "error": ("⚠", "bold red")}
_HOP_MARK = {"ok": ("✓", "green"), "fail": ("✗", "bold red"), "skip": ("○", "dim")}


def doctor_report(data: dict[str, Any], verbose: bool = False) -> None:
    """`halton-meter doctor`: one line per check in the report's order, the fix under each problem, and a
    footer counting issues. Takes the `--json` document, so both outputs always agree. Long lines wrap at
    the width between words, continuing under where their text starts; nothing is cut."""
    console = terminal.console()
    checks = data["checks"]
    width = max((len(c["title"]) for c in checks), default=0)
    for check in checks:
        mark, style = _DOCTOR_MARK.get(check["status"], ("?", ""))
        hanging(console, Text.assemble((f"{mark} ", style), (f"{check['title']:<{width}}", "bold"), "  "),
                Text(check["summary"]))
        for hop in check["details"].get("hops", ()) if isinstance(check["details"], dict) else ():
            hop_mark, hop_style = _HOP_MARK.get(hop.get("status"), ("?", ""))
            lead = Text.assemble("    ", (f"{hop_mark} ", hop_style), (f"{hop.get('hop', '?'):<7}", "bold"))
            hanging(console, lead, Text(str(hop.get("detail", ""))))
        if check.get("fix") and check["status"] not in ("ok", "skip"):
            hanging(console, Text("    fix: ", style="cyan"), Text(check["fix"], style="cyan"))
        if verbose:
            hanging(console, Text("    "), Text(f"{check['id']} · {check['duration_ms']} ms", style="dim"))
            for key, value in check["details"].items():
                if key != "hops":
                    shown = value if isinstance(value, str) else json.dumps(value)
                    hanging(console, Text(f"    {key}: ", style="dim"), Text(shown, style="dim"))
    counts = data["summary"]
    parts = [f"{counts['ok']} ok", f"{counts['warn']} warning{'s' if counts['warn'] != 1 else ''}",
             f"{counts['fail']} failed", f"{counts['skip']} skipped",
             f"{counts['error']} error{'s' if counts['error'] != 1 else ''}"]
    console.print()
    total = f"{len(checks)} check{'s' if len(checks) != 1 else ''}: "
    hanging(console, Text(""), Text(total + " · ".join(parts)))
    problems = counts["fail"] + counts["error"]
    if problems:
        verdict = Text(f"{problems} problem{'s' if problems != 1 else ''} found: apply the fix under each, then "
                       "run `halton-meter doctor` again.", style="bold red")
    elif counts["warn"]:
        verdict = Text(f"No problems; {counts['warn']} warning{'s' if counts['warn'] != 1 else ''} worth a look.",
                       style="bold yellow")
    else:
        verdict = Text("No problems found.", style="bold green")
    hanging(console, Text(""), verdict)
