"""`halton-meter import`: past calls from the usage other tools keep on disk, as rows with `source = import`.

An importer plugin (`halton_meter.types.Importer`) reads a tool's logs and yields calls; this module keeps
one per key, leaves out what is too recent, before `--since`, imported before, or metered by the proxy
already, then attributes, prices and writes the rest (`store/imports.py`). See docs/import.md.

* **Idempotent.** A call's key comes from the log (Claude Code's message id, Codex's running totals); the
  row's id is derived from it and its `import_key` is unique, so running an import again adds nothing.
* **Never a call twice.** A call the meter recorded is skipped: by the provider's message or request id when
  the log has one (Claude Code), else by identical token counts within minutes (Codex, whose logs carry no
  id the meter sees). Calls from the last `SETTLE_SECONDS` wait for a later run: the tool may still be
  writing them, and the meter may not have committed its own row yet.
* **Same numbers as live calls.** Rows go through the meter's pricing (`Pricer`) and project attributors
  (working directory, git repository, `[projects]` rules), with the branch the tool recorded.
* **No text.** Only ids, model, token counts, times and the project and branch derived from the working
  directory are stored; the directory itself is not.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halton_meter.attribution.service import attribute
from halton_meter.attribution.workspace import git_info
from halton_meter.clock import utc_stamp as iso
from halton_meter.errors import HaltonError, PluginError, UsageError
from halton_meter.pricing import Pricer
from halton_meter.redact import safe_extra
from halton_meter.store import imports as store
from halton_meter.types import (
    BILLING_API,
    BILLING_SUBSCRIPTION,
    SOURCE_IMPORT,
    Attribution,
    Attributor,
    CallRecord,
    ClientInfo,
    ImportedCall,
    Importer,
    ImportStats,
    nanos_to_usd,
)

SETTLE_SECONDS = 600
"""Calls newer than this are left for a later run (a tool writes a streamed response over several lines,
and the meter commits its own row of the same call moments after the response ends)."""
MATCH_BEFORE = datetime.timedelta(minutes=15)
"""A metered call without an id in common matches if it started at most this long before the log's entry
(written when the call ended: a long reasoning call takes minutes)…"""
MATCH_AFTER = datetime.timedelta(minutes=2)
"""…or at most this long after it (clocks, and the log's own write)."""
ID_NAMESPACE = uuid.UUID("5d1f4b7e-3c2a-4f0e-9a6b-1c8d2e7f4a90")
BILLINGS = (BILLING_API, BILLING_SUBSCRIPTION)


@dataclass
class ImportResult:
    """What one source's import did (or, with `dry_run`, would do)."""

    source: str
    title: str
    dry_run: bool
    locations: list[str] = field(default_factory=list)
    billing: str = BILLING_API
    billing_basis: str = "default"
    """`option` (--billing), `meter` (how the meter last saw the tool pay) or `default` (the importer's)."""
    stats: ImportStats = field(default_factory=ImportStats)
    calls: int = 0
    """Distinct calls found in the logs."""
    imported: int = 0
    already_imported: int = 0
    already_metered: int = 0
    rebilled: int = 0
    recent: int = 0
    before_since: int = 0
    cost_nanos: int = 0
    subscription_cost_nanos: int = 0
    unpriced: int = 0
    first_at: str | None = None
    last_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "locations": self.locations,
            "files": self.stats.files,
            "unreadable_files": self.stats.unreadable_files,
            "unreadable_lines": self.stats.unreadable_lines,
            "calls_found": self.calls,
            "imported": self.imported,
            "already_imported": self.already_imported,
            "already_metered": self.already_metered,
            "duplicates": self.stats.duplicates,
            "not_calls": self.stats.not_calls,
            "recent": self.recent,
            "before_since": self.before_since,
            "rebilled": self.rebilled,
            "billing": self.billing,
            "billing_basis": self.billing_basis,
            "cost_usd": nanos_to_usd(self.cost_nanos),
            "subscription_list_price_usd": nanos_to_usd(self.subscription_cost_nanos),
            "unpriced_calls": self.unpriced,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "problems": list(self.stats.problems),
        }


def importer_named(importers: Sequence[Importer], name: str) -> Importer:
    """The importer `halton-meter import NAME` means; UsageError naming the known ones otherwise."""
    matches = [i for i in importers if i.name == name]
    if len(matches) > 1:
        raise PluginError(f"two importers are named {name!r} ({', '.join(i.id for i in matches)}); disable one "
                          "with HALTON_METER_DISABLE_PLUGINS")
    if not matches:
        known = ", ".join(sorted(i.name for i in importers)) or "none (no importer plugin is loaded)"
        raise UsageError(f"no importer named {name!r}; known: {known}")
    return matches[0]


def locations(importer: Importer, path: Path | None, environ: Mapping[str, str], home: Path) -> list[Path]:
    """Where to read: `--path` alone when given, else the tool's default locations."""
    if path is not None:
        return [path.expanduser()]
    found: list[Path] = []
    for location in importer.default_locations(environ, home):
        if location not in found:
            found.append(location)
    return found


def collect(importer: Importer, places: Sequence[Path], stats: ImportStats) -> dict[str, ImportedCall]:
    """Every call in the logs under `places`, one per key: the entry with the most output tokens (a later
    one on a tie) with the earliest start and latest end seen for that key."""
    files: list[Path] = []
    seen: set[Path] = set()
    for place in places:
        if not place.exists():
            continue
        for path in importer.files(place):
            real = path.resolve()
            if real not in seen:
                seen.add(real)
                files.append(path)
    found: dict[str, ImportedCall] = {}
    for call in importer.read(files, stats):
        known = found.get(call.key)
        if known is None:
            found[call.key] = call
            continue
        stats.duplicates += 1
        keep = call if call.usage.output_tokens >= known.usage.output_tokens else known
        found[call.key] = dataclasses.replace(
            keep, started_at=min(call.started_at, known.started_at),
            ended_at=max(call.ended_at or call.started_at, known.ended_at or known.started_at))
    return found


class _Attributor:
    """The meter's attributors for a working directory, once per directory."""

    def __init__(self, attributors: Sequence[Attributor], tool: str) -> None:
        self._attributors = attributors
        self._tool = tool
        self._cache: dict[str | None, tuple[Attribution, str | None]] = {}

    def __call__(self, cwd: str | None) -> tuple[Attribution, str | None]:
        """(attribution, repository name) for `cwd`; the branch checked out now says nothing of then."""
        if cwd not in self._cache:
            git = None
            if cwd and os.path.isdir(cwd):
                try:
                    git = git_info(cwd)
                except (OSError, ValueError):
                    git = None
            client = ClientInfo(cwd=cwd, tool=self._tool, git=git)
            answer = attribute(self._attributors, client)
            self._cache[cwd] = (answer, git.repo if git else None)
        return self._cache[cwd]


def _day_windows(calls: Sequence[ImportedCall]) -> dict[str, list[ImportedCall]]:
    days: dict[str, list[ImportedCall]] = {}
    for call in calls:
        days.setdefault(call.started_at[:10], []).append(call)
    return days


def _moment(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _already_metered(conn: Any, importer: Importer, calls: Sequence[ImportedCall]) -> set[str]:
    """Keys of `calls` the meter recorded itself: by id where the log has one, else by identical tokens
    within [start - MATCH_BEFORE, end + MATCH_AFTER], each metered call matching one entry at most."""
    if conn is None or not importer.proxy_providers:
        return set()
    matched: set[str] = set()
    for day, group in sorted(_day_windows(calls).items()):
        start = _moment(f"{day}T00:00:00Z")
        since = iso(start - MATCH_BEFORE - datetime.timedelta(hours=1))
        until = iso(start + datetime.timedelta(days=1, hours=1) + MATCH_AFTER)
        with_ids = [c for c in group if c.request_ids]
        without = [c for c in group if not c.request_ids]
        if with_ids:
            ids = store.metered_ids(conn, importer.proxy_providers, since, until)
            matched.update(c.key for c in with_ids if any(i in ids for i in c.request_ids))
        if without:
            usage = store.metered_usage(conn, importer.proxy_providers, since, until)
            for call in without:
                u = call.usage
                times = usage.get((u.input_tokens, u.cache_read_tokens, u.cache_write_tokens, u.output_tokens))
                if not times:
                    continue
                lo = iso(_moment(call.started_at) - MATCH_BEFORE)
                hi = iso(_moment(call.ended_at or call.started_at) + MATCH_AFTER)
                for i, at in enumerate(times):
                    if lo <= at <= hi:
                        del times[i]
                        matched.add(call.key)
                        break
    return matched


def _billing(conn: Any, importer: Importer, chosen: str | None) -> tuple[str, str]:
    if chosen is not None:
        return chosen, "option"
    if conn is not None and importer.proxy_providers:
        seen = store.latest_billing(conn, importer.name, importer.proxy_providers)
        if seen in BILLINGS:
            return seen, "meter"
    return importer.billing, "default"


def _provider(importer: Importer, billing: str) -> str:
    if billing == BILLING_SUBSCRIPTION and importer.subscription_provider:
        return importer.subscription_provider
    return importer.provider


def record_for(importer: Importer, call: ImportedCall, billing: str, basis: str,
               attribution: Attribution, repo: str | None) -> CallRecord:
    """The row for one imported call (not priced yet)."""
    u = call.usage
    extra = safe_extra(call.extra)
    extra["billing_basis"] = basis
    return CallRecord(
        id=str(uuid.uuid5(ID_NAMESPACE, call.key)),
        started_at=call.started_at,
        ended_at=call.ended_at,
        provider=_provider(importer, billing),
        endpoint_kind=importer.endpoint_kind,
        host="",  # not observed: the log does not say which endpoint the tool used
        method="",
        path="",
        model=call.model,
        complete=True,
        billable=True,
        usage_reported=True,
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens,
        cache_write_1h_tokens=u.cache_write_1h_tokens,
        reasoning_tokens=u.reasoning_tokens,
        billing=billing,
        project=attribution.project,
        project_source=attribution.source,
        repo=repo,
        branch=call.branch,
        client=importer.name,
        provider_request_id=call.request_ids[0] if call.request_ids else None,
        source=SOURCE_IMPORT,
        import_key=call.key,
        extra=extra,
        price_provider_id=importer.price_provider_id,
    )


def _price(pricer: Pricer, record: CallRecord) -> None:
    """As the writer prices a live call; a failure leaves the call unpriced, never lost."""
    try:
        price = pricer.price(record)
    except Exception as exc:  # pricing must never cost the row (the price source says what happened)
        record.priced, record.price_source = False, f"pricing error: {type(exc).__name__}"
        return
    record.cost_nanos, record.priced, record.price_source = price.cost_nanos, price.priced, price.source
    record.cache_savings_nanos = price.cache_savings_nanos


def run(
    importer: Importer,
    places: Sequence[Path],
    *,
    db: Path,
    attributors: Sequence[Attributor],
    pricer: Pricer,
    now: datetime.datetime,
    since: datetime.datetime | None = None,
    billing: str | None = None,
    dry_run: bool = False,
) -> ImportResult:
    """Import (or, with `dry_run`, count) the calls in `importer`'s logs under `places` into `db`."""
    result = ImportResult(importer.name, importer.title or importer.name, dry_run, [str(p) for p in places])
    found = collect(importer, places, result.stats)
    result.calls = len(found)
    settled = iso(now - datetime.timedelta(seconds=SETTLE_SECONDS))
    start = iso(since) if since is not None else None
    calls: list[ImportedCall] = []
    for call in found.values():
        if (call.ended_at or call.started_at) > settled:
            result.recent += 1
        elif start is not None and call.started_at < start:
            result.before_since += 1
        else:
            calls.append(call)
    calls.sort(key=lambda c: (c.started_at, c.key))
    conn = store.open_db(db, dry_run)
    try:
        result.billing, result.billing_basis = _billing(conn, importer, billing)
        known = store.existing_keys(conn, [c.key for c in calls]) if conn is not None else set()
        result.already_imported = len(known)
        fresh = [c for c in calls if c.key not in known]
        metered = _already_metered(conn, importer, fresh)
        result.already_metered = len(metered)
        attributed = _Attributor(attributors, importer.name)
        records = []
        for call in fresh:
            if call.key in metered:
                continue
            attribution, repo = attributed(call.cwd)
            record = record_for(importer, call, result.billing, result.billing_basis, attribution, repo)
            _price(pricer, record)
            records.append(record)
        if conn is not None and not dry_run:
            result.imported = store.insert(conn, records)
            result.already_imported += len(records) - result.imported  # another import got there first
            if billing is not None and known:
                result.rebilled = store.rebill(conn, sorted(known), billing, _provider(importer, billing))
        else:
            result.imported = len(records)
    finally:
        if conn is not None:
            conn.close()
    for record in records:
        if record.billable and not record.priced:
            result.unpriced += 1
        elif record.billing == BILLING_SUBSCRIPTION:
            result.subscription_cost_nanos += record.cost_nanos or 0
        else:
            result.cost_nanos += record.cost_nanos or 0
    if records:
        result.first_at, result.last_at = records[0].started_at, records[-1].started_at
    return result


def no_logs(importer: Importer, places: Sequence[Path]) -> HaltonError:
    where = " or ".join(str(p) for p in places) or "(nowhere)"
    return HaltonError(f"no {importer.title or importer.name} logs found at {where}; pass --path DIR where they are")


def found_any(places: Sequence[Path]) -> bool:
    return any(p.exists() for p in places)
