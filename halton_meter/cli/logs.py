from __future__ import annotations

import time

import click

PROCESSES = ("serve", "core", "edge")
POLL_S = 0.25


@click.command("logs")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines, merged as they come, until Ctrl-C.")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=50, show_default=True,
              help="How many recent lines of each log to show first.")
@click.option("--process", "only", type=click.Choice(PROCESSES), help="Only this process's log.")
@click.option("--raw", is_flag=True, help="Print the lines exactly as the log files hold them (still merged in "
                                          "time order).")
def command(follow: bool, lines: int, only: str | None, raw: bool) -> int:
    """Show the meter's logs (serve, core, edge) merged in time order: local time, process, level, message
    and its key=value details. Size-rotated files in $HALTON_METER_HOME/logs, mode 0600; they never contain
    API keys, prompts or responses. A foreground `serve` logs to the terminal instead."""
    from halton_meter import logread, terminal
    from halton_meter.config import load_config

    logs = load_config().paths.logs
    files = [logs / f"{name}.log" for name in PROCESSES if only in (None, name)]
    existing = [f for f in files if f.exists()]
    if not existing and not follow:
        terminal.line(f"No logs in {logs} yet (a foreground `halton-meter serve` logs to its terminal).")
        return 0
    positions, groups = {}, []
    for path in existing:
        recent, positions[path] = logread.tail(path, lines)
        groups.append(logread.entries(path.stem, recent))
    day = terminal.log_entries(logread.merge(groups), raw=raw)
    follower = logread.Follower(files, positions)
    try:
        while follow:
            time.sleep(POLL_S)
            new = follower.poll()
            if new:
                day = terminal.log_entries(logread.merge(new), raw=raw, day=day)
    except KeyboardInterrupt:
        pass
    return 0
