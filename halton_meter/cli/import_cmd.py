from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from halton_meter import terminal
from halton_meter.config import load_config
from halton_meter.errors import UsageError
from halton_meter.terminal import money, plural, usd_nanos
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
        import_summary(results, dry_run, importing.SETTLE_SECONDS // 60)


def import_summary(results: Iterable[dict[str, Any]], dry_run: bool, settle_minutes: int) -> None:
    """`halton-meter import`: one line per source, then what the numbers need said."""
    console = terminal.console()
    for r in results:
        if not r["found"]:
            console.print(Text(f"{r['source']}: no logs found at {' or '.join(r['locations'])}", style="dim"),
                          soft_wrap=True)
            continue
        verb = "would be imported" if dry_run else "imported"
        imported = f"{plural(r['imported'], 'call')} {verb}"
        money_parts = []
        if usd_nanos(r["cost_usd"]):
            money_parts.append(money(usd_nanos(r["cost_usd"])))
        if usd_nanos(r["subscription_list_price_usd"]):
            money_parts.append(f"{money(usd_nanos(r['subscription_list_price_usd']))} subscription at list price")
        if r["unpriced_calls"]:
            money_parts.append(f"{r['unpriced_calls']:,} unpriced")
        if money_parts:
            imported += f" ({', '.join(money_parts)})"
        parts = [plural(r["files"], "file") + " read", imported,
                 f"{r['already_metered']:,} already metered", f"{r['already_imported']:,} already imported",
                 f"{r['duplicates']:,} duplicate{'' if r['duplicates'] == 1 else 's'}",
                 plural(r["unreadable_lines"], "unreadable line")]
        console.print(Text.assemble((f"{r['source']}: ", "bold"), " · ".join(parts)), soft_wrap=True)
        notes = []
        if r["imported"] or r["already_imported"]:
            basis = {"option": "as --billing said",
                     "meter": f"as the meter last saw {r['source']} pay; --billing changes it",
                     "default": f"{r['title']}'s logs do not say how calls were paid; "
                                f"--billing {'subscription' if r['billing'] == 'api' else 'api'} if they were "
                                f"{'covered by a plan' if r['billing'] == 'api' else 'paid per token'}"}
            notes.append(f"  billed as {r['billing']}: {basis.get(r['billing_basis'], r['billing_basis'])}")
        if r["rebilled"]:
            notes.append(f"  {plural(r['rebilled'], 'call')} imported before now billed as {r['billing']}")
        if r["recent"]:
            notes.append(f"  {plural(r['recent'], 'call')} from the last {settle_minutes} minutes left for the "
                         "next run (the tool may still be writing them)")
        if r["before_since"]:
            notes.append(f"  {plural(r['before_since'], 'call')} before --since left out")
        if r["unreadable_files"]:
            notes.append(f"  {plural(r['unreadable_files'], 'file')} could not be read: "
                         + "; ".join(r["problems"][:3]))
        for note in notes:
            console.print(Text(note, style="dim"), soft_wrap=True)
    if dry_run:
        console.print("Dry run: nothing was written.")
