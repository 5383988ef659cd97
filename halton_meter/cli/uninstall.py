from __future__ import annotations

import shutil

import click


@click.command("uninstall")
@click.option("--purge", is_flag=True,
              help="Also delete the config, the CA, the logs and all other state in $HALTON_METER_HOME. Your "
                   "recorded calls (db.sqlite) and the fingerprint secret that names their keys stay.")
@click.option("--include-data", "include_data", is_flag=True,
              help="With --purge: also delete the call database (db.sqlite and its backups) and the "
                   "fingerprint secret (fingerprint.key): nothing is left.")
@click.option("--include-logs", "include_logs", is_flag=True,
              help="Old name of --include-data (it deletes the call database too, not only the logs).")
def command(purge: bool, include_data: bool, include_logs: bool) -> int:
    """Stop the meter and undo everything `init` changed, restoring what was there before.

    Keeps your recorded calls (db.sqlite) and fingerprint.key, so key fingerprints in them still match
    `[keys]` after a reinstall, unless --purge --include-data.
    """
    from halton_meter import terminal
    from halton_meter.attribution.keys import SECRET_FILE
    from halton_meter.errors import UsageError
    from halton_meter.lifecycle.context import build_context, state_path
    from halton_meter.lifecycle.init import undo_all

    everything = include_data or include_logs
    if everything and not purge:
        flag = "--include-data" if include_data else "--include-logs"
        raise UsageError(f"{flag} deletes the call database; use it together with --purge")
    ctx, host = build_context()
    ctx.installer.stop(ctx)
    undone = undo_all(ctx, {s.id: s for s in host.registries.init_steps})
    path = state_path(ctx.config)
    path.unlink(missing_ok=True)
    terminal.line(f"stopped the meter and undid {undone} change(s) init had made")
    home = ctx.paths.home
    if purge and home.exists():
        db = ctx.paths.db.name
        keep = set() if everything else {db, f"{db}-wal", f"{db}-shm", SECRET_FILE}
        for entry in home.iterdir():
            if entry.name in keep or (not everything and entry.name.startswith(f"{db}.v")):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if everything and not any(home.iterdir()):
            home.rmdir()
        kept = "" if everything else (f" (kept your calls in {ctx.paths.db} and {SECRET_FILE}, which names their "
                                      "keys; --include-data deletes them too)")
        terminal.line(f"purged {home}{kept}")
    return 0
