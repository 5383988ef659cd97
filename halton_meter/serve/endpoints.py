"""What the loopback API answers (serve/api.py routes the requests here): JSON documents for the dashboard and
scripts, the streamed exports, one call's record and the live tail. Every function runs on a worker thread,
reads the database read-only and raises `UsageError` (HTTP 400, one line) for a bad parameter.

* `GET /v1/report` — the `report --json` document; parameters mirror its options (`since`, `until`, `window`
  = today | yesterday | week | month | last_month, `by`, `project` … `key`, `vs_previous=1`) plus `tz`, an
  IANA zone (default: the meter's own) in which days, hours, calendar windows and dates are read, and
  `latency=0`, which leaves the p95 fields null instead of reading the latency histograms (most of a long
  window's cost; the daily chart shows no percentile).
* `GET /v1/overview?tz=` — {"tz", "periods": {"today", "week", "month", "last_month"}}: each the /v1/report
  document for that window with `vs_previous=1&latency=0`, all four at one moment.
* `GET /v1/calls` — the explorer: newest first, keyset-paged (`cursor` ← `next_cursor`), filtered.
* `GET /v1/status` — `status --json` (the doctor's fast checks, run as the CLI runs them) plus `gaps_daily`.
* `GET /v1/budgets` — `budgets --json`: each budget's spend, limit, share, reset and state.
* `GET /v1/plan` — `plan --json`: each plan window (5-hour, weekly, …) and API-key limit where it stands now.
* `GET /v1/stats`, `GET /v1/projects` — as before.
* `GET /v1/calls/<id>` (`CALL_DETAIL`), `GET /v1/export.csv|json` (`EXPORTS`), the live tail (`new_calls`).

Nothing here returns a prompt, a response body or a credential: records are `CallRecord.to_public()`, and
captured bodies (another table) are never read.

Why this module is long: it is the API's whole read surface — seven JSON endpoints, two streamed exports, the
call detail and the live tail — each a thin, parameter-checking layer over `report` and `store`; kept together
so the parameters mean the same thing everywhere (filters, `tz`, `since`/`until`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import os
import sqlite3
import subprocess
import sys
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from halton_meter import __version__
from halton_meter.errors import UsageError
from halton_meter.paths import Paths
from halton_meter.store.daycache import DayCache
from halton_meter.types import PUBLIC_FIELDS

if TYPE_CHECKING:
    from halton_meter.store.aggregate import Filters
    from halton_meter.store.explore import Selection

Query = dict[str, list[str]]
EXPORT_BATCH = 1000
"""Rows read per query while exporting: the most an export holds in memory at once."""
CALLS_LIMIT_MAX = 500
STATUS_TIMEOUT = 30.0
GAP_DAYS = 30
_FILTERS = ("project", "model", "provider", "client", "branch", "key")
_WINDOWS = ("today", "yesterday", "week", "month", "last_month")
DAY_CACHE = DayCache()
"""Closed days' sums, shared by every report this process serves (store/daycache.py)."""


def _now() -> datetime.datetime:
    """The moment windows end at (tests pin it)."""
    return datetime.datetime.now(datetime.UTC)


def _check(query: Query, allowed: set[str]) -> None:
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise UsageError(f"unknown parameter {unknown[0]!r}; use {', '.join(sorted(allowed))}")


def _one(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _zone(query: Query) -> zoneinfo.ZoneInfo | None:
    from halton_meter.timewindow import parse_zone

    name = _one(query, "tz")
    return parse_zone(name) if name else None


def local_zone_name() -> str | None:
    """The meter's own zone as an IANA name when it can tell (TZ, else /etc/localtime's target)."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name and not name.startswith("/"):
        return name
    try:
        target = os.path.realpath(name or "/etc/localtime")
    except OSError:
        return None
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else None


@contextlib.contextmanager
def _snapshot(db: Path, transaction: bool = True) -> Iterator[sqlite3.Connection | None]:
    """One read-only connection for the whole request (None before the meter created the database), in one
    read transaction (a consistent snapshot; the writer carries on) unless `transaction` is False."""
    from halton_meter.errors import DatabaseError
    from halton_meter.store.schema import open_initialised

    conn = open_initialised(db)
    if conn is None:
        yield None
        return
    try:
        conn.isolation_level = None
        conn.execute("PRAGMA query_only = ON")
        if transaction:
            conn.execute("BEGIN")
        yield conn
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"cannot read database {db}: {exc}; `halton-meter doctor` checks it") from None
    finally:
        conn.close()


def _filters(paths: Paths, query: Query) -> tuple[Filters, Mapping[str, str]]:
    from halton_meter import report
    from halton_meter.config import load_config
    from halton_meter.store.aggregate import Filters

    key_names = load_config(paths).key_names
    values = {name: tuple(v for v in query.get(name, ()) if v) for name in _FILTERS}
    key = report.key_filter(values.pop("key"), key_names)
    return Filters(**values, key=key), key_names


# ---- /v1/stats, /v1/projects ------------------------------------------------------------------------------


def stats(paths: Paths, query: Query) -> dict[str, Any]:
    from halton_meter.serve.stats import CORE_STATS, EDGE_STATS, read_stats

    run = paths.run_dir
    return {"core": read_stats(run / CORE_STATS), "edge": read_stats(run / EDGE_STATS), "version": __version__}


def projects(paths: Paths, query: Query) -> dict[str, Any]:
    from halton_meter.store.queries import open_reader, project_summaries
    from halton_meter.store.schema import initialised
    from halton_meter.timewindow import in_zone, resolve_window

    with in_zone(_zone(query)):
        window = resolve_window(since=_one(query, "since"), until=_one(query, "until"), default_since=None,
                                prefix="")
    summaries = project_summaries(open_reader(paths.db), window.since_iso, window.until_iso) \
        if initialised(paths.db) else []
    return {"window": window.label, "since": window.since_iso, "until": window.until_iso,
            "projects": [s.to_json() for s in summaries]}


# ---- /v1/report, /v1/overview -----------------------------------------------------------------------------

_REPORT_PARAMS = {"since", "until", "window", "by", "vs_previous", "tz", "latency", *_FILTERS}


def report_document(paths: Paths, query: Query, now: datetime.datetime | None = None,
                    conn: sqlite3.Connection | None = None) -> dict[str, Any]:
    """The `report --json` document, read in the `tz` zone (the meter's own when absent); from `conn` when
    given (several reports from one snapshot), else from a snapshot of its own."""
    from halton_meter import report
    from halton_meter.timewindow import DEFAULT_SINCE, in_zone, resolve_window

    _check(query, _REPORT_PARAMS)
    calendar = _one(query, "window")
    if calendar is not None and calendar not in _WINDOWS:
        raise UsageError(f"window {calendar!r} is not a window; use {', '.join(_WINDOWS)}")
    filters, key_names = _filters(paths, query)
    vs_previous = (_one(query, "vs_previous") or "0").lower() in ("1", "true", "yes")
    latency = (_one(query, "latency") or "1").lower() not in ("0", "false", "no")
    by = report.parse_by(query.get("by", [])) or report.DEFAULT_BY
    with in_zone(_zone(query)):
        flags: dict[str, Any] = {calendar: True} if calendar else {}
        window = resolve_window(**flags, since=_one(query, "since"), until=_one(query, "until"),
                                default_since=DEFAULT_SINCE, now=now or _now(), prefix="")
        if conn is not None:
            return report.build(paths.db, window, by=by, filters=filters, vs_previous=vs_previous,
                                key_names=key_names, conn=conn, latency=latency, cache=DAY_CACHE).to_json()
        with _snapshot(paths.db) as own:
            return report.build(paths.db if own is not None else None, window, by=by, filters=filters,
                                vs_previous=vs_previous, key_names=key_names, conn=own,
                                latency=latency, cache=DAY_CACHE).to_json()


def overview(paths: Paths, query: Query) -> dict[str, Any]:
    """Today, this week, this month and last month, each against the period before, at one moment."""
    _check(query, {"tz"})
    now = _now()
    tz = _one(query, "tz")
    base = {"vs_previous": ["1"], "latency": ["0"], **({"tz": [tz]} if tz else {})}
    with _snapshot(paths.db) as conn:
        periods = {name: report_document(paths, {**base, "window": [name]}, now, conn)
                   for name in ("today", "week", "month", "last_month")}
    return {"tz": tz or local_zone_name(), "periods": periods}


# ---- /v1/calls, /v1/calls/<id>, exports, live tail -----------------------------------------------------------

_CALLS_PARAMS = {*_FILTERS, "status", "since", "until", "tz", "q", "limit", "cursor"}


def _selection(paths: Paths, query: Query) -> Selection:
    from halton_meter.store.explore import Selection, parse_statuses
    from halton_meter.timewindow import in_zone, resolve_window

    filters, _ = _filters(paths, query)
    zone = _zone(query)  # checked even when no time needs it
    since, until = _one(query, "since"), _one(query, "until")
    since_iso = until_iso = None
    if since is not None or until is not None:
        with in_zone(zone):
            window = resolve_window(since=since, until=until, default_since=None, now=_now(), prefix="")
        since_iso = window.since_iso if since is not None else None
        until_iso = window.until_iso if until is not None else None
    q = (_one(query, "q") or "").strip() or None
    return Selection(filters, parse_statuses(query.get("status", [])), since_iso, until_iso, q)


def calls(paths: Paths, query: Query) -> dict[str, Any]:
    """One page of the explorer: {"calls": [public records, newest first], "next_cursor": str | None}."""
    from halton_meter.store.explore import decode_cursor, encode_cursor, page

    _check(query, _CALLS_PARAMS)
    text = _one(query, "limit")
    try:
        limit = 50 if text is None else int(text)
    except ValueError:
        raise UsageError(f"limit {text!r} is not a number; use 1 to {CALLS_LIMIT_MAX}") from None
    if limit < 1:
        raise UsageError(f"limit {limit} is too small; use 1 to {CALLS_LIMIT_MAX}")
    limit = min(limit, CALLS_LIMIT_MAX)  # a larger one (the API once allowed 1000) is served capped
    selection = _selection(paths, query)
    cursor = _one(query, "cursor")
    after = decode_cursor(cursor) if cursor else None
    with _snapshot(paths.db, transaction=False) as conn:
        found = page(conn, selection, limit + 1, after) if conn is not None else []
    more = len(found) > limit
    found = found[:limit]
    next_cursor = encode_cursor(found[-1].started_at, found[-1].id) if more else None
    return {"calls": [r.to_public() for r in found], "next_cursor": next_cursor}


def call_detail(paths: Paths, call_id: str) -> dict[str, Any]:
    """{"call": every public field of one call}; LookupError when there is no such call."""
    from halton_meter.store.explore import by_id

    with _snapshot(paths.db, transaction=False) as conn:
        found = by_id(conn, call_id) if conn is not None else None
    if found is None:
        raise LookupError(call_id)
    return {"call": found.to_public()}


def _rows(paths: Paths, query: Query) -> Iterator[list[dict[str, Any]]]:
    """The export's selection in batches of `EXPORT_BATCH`, oldest first (as `calls --json` lists them), by
    keyset. Parameters and the database are checked before the first batch is asked for. Each batch opens
    its own short-lived connection, so the generator may be advanced from any thread (the server's workers)
    and holds nothing open between batches: a slow download never pins the write-ahead log."""
    from halton_meter.store import explore

    _check(query, _CALLS_PARAMS - {"limit", "cursor"})
    selection = _selection(paths, query)
    with _snapshot(paths.db, transaction=False) as conn:
        ready = conn is not None

    def generate() -> Iterator[list[dict[str, Any]]]:
        after: tuple[str, str] | None = None
        while ready:
            size = EXPORT_BATCH
            with _snapshot(paths.db, transaction=False) as conn:
                found = explore.page(conn, selection, size, after, descending=False) if conn is not None else []
            if found:
                yield [r.to_public() for r in found]
            if len(found) < size:
                return
            after = (found[-1].started_at, found[-1].id)

    return generate()


def _filename(ext: str) -> str:
    return f"halton-meter-calls-{_now().strftime('%Y%m%dT%H%M%SZ')}.{ext}"


def export_json(paths: Paths, query: Query) -> tuple[str, str, Iterator[bytes]]:
    rows = _rows(paths, query)

    def chunks() -> Iterator[bytes]:
        yield b"["
        separator = "\n"
        for batch in rows:
            parts = []
            for r in batch:
                parts.append(separator + json.dumps(r, separators=(",", ":")))
                separator = ",\n"
            yield "".join(parts).encode()
        yield b"\n]\n"

    return "application/json", _filename("json"), chunks()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return value


def export_csv(paths: Paths, query: Query) -> tuple[str, str, Iterator[bytes]]:
    rows = _rows(paths, query)

    def chunks() -> Iterator[bytes]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(PUBLIC_FIELDS)
        yield out.getvalue().encode()
        for batch in rows:
            out.seek(0)
            out.truncate()
            writer.writerows([_cell(r[name]) for name in PUBLIC_FIELDS] for r in batch)
            yield out.getvalue().encode()

    return "text/csv; charset=utf-8", _filename("csv"), chunks()


_ENGINES: dict[str, Any] = {}


def new_calls(paths: Paths, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Calls that ended since the cursor, oldest first, and the cursor to pass next time. None starts the
    tail now ([] and a cursor). A call is shown once, when it ends — as `calls --follow` shows them: the
    cursor carries the last row seen and the rows still in flight."""
    import base64
    import binascii

    from halton_meter.store.queries import Tail, open_reader, tail_poll, tail_start
    from halton_meter.store.schema import initialised

    tail = Tail()
    if after is not None:
        try:
            data = json.loads(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)))
            tail = Tail(int(data["r"]), {int(p) for p in data["p"]})
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise UsageError("cursor is not one this API gave: pass the last cursor back unchanged") from None
    found: list[dict[str, Any]] = []
    if initialised(paths.db):
        engine = _ENGINES.get(str(paths.db))
        if engine is None:
            engine = _ENGINES[str(paths.db)] = open_reader(paths.db)
        if after is None:
            tail = tail_start(engine)
        else:
            found = [r.to_public() for r in tail_poll(engine, tail)]
    text = json.dumps({"r": tail.last_rowid, "p": sorted(tail.pending)}, separators=(",", ":"))
    return found, base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# ---- /v1/status -------------------------------------------------------------------------------------------


def status(paths: Paths, query: Query) -> dict[str, Any]:
    """`halton-meter status --json` (the same checks, run by the same command against this meter's home) and
    `gaps_daily`: what passed unmetered on each of the last 30 local days, oldest first."""
    _check(query, {"tz"})
    zone = _zone(query)
    env = {**os.environ, "HALTON_METER_HOME": str(paths.home), "NO_COLOR": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "halton_meter", "status", "--json"], env=env,
                              capture_output=True, text=True, timeout=STATUS_TIMEOUT, check=False)
        data: dict[str, Any] = json.loads(done.stdout)
    except (subprocess.TimeoutExpired, ValueError, OSError) as exc:
        data = {"verdict": "BROKEN", "summary": f"status could not run: {type(exc).__name__}", "rows": []}
    return {**data, "gaps_daily": gaps_daily(paths, zone)}


def gaps_daily(paths: Paths, zone: zoneinfo.ZoneInfo | None, days: int = GAP_DAYS) -> list[dict[str, Any]]:
    from halton_meter.store.gaps import SUMMARY_SELECT, GapSummary, pending
    from halton_meter.timewindow import in_zone, iso, local, local_midnight

    with in_zone(zone):
        now = _now()
        today = local(now).date()
        dates = [today - datetime.timedelta(days=days - 1 - i) for i in range(days)]
        starts = [iso(local_midnight(d)) for d in dates]
        per_day = {d: GapSummary() for d in dates}

        def day_of(at: str) -> datetime.date | None:
            for i in range(len(starts) - 1, -1, -1):
                if at >= starts[i]:
                    return dates[i]
            return None

        until = iso(now)
        seen: set[str] = set()
        with _snapshot(paths.db) as conn:
            rows = conn.execute(SUMMARY_SELECT + " WHERE at >= ? AND at < ?", (starts[0], until)).fetchall() \
                if conn is not None else []
        if rows:
            for kind, connections, n, estimated, up, down, at, reason, gap_id in rows:
                day = day_of(at)
                if day is not None:
                    per_day[day].add(kind, connections, n, estimated, up, down, at, reason)
                seen.add(gap_id)
        for gap_id, gap in pending(paths.db.parent / "spool").items():
            at = gap.get("at")
            if gap_id in seen or not at or not (starts[0] <= at < until):
                continue
            day = day_of(at)
            if day is not None:
                per_day[day].add(gap.get("kind"), gap.get("connections"), gap.get("calls"),
                                 gap.get("calls_estimated"), gap.get("bytes_up"), gap.get("bytes_down"), at,
                                 gap.get("reason"))
    return [{"date": d.isoformat(), **per_day[d].to_json()} for d in dates]


# ---- the interface serve/api.py routes to ----------------------------------------------------------------------

def plan(paths: Paths, query: Query) -> dict[str, Any]:
    """`plan --json`: {"now", "windows": [plan windows], "api": [API-key rate limits]}, where each stands now."""
    import time

    from halton_meter import plan as plans
    from halton_meter.attribution.keys import key_label
    from halton_meter.clock import utc_stamp
    from halton_meter.config import load_config

    _check(query, {"tz"})  # the page sends its zone with every request; the times here are UTC
    key_names = load_config(paths).key_names
    moment = time.time()
    with _snapshot(paths.db) as conn:
        states = plans.current(conn, moment) if conn is not None else []
    rows = []
    for state in states:
        row = state.to_json()
        row["account_label"] = key_label(state.account, key_names) if state.account else None
        rows.append(row)
    return {"now": utc_stamp(moment), "windows": [r for r in rows if not r["api"]],
            "api": [r for r in rows if r["api"]]}


def budgets(paths: Paths, query: Query) -> dict[str, Any]:
    """`budgets --json`: each budget's spend, limit, share, reset and state."""
    from halton_meter.budgets.view import document
    from halton_meter.config import load_config

    _check(query, {"tz"})
    return document(load_config(paths), _now())


ROUTES: dict[str, Callable[[Paths, Query], dict[str, Any]]] = {
    "/v1/stats": stats,
    "/v1/calls": calls,
    "/v1/report": report_document,
    "/v1/projects": projects,
    "/v1/overview": overview,
    "/v1/status": status,
    "/v1/plan": plan,
    "/v1/budgets": budgets,
}
# The handlers' names in serve/api.py before they moved here.
_stats, _calls, _report, _projects = stats, calls, report_document, projects
CALL_DETAIL: Callable[[Paths, str], dict[str, Any]] = call_detail
EXPORTS: dict[str, Callable[[Paths, Query], tuple[str, str, Iterator[bytes]]]] = {
    "/v1/export.csv": export_csv,
    "/v1/export.json": export_json,
}
