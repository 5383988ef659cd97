from __future__ import annotations

import os
from pathlib import Path

import click

from halton_meter.config import load_config
from halton_meter.errors import UsageError
from halton_meter.timewindow import parse_moment

ALL = "all"


@click.command("import")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--path", type=click.Path(exists=True, path_type=Path), default=None, metavar="DIR",
              help="Read the logs here (a directory or one file) instead of the tool's default locations.")
@click.option("--since", default=None, metavar="WHEN",
              help="Only calls from this time on: 30d, 24h, a date (2026-11-01) or an ISO time (default: all).")
@click.option("--billing", type=click.Choice(["api", "subscription"]), default=None,
              help="How these calls were paid for (the logs never say): per token (`api`) or by a plan "
                   "(`subscription`). Default: as the meter last saw the tool pay, else the tool's usual way. "
                   "Given again later, it changes calls imported before.")
@click.option("--dry-run", is_flag=True, help="Read the logs and say what would be imported; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(sources: tuple[str, ...], path: Path | None, since: str | None, billing: str | None, dry_run: bool,
            as_json: bool) -> None:
    """Import past calls from the usage logs your tools already keep (SOURCE: claude-code, codex, or all).

    Rows are marked `source = import`, priced and attributed like metered calls, and never duplicate a
    call imported before or one the meter recorded itself; no prompt or response text is read into the
    database. Calls from the last 10 minutes wait for a later run. See docs/import.md.
    """
    from halton_meter import importing, terminal
    from halton_meter.cli._options import now
    from halton_meter.host import PluginHost
    from halton_meter.paths import user_home
    from halton_meter.pricing import Pricer

    config = load_config()
    moment = now()
    start = parse_moment(since, moment, "--since") if since else None
    host = PluginHost(config).load()
    registries = host.registries
    importers = list(registries.importers)
    everything = ALL in sources
    if everything and len(sources) > 1:
        raise UsageError(f"`{ALL}` already means every source; give it alone")
    chosen = sorted(importers, key=lambda i: i.name) if everything else \
        [importing.importer_named(importers, name) for name in dict.fromkeys(sources)]
    if path is not None and len(chosen) != 1:
        raise UsageError("--path reads one tool's logs: give exactly one SOURCE with it")
    environ, home = dict(os.environ), user_home()
    planned = [(importer, importing.locations(importer, path, environ, home)) for importer in chosen]
    for importer, places in planned:
        if not everything and not importing.found_any(places):
            raise importing.no_logs(importer, places)  # before anything is written
    attributors = registries.attributors.ordered()
    pricer = Pricer(config)
    results = []
    for importer, places in planned:
        if not importing.found_any(places):  # `all`: a tool that is not installed here
            results.append({"source": importer.name, "found": False, "locations": [str(p) for p in places]})
            continue
        result = importing.run(importer, places, db=config.paths.db, attributors=attributors, pricer=pricer,
                               now=moment, since=start, billing=billing, dry_run=dry_run)
        results.append({"found": True, **result.to_json(), "title": result.title})
    if as_json:
        terminal.print_json({"dry_run": dry_run, "sources": [{k: v for k, v in r.items() if k != "title"}
                                                              for r in results]})
    else:
        terminal.import_summary(results, dry_run, importing.SETTLE_SECONDS // 60)
