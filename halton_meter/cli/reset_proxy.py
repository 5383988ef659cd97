from __future__ import annotations

import click


@click.command("reset-proxy")
def command() -> int:
    """Emergency: take the meter out of the way of every app now, without uninstalling.

    Undoes the system proxy and the environment blocks init set (shell rc, environment.d, launchctl,
    HKCU), so new connections go direct. Run `halton-meter init --apps` (or --full) to route them again.
    """
    from halton_meter import terminal
    from halton_meter.lifecycle.context import build_context, state_path

    ctx, _ = build_context()
    undone = 0
    for step in ("init.system-proxy", "init.environment"):
        ctx.current_step = step
        undone += ctx.undo_step(step)
    if ctx.state.mode in ("apps", "full"):
        ctx.state.mode = "env"
    ctx.state.save(state_path(ctx.config))
    terminal.line(f"proxy settings removed ({undone} change(s) undone); new shells and apps connect directly. "
                  "Already-running apps keep their settings until restarted.")
    return 0
