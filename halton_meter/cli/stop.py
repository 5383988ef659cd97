from __future__ import annotations

import click


@click.command("stop")
def command() -> int:
    """Stop the meter (calls in flight finish first). Clients set up by --apps then fail to connect
    until you start it again: use `halton-meter reset-proxy` if you need them to go direct."""
    from halton_meter import terminal
    from halton_meter.lifecycle.context import build_context

    ctx, _ = build_context()
    ctx.installer.stop(ctx)
    terminal.line(f"stopped · {ctx.installer.describe()}")
    return 0
