from __future__ import annotations

import click


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict and rows as JSON.")
def command(as_json: bool) -> int:
    """One verdict and a row per component, each with its fix when it is not green.

    \b
    Exit codes: 0 HEALTHY · 6 DEGRADED (traffic flows, metering impaired) · 5 BROKEN (the proxy port
    does not answer, or nothing runs).
    JSON: {"verdict": "HEALTHY"|"DEGRADED"|"BROKEN", "summary": str,
           "rows": [{"id", "title", "status": "ok"|"warn"|"fail"|"skip", "summary", "fix"}]}
    """
    from halton_meter import terminal
    from halton_meter.errors import ExitCode
    from halton_meter.lifecycle.context import build_context
    from halton_meter.lifecycle.status import collect

    ctx, _ = build_context()
    data = collect(ctx)
    if as_json:
        terminal.print_json(data)
    else:
        terminal.status(data)
    return {"HEALTHY": 0, "DEGRADED": int(ExitCode.DEGRADED), "BROKEN": int(ExitCode.NOT_RUNNING)}[data["verdict"]]
