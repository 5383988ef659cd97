from __future__ import annotations

import time
from collections import deque

import click

PROCESSES = ("serve", "core", "edge")


@click.command("logs")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=50, show_default=True,
              help="How many recent lines of each log to show first.")
@click.option("--process", "only", type=click.Choice(PROCESSES), help="Only this process's log.")
def command(follow: bool, lines: int, only: str | None) -> int:
    """Show the meter's logs (serve, core, edge): size-rotated files in $HALTON_METER_HOME/logs, mode
    0600. They never contain API keys, prompts or responses. A foreground `serve` logs to the terminal
    instead."""
    from halton_meter import terminal
    from halton_meter.config import load_config

    logs = load_config().paths.logs
    files = [logs / f"{name}.log" for name in PROCESSES if only in (None, name)]
    existing = [f for f in files if f.exists()]
    if not existing:
        terminal.line(f"No logs in {logs} yet (a foreground `halton-meter serve` logs to its terminal).")
        return 0
    positions = {}
    for path in existing:
        with path.open(errors="replace") as fh:
            tail = deque(fh, maxlen=lines) if lines else deque()
            positions[path] = fh.tell()
        terminal.log_lines(f"{path.stem}: {line.rstrip()}" for line in tail)
    while follow:
        time.sleep(0.25)
        for path in files:
            if not path.exists():
                continue
            size = path.stat().st_size
            start = positions.get(path, 0)
            if size < start:  # rotated: start over from the new file
                start = 0
            if size > start:
                with path.open(errors="replace") as fh:
                    fh.seek(start)
                    new = fh.read()
                    positions[path] = fh.tell()
                terminal.log_lines(f"{path.stem}: {line}" for line in new.splitlines())
    return 0
