"""What the loopback API answers: plain functions of `(paths, query)` that return JSON-ready values.

`serve/api.py` owns HTTP (hosts, authentication, limits, headers) and runs these in a worker thread; this
module owns the data. The interface:

* `ROUTES`: JSON GET endpoints by exact path; the return value is sent as JSON.
* `CALL_DETAIL(paths, call_id)`: `GET /v1/calls/<id>`; `LookupError` answers 404.
* `EXPORTS`: streaming downloads by path: `(content_type, filename, chunks)`; the chunks are written to the
  client one by one as they come, never joined in memory.
* `new_calls(paths, after)`: calls that ended after a cursor (None: start from now), for `GET /v1/live`.

A `UsageError` answers 400, any other `HaltonError` 503, anything else 500.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

from halton_meter import __version__
from halton_meter.errors import UsageError
from halton_meter.paths import Paths

Query = dict[str, list[str]]


def _stats(paths: Paths, query: Query) -> dict[str, Any]:
    from halton_meter.serve.stats import CORE_STATS, EDGE_STATS, read_stats

    run = paths.run_dir
    return {"core": read_stats(run / CORE_STATS), "edge": read_stats(run / EDGE_STATS), "version": __version__}


def _calls(paths: Paths, query: Query) -> dict[str, Any]:
    from halton_meter.store.queries import list_calls, open_reader
    from halton_meter.store.schema import initialised

    limit = _int(query, "limit", 50, 1, 1000)
    records = list_calls(open_reader(paths.db), limit) if initialised(paths.db) else []
    return {"calls": [r.to_public() for r in records]}


def _report(paths: Paths, query: Query) -> dict[str, Any]:
    """The `report --json` document. Parameters mirror the options: `since`, `until`, `window` (today,
    yesterday, week, month), `by` (repeat or comma-separate), `project`, `model`, `provider`, `client`,
    `branch`, `key` (each repeatable), `vs_previous=1`."""
    from halton_meter import report
    from halton_meter.config import load_config
    from halton_meter.store.aggregate import Filters
    from halton_meter.timewindow import DEFAULT_SINCE, resolve_window

    allowed = {"since", "until", "window", "by", "vs_previous", "project", "model", "provider", "client",
               "branch", "key"}
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise UsageError(f"unknown parameter {unknown[0]!r}; use {', '.join(sorted(allowed))}")
    single = {name: values[-1] for name, values in query.items() if name in ("since", "until", "window")}
    calendar = single.get("window")
    if calendar is not None and calendar not in ("today", "yesterday", "week", "month"):
        raise UsageError(f"window {calendar!r} is not a window; use today, yesterday, week or month")
    flags: dict[str, Any] = {calendar: True} if calendar else {}
    window = resolve_window(**flags, since=single.get("since"),
                            until=single.get("until"), default_since=DEFAULT_SINCE, prefix="")
    key_names = load_config(paths).key_names
    # five positional fields (project … branch): mypy cannot count a starred generator
    filters = Filters(*(tuple(query.get(name, ())) for name in ("project", "model", "provider", "client",  # type: ignore[misc]
                                                                 "branch")),
                      key=report.key_filter(query.get("key", []), key_names))
    vs_previous = query.get("vs_previous", ["0"])[-1].lower() in ("1", "true", "yes")
    return report.build(paths.db, window, by=report.parse_by(query.get("by", [])) or report.DEFAULT_BY,
                        filters=filters, vs_previous=vs_previous, key_names=key_names).to_json()


def _projects(paths: Paths, query: Query) -> dict[str, Any]:
    from halton_meter.store.queries import open_reader, project_summaries
    from halton_meter.store.schema import initialised
    from halton_meter.timewindow import resolve_window

    window = resolve_window(since=query.get("since", [None])[-1], until=query.get("until", [None])[-1],
                            default_since=None, prefix="")
    summaries = project_summaries(open_reader(paths.db), window.since_iso, window.until_iso) \
        if initialised(paths.db) else []
    return {"window": window.label, "since": window.since_iso, "until": window.until_iso,
            "projects": [s.to_json() for s in summaries]}


def _int(query: Query, name: str, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(query.get(name, [default])[0])))
    except ValueError:
        return default


ROUTES: dict[str, Callable[[Paths, Query], dict[str, Any]]] = {
    "/v1/stats": _stats,
    "/v1/calls": _calls,
    "/v1/report": _report,
    "/v1/projects": _projects,
}


def call_detail(paths: Paths, call_id: str) -> dict[str, Any]:
    """One call's public fields; LookupError when there is no such call."""
    import sqlalchemy as sa

    from halton_meter.store.queries import open_reader
    from halton_meter.store.schema import calls, initialised
    from halton_meter.types import CallRecord

    if not initialised(paths.db):
        raise LookupError(call_id)
    columns = [c for c in calls.columns if c.name != "recorded_at"]
    with open_reader(paths.db).connect() as conn:
        row = conn.execute(sa.select(*columns).where(calls.c.id == call_id)).first()
    if row is None:
        raise LookupError(call_id)
    return {"call": CallRecord(**{c.name: row._mapping[c.name] for c in columns}).to_public()}


CALL_DETAIL: Callable[[Paths, str], dict[str, Any]] = call_detail

EXPORT_BATCH = 1000


def _export_records(paths: Paths) -> Iterator[dict[str, Any]]:
    """Every call, oldest row first, read in batches (each on its own short read)."""
    import sqlalchemy as sa

    from halton_meter.store.queries import open_reader
    from halton_meter.store.schema import calls, initialised
    from halton_meter.types import CallRecord

    if not initialised(paths.db):
        return
    engine = open_reader(paths.db)
    rowid: sa.ColumnElement[Any] = sa.literal_column("calls.rowid")
    columns = [c for c in calls.columns if c.name != "recorded_at"]
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(rowid.label("row_id"), *columns).where(rowid > last)
                                .order_by(rowid).limit(EXPORT_BATCH)).all()
        for row in rows:
            yield CallRecord(**{c.name: row._mapping[c.name] for c in columns}).to_public()
        if len(rows) < EXPORT_BATCH:
            return
        last = rows[-1].row_id


def _export_csv(paths: Paths, query: Query) -> tuple[str, str, Iterator[bytes]]:
    from halton_meter.types import PUBLIC_FIELDS

    def chunks() -> Iterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(PUBLIC_FIELDS)
        for count, record in enumerate(_export_records(paths), 1):
            writer.writerow(["" if record[f] is None else record[f] for f in PUBLIC_FIELDS])
            if count % 200 == 0:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode()

    return "text/csv; charset=utf-8", "halton-meter-calls.csv", chunks()


def _export_json(paths: Paths, query: Query) -> tuple[str, str, Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        yield b"["
        for count, record in enumerate(_export_records(paths)):
            yield (b"," if count else b"") + json.dumps(record, default=str).encode()
        yield b"]\n"

    return "application/json", "halton-meter-calls.json", chunks()


EXPORTS: dict[str, Callable[[Paths, Query], tuple[str, str, Iterator[bytes]]]] = {
    "/v1/export.csv": _export_csv,
    "/v1/export.json": _export_json,
}


def new_calls(paths: Paths, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Calls that ended after the cursor `after`, oldest first, and the next cursor. None: start from now
    (no calls, the current cursor). A call is reported once, when it ends."""
    from halton_meter.store.queries import Tail, open_reader, tail_poll, tail_start
    from halton_meter.store.schema import initialised

    if not initialised(paths.db):
        return [], after if after is not None else "0"
    engine = open_reader(paths.db)
    if after is None:
        return [], _cursor(tail_start(engine))
    last, _, pending = after.partition(":")
    try:
        tail = Tail(int(last), {int(p) for p in pending.split(",") if p})
    except ValueError:
        raise UsageError(f"cursor {after!r} is not a cursor") from None
    records = tail_poll(engine, tail)
    return [r.to_public() for r in records], _cursor(tail)


def _cursor(tail: Any) -> str:
    return f"{tail.last_rowid}:{','.join(str(p) for p in sorted(tail.pending))}"
