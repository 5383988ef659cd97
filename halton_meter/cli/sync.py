"""`halton-meter sync status | now | backfill TARGET`: the [[sync]] targets (docs/sync.md)."""

from __future__ import annotations

import time
from typing import Any

import click

from halton_meter import terminal
from halton_meter.errors import HaltonError, UsageError


@click.group("sync")
def command() -> None:
    """Push your rows to the team's Postgres (and other [[sync]] targets); see how far each has got."""


def _config() -> Any:
    from halton_meter.config import load_config
    from halton_meter.errors import DatabaseError
    from halton_meter.store.schema import initialised

    config = load_config()
    if not initialised(config.paths.db):
        raise DatabaseError(f"no database at {config.paths.db} yet: start the meter (`halton-meter start`) first")
    return config


@command.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(as_json: bool) -> None:
    """Each target: state, rows and seconds behind, last success, last error."""
    from halton_meter.sync.engine import status

    config = _config()
    rows = status(config.paths.db, config.sync) if config.sync else []
    if as_json:
        terminal.print_json({"targets": rows})
        return
    if not rows:
        click.echo("No sync targets: add a [[sync]] block to config.toml (see docs/sync.md).")
        return
    for row in rows:
        behind = "" if not row["lag_rows"] else f", {row['lag_rows']:,} rows behind"
        click.echo(f"{row['target']} ({row['kind']}): {row['state']}{behind}; {row['sent']:,} rows sent; "
                   f"last success {row['last_success'] or 'never'}")
        if row.get("last_error"):
            click.echo(f"  last error ({row.get('last_error_at')}): {row['last_error']}")


@command.command("now")
@click.option("--timeout", default=120.0, show_default=True, help="Give up after this many seconds.")
def now_command(timeout: float) -> None:
    """Send everything waiting, now, from this process (the running meter would within seconds anyway)."""
    from halton_meter.host import PluginHost
    from halton_meter.sync.engine import SyncEngine
    from halton_meter.sync_config import machine_id

    config = _config()
    if not config.sync:
        raise UsageError("no [[sync]] targets in config.toml (see docs/sync.md)")
    targets = PluginHost(config).load().registries.sync_targets
    engine = SyncEngine(config.paths.db, config.sync, lambda s: targets.get(f"sync.{s.target}").open(s.options),
                        machine_id=machine_id(config.paths.home))
    engine.switch_on()
    deadline, sent = time.monotonic() + timeout, 0
    try:
        while time.monotonic() < deadline:
            progress = engine.run_once()
            sent += progress.sent
            if progress.errors:  # exit 1: a target outside your input failed (the line says why)
                name, error = next(iter(progress.errors.items()))
                raise HaltonError(f"sync to {name} failed: {error}; `halton-meter sync status` shows every target")
            if progress.sent == 0:
                break
    finally:
        engine.stop()
    click.echo("Every target is up to date.")


@command.command("backfill")
@click.argument("target")
def backfill_command(target: str) -> None:
    """Send every row again to TARGET from the start of history (its upserts make that harmless)."""
    from halton_meter.sync.engine import backfill

    config = _config()
    names = [s.name for s in config.sync]
    if target not in names:
        raise UsageError(f"no sync target named {target!r}; the targets are: {', '.join(names) or 'none'}")
    backfill(config.paths.db, target)
    click.echo(f"{target}: every row will be sent again (the running meter starts within seconds; "
               "`halton-meter sync now` does it at once).")
