from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

import click
from rich.text import Text

from halton_meter import terminal

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
    """Show the meter's logs (serve, the cores, edge) merged in time order: local time, process, level, message
    and its key=value details. Size-rotated files in $HALTON_METER_HOME/logs, mode 0600; they never contain
    API keys, prompts or responses. A foreground `serve` logs to the terminal instead."""
    from halton_meter import logread, terminal
    from halton_meter.config import MAX_WORKERS, load_config

    logs = load_config().paths.logs
    files = [logs / f"{name}.log" for name in PROCESSES if only in (None, name)]
    if only in (None, "core"):  # core workers log as core-1, core-2, … (docs/concepts/proxy.md, "Several cores")
        files += [logs / f"core-{i}.log" for i in range(1, MAX_WORKERS)]
    existing = [f for f in files if f.exists()]
    if not existing and not follow:
        terminal.line(f"No logs in {logs} yet (a foreground `halton-meter serve` logs to its terminal).")
        return 0
    positions, groups = {}, []
    for path in existing:
        recent, positions[path] = logread.tail(path, lines)
        groups.append(logread.entries(path.stem, recent))
    day = log_entries(logread.merge(groups), raw=raw)
    follower = logread.Follower(files, positions)
    try:
        while follow:
            time.sleep(POLL_S)
            new = follower.poll()
            if new:
                day = log_entries(logread.merge(new), raw=raw, day=day)
    except KeyboardInterrupt:
        pass
    return 0


_LOG_LEVEL_STYLE = {"debug": "dim", "warning": "yellow", "error": "red", "critical": "bold red",
                    "exception": "red"}


def log_entries(entries: Iterable[Any], raw: bool = False, day: str | None = None) -> str | None:
    """`halton-meter logs`: entries (`logread.LogEntry`, already in time order) as
    `09:46:42.876 core  warning  core unavailable: … reason=core did not answer the probe`, local time, a
    `── 2026-12-03 ──` line whenever the day changes (`day`: the last one shown; returned for the next
    batch). A multi-line value (a traceback) and continuation lines follow, indented. With `raw`, the
    lines exactly as the files hold them."""
    if raw:
        for entry in entries:
            for text in entry.raw:
                sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return day
    console = terminal.console()
    for entry in entries:
        if entry.at is None:
            console.print(Text(f"{entry.process}: {entry.raw[0]}"), soft_wrap=True)
        else:
            moment = entry.at.astimezone()
            if moment.strftime("%Y-%m-%d") != day:
                day = moment.strftime("%Y-%m-%d")
                console.print(Text(f"── {day} ──", style="dim"), soft_wrap=True)
            text = Text.assemble((f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d} ", "dim"),
                                 f"{entry.process:<5} ",
                                 (f"{entry.level:<8}", _LOG_LEVEL_STYLE.get(entry.level, "")), " ", entry.event)
            blocks = []
            for key, value in entry.fields.items():
                shown = value if isinstance(value, str) else repr(value)
                if "\n" in shown:
                    blocks.append((key, shown))
                else:
                    text.append(f" {key}=", style="dim")
                    text.append(shown)
            console.print(text, soft_wrap=True)
            for key, shown in blocks:
                console.print(Text(f"    {key}:", style="dim"), soft_wrap=True)
                for part in shown.splitlines():
                    console.print(Text(f"      {part}"), soft_wrap=True)
        for part in entry.raw[1:]:
            console.print(Text(f"    {part}"), soft_wrap=True)
    return day
