from __future__ import annotations

import click


@click.command("start")
def command() -> int:
    """Start the meter through the installed service (or the built-in supervisor)."""
    from halton_meter import terminal
    from halton_meter.lifecycle.context import build_context
    from halton_meter.lifecycle.services import check_ports_free, probe

    ctx, _ = build_context()
    check_ports_free(ctx.config)
    ctx.installer.start(ctx)
    runtime = probe(ctx.paths).runtime or {}
    terminal.line(f"started · proxy 127.0.0.1:{runtime.get('edge_port')} · api 127.0.0.1:{runtime.get('api_port')} "
                  f"· {ctx.installer.describe()}")
    return 0
