from __future__ import annotations

import shutil

import click


@click.command("uninstall")
@click.option("--purge", is_flag=True, help="Also delete the config, the CA and all state in $HALTON_METER_HOME.")
@click.option("--include-logs", is_flag=True,
              help="With --purge: also delete the call database (db.sqlite) and the logs.")
def command(purge: bool, include_logs: bool) -> int:
    """Stop the meter and undo everything `init` changed, restoring what was there before.

    Keeps your recorded calls (db.sqlite) unless --purge --include-logs.
    """
    from halton_meter import terminal
    from halton_meter.errors import UsageError
    from halton_meter.lifecycle.context import build_context, state_path
    from halton_meter.lifecycle.init import undo_all

    if include_logs and not purge:
        raise UsageError("--include-logs deletes the call database; use it together with --purge")
    ctx, host = build_context()
    ctx.installer.stop(ctx)
    undone = undo_all(ctx, {s.id: s for s in host.registries.init_steps})
    path = state_path(ctx.config)
    path.unlink(missing_ok=True)
    terminal.line(f"stopped the meter and undid {undone} change(s) init had made")
    home = ctx.paths.home
    if purge and home.exists():
        keep = set() if include_logs else {ctx.paths.db.name, f"{ctx.paths.db.name}-wal", f"{ctx.paths.db.name}-shm"}
        for entry in home.iterdir():
            if entry.name in keep or (not include_logs and entry.name.startswith(f"{ctx.paths.db.name}.v")):
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if include_logs and not any(home.iterdir()):
            home.rmdir()
        kept = "" if include_logs else f" (kept your calls in {ctx.paths.db})"
        terminal.line(f"purged {home}{kept}")
    return 0
