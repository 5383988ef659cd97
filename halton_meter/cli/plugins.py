from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click
from rich.text import Text

from halton_meter import terminal
from halton_meter.config import load_config


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print the plugin list as JSON.")
def command(as_json: bool) -> None:
    """List every plugin: name, version, source, status and what it provides.

    Third-party plugins are found through the `halton_meter` entry-point group. HALTON_METER_DISABLE_PLUGINS
    (comma-separated names) blocks plugins; HALTON_METER_PLUGINS allow-lists third-party ones.
    """
    from halton_meter import terminal
    from halton_meter.host import PluginHost

    host = PluginHost(load_config()).load()
    _ = host.registries  # run every register hook so `provides` and registration errors are filled in
    plugins = [p.to_json() for p in host.plugins.values()]
    if as_json:
        terminal.print_json(plugins)
    else:
        plugins_table(plugins)


def plugins_table(plugins: Iterable[dict[str, Any]]) -> None:
    table = terminal.table([("plugin", "left"), ("version", "left"), ("source", "left"), ("status", "left"),
                            ("provides", "left")], wrap=("provides",))
    for p in plugins:
        provides = " ".join(i for items in p["provides"].values() for i in items) or "—"
        status = Text(p["status"], style={"ok": "green", "error": "red"}.get(p["status"], "yellow"))
        table.add_row(p["name"], p["version"], p["source"], status, provides)
        if p["error"]:
            table.add_row("", "", "", "", Text(p["error"], style="red"))
    terminal.console().print(table)
