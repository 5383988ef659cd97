from __future__ import annotations

import click


@click.command("restart")
def command() -> int:
    """Stop and start the meter (the proxy port stays the same)."""
    from halton_meter import terminal
    from halton_meter.lifecycle.context import build_context
    from halton_meter.lifecycle.services import check_ports_free, probe

    ctx, _ = build_context()
    ctx.installer.stop(ctx)
    check_ports_free(ctx.config)
    ctx.installer.start(ctx)
    runtime = probe(ctx.paths).runtime or {}
    terminal.line(f"restarted · proxy 127.0.0.1:{runtime.get('edge_port')}")
    return 0
