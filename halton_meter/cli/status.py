from __future__ import annotations

import click


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
        terminal.status(data)
    return {"HEALTHY": 0, "DEGRADED": int(ExitCode.DEGRADED), "BROKEN": int(ExitCode.NOT_RUNNING)}[data["verdict"]]
