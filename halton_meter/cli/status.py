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
           "rows": [{"id", "title", "status": "ok"|"warn"|"fail"|"skip", "summary", "fix"}]}
    """
    from halton_meter import terminal
    from halton_meter.config import Config, load_config
    from halton_meter.errors import ConfigError, ExitCode
    from halton_meter.lifecycle.context import build_context
    from halton_meter.lifecycle.status import collect
    from halton_meter.paths import Paths

    config_error = None
    try:
        config = load_config()
    except ConfigError as exc:  # status must still say what runs, and that the config is what breaks it
        config_error, config = exc.message, Config(paths=Paths.from_env())
    ctx, _ = build_context(config=config)
    data = collect(ctx, config_error=config_error)
    if as_json:
        terminal.print_json(data)
    else:
        terminal.status(data)
    return {"HEALTHY": 0, "DEGRADED": int(ExitCode.DEGRADED), "BROKEN": int(ExitCode.NOT_RUNNING)}[data["verdict"]]
