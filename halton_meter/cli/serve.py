from __future__ import annotations

import asyncio
from typing import Any

import click
from rich.text import Text

from halton_meter import terminal
from halton_meter.config import load_config


@click.command("serve")
@click.option("--edge-port", type=click.IntRange(0, 65535), default=None,
              help="Proxy port clients use (default: config edge.port, else 8081; 0 picks a free port).")
@click.option("--api-port", type=click.IntRange(0, 65535), default=None,
              help="Loopback API port (default: config api.port, else 8765; 0 picks a free port).")
def command(edge_port: int | None, api_port: int | None) -> int:
    """Run the meter in the foreground until Ctrl-C or SIGTERM.

    Starts the edge (the proxy port your tools use), the core (mitmproxy, which reads provider traffic)
    and the loopback API. On stop, calls in flight finish and their rows commit first.
    """
    from halton_meter.host import PluginHost
    from halton_meter.logs import configure_logging
    from halton_meter.serve.supervisor import Supervisor

    config = load_config()
    PluginHost(config).load().validate_config()  # every config error before anything starts: one line, exit 2
    config.workers()  # a bad HALTON_METER_WORKERS too
    configure_logging("serve")
    supervisor = Supervisor(
        config,
        edge_port=config.edge_port if edge_port is None else edge_port,
        api_port=config.api_port if api_port is None else api_port,
        announce=serving,
    )
    return asyncio.run(supervisor.run())


def serving(runtime: dict[str, Any]) -> None:
    console = terminal.console()
    console.print(Text("Halton Meter is metering.", style="bold green"))
    console.print(f"  proxy  127.0.0.1:{runtime['edge_port']}   wrap a command: halton-meter run -- claude")
    console.print(f"  api    127.0.0.1:{runtime['api_port']}")
    console.print(f"  data   {runtime['db']}")
    if runtime.get("cores", 1) != 1:
        console.print(f"  cores  {runtime['cores']} (the first writes the database)")
    console.print("Stop with Ctrl-C.")
