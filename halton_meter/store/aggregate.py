"""Sums and latency histograms per group, for any window, exact: whole 15-minute buckets (and whole UTC days,
for histograms) come from the rollup tables, the rows at the window's edges from `calls`.

A database older than schema 7 (no rollups yet: the meter migrates it when it next starts) is read from
`calls` alone, with the same results, only slower.
"""

from __future__ import annotations

import bisect
import datetime
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halton_meter.errors import DatabaseError
from halton_meter.store import rollup
from halton_meter.store.daycache import DayCache, local_days
from halton_meter.store.rollup import BINS_PER_ROW, BUCKET_SECONDS, CONTRIBUTES, DAY_SECONDS, DIMENSIONS, SUMS
from halton_meter.store.schema import check_readable, connect_read_only
from halton_meter.timewindow import iso, offset_segments, utc_offset

GROUP_DIMENSIONS = {"project": "project", "model": "model", "provider": "provider", "client": "client",
                    "branch": "branch", "key": "key_fingerprint"}
"""`--by` name → rollup dimension."""
NONE_VALUE = "(none)"
"""How a filter names a missing value (no branch, no client, ...)."""
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_SUM_NAMES = list(SUMS)
_BIN_COLUMNS = [f"c{i}" for i in range(BINS_PER_ROW)]
_FLOORS = tuple(rollup.bin_floors())


@dataclass(frozen=True)
class Filters:
    """Each dimension's accepted values (any of them); empty means no filter. A value with `*`, `?` or `[` is
    a glob (`claude-sonnet-*`); `(none)` matches a missing value. `key` holds fingerprint prefixes."""

    project: tuple[str, ...] = ()
    model: tuple[str, ...] = ()
    provider: tuple[str, ...] = ()
    client: tuple[str, ...] = ()
    branch: tuple[str, ...] = ()
    key: tuple[str, ...] = ()

    def items(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(name, values) for name in GROUP_DIMENSIONS if (values := getattr(self, name))]

    def to_json(self) -> dict[str, list[str]]:
        return {name: list(values) for name, values in self.items()}


@dataclass
class Cells:
    """What `collect` found. `sums[(group values…, billing, period)]` is a list in `rollup.SUMS` order;
    `hists[(group values…, period)]` is [latency, ttft] bin → count. Group values are '' when missing;
    `period` is a local day number (days since 1970-01-01) or the UTC epoch of a local hour's start, else 0."""

    sums: dict[tuple[Any, ...], list[int]] = field(default_factory=dict)
    hists: dict[tuple[Any, ...], list[Counter[int]]] = field(default_factory=dict)
    floors: list[float] = field(default_factory=lambda: list(_FLOORS))
    used_rollup: bool = False


def _seconds(moment: datetime.datetime) -> tuple[int, bool]:
    """Whole seconds since the epoch (floor), and whether there is a fraction left."""
    delta = moment - _EPOCH
    whole = delta.days * DAY_SECONDS + delta.seconds
    return whole, delta.microseconds != 0


def _ceil_to(moment: datetime.datetime, step: int) -> int:
    whole, frac = _seconds(moment)
    return -((-(whole + (1 if frac else 0))) // step) * step


def _floor_to(moment: datetime.datetime, step: int) -> int:
    return (_seconds(moment)[0] // step) * step


def _at(epoch: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(seconds=epoch)


def _offset_sql(t: str, segments: list[tuple[int, int]]) -> str:
    if len(segments) == 1:
        return str(segments[0][1])
    cases = " ".join(f"WHEN {t} < {start} THEN {prev}" for (start, _), (_, prev) in zip(segments[1:], segments, strict=False))
    return f"(CASE {cases} ELSE {segments[-1][1]} END)"


def _period_sql(t: str, period: str | None, segments: list[tuple[int, int]]) -> str:
    if period is None:
        return "0"
    offset = _offset_sql(t, segments)
    if period == "day":
        return f"(({t} + {offset}) / 86400)"
    return f"((({t} + {offset}) / 3600) * 3600 - {offset})"


def _filter_sql(filters: Filters, column: Any) -> tuple[str, list[str]]:
    """`column(dimension)` gives the SQL for a dimension's value (as stored: '' when missing)."""
    clauses, params = [], []
    for name, values in filters.items():
        target = column(GROUP_DIMENSIONS[name])
        options = []
        for value in values:
            value = "" if value == NONE_VALUE else value
            if name == "key" and value:  # a fingerprint prefix
                options.append(f"{target} GLOB ?")
                params.append(value + "*")
            elif any(ch in value for ch in "*?["):
                options.append(f"{target} GLOB ?")
                params.append(value)
            else:
                options.append(f"{target} = ?")
                params.append(value)
        clauses.append("(" + " OR ".join(options) + ")")
    return (" AND ".join(clauses) or "1"), params


@contextmanager
def snapshot(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection holding one consistent snapshot (a read transaction: the writer carries on).
    DatabaseError (exit 3) when the file is missing, corrupt or too new."""
    check_readable(db)
    conn = connect_read_only(db)
    conn.isolation_level = None
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("BEGIN")
        yield conn
    except sqlite3.DatabaseError as exc:  # a damaged page, a file swapped underneath: say so, in one line
        raise DatabaseError(f"cannot read database {db}: {exc}; `halton-meter doctor` checks it") from None
    finally:
        conn.close()


def has_rollup(conn: sqlite3.Connection) -> bool:
    return conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('rollup', 'rollup_hist_day')"
    ).fetchone()[0] == 2


def collect(
    conn: sqlite3.Connection,
    since: datetime.datetime,
    until: datetime.datetime,
    *,
    group: Sequence[str] = (),
    period: str | None = None,
    filters: Filters | None = None,
    hist: bool = True,
    use_rollup: bool = True,
    only: Sequence[str] | None = None,
    cache: DayCache | None = None,
) -> Cells:
    """Sums (and, with `hist`, latency/TTFT histograms) of the calls with since <= started_at < until, per
    combination of the `group` dimensions (`--by` names), billing, and local `period` ('day', 'hour').
    `only` names the sums wanted (the others read 0). With `cache`, closed whole local days come from it
    (store/daycache.py): the same sums, read once per process."""
    filters = filters or Filters()
    dims = [GROUP_DIMENSIONS[g] for g in group]
    start, end = _seconds(since)[0], _seconds(until)[0] + 1
    segments = offset_segments(start, end)
    # Grouped by local day or hour, a bucket must never straddle two of them: true for every offset in use
    # (multiples of 15 minutes); a zone where it is not is read from the rows.
    aligned = period is None or (all(offset % BUCKET_SECONDS == 0 for _, offset in segments)
                                 and all(at % BUCKET_SECONDS == 0 for at, _ in segments[1:]))
    cells = Cells()
    rolled: tuple[int, int] | None = None
    if use_rollup and aligned and has_rollup(conn):
        a, b = _ceil_to(since, BUCKET_SECONDS), _floor_to(until, BUCKET_SECONDS)
        if a < b:
            rolled = (a, b)
        cells.used_rollup = True
        cells.floors = [row[0] for row in conn.execute("SELECT lo FROM rollup_bins ORDER BY lo")]
    if rolled is None:
        raw = [(iso(since), iso(until))]
    else:
        raw = [(iso(since), iso(_at(rolled[0])))] if since < _at(rolled[0]) else []
        if _at(rolled[1]) < until:
            raw.append((iso(_at(rolled[1])), iso(until)))
    wanted = set(only) if only is not None else set(SUMS)
    if rolled is not None:
        ranges = [rolled]
        if cache is not None and period in (None, "day"):
            ranges = _closed_days(conn, cells, cache, rolled, dims, period, segments, filters, wanted)
        _rolled_sums(conn, cells, ranges, dims, period, segments, filters, wanted)
        if hist:
            _rolled_hists(conn, cells, rolled, dims, period, segments, filters)
    if raw:
        _raw_sums(conn, cells, raw, dims, period, segments, filters, wanted)
        if hist:
            _raw_hists(conn, cells, raw, dims, period, segments, filters)
    return cells


def _closed_days(conn: sqlite3.Connection, cells: Cells, cache: DayCache, rolled: tuple[int, int], dims: list[str],
                 period: str | None, segments: list[tuple[int, int]], filters: Filters,
                 wanted: set[str]) -> list[tuple[int, int]]:
    """Add the closed whole local days of `rolled` to `cells` from `cache` (reading the missing ones once);
    return the bucket ranges still to read."""
    def read(spans: list[tuple[int, int]], names: frozenset[str]) -> dict[tuple[Any, ...], list[int]]:
        found: dict[tuple[Any, ...], list[int]] = {}
        for key, values in _rolled_rows(conn, spans, dims, "day", segments, filters, set(names)):
            found[key] = [int(v or 0) for v in values]
        return found

    served, left = cache.serve(conn, rolled, (tuple(dims), filters), frozenset(wanted),
                               local_days(*rolled, _offset_at(segments)), read)
    if period == "day":
        for number, sums in served:
            for key, values in sums.items():
                _add_sums(cells, (*key, number), values)
    else:  # one total per group: add the days up first
        total: dict[tuple[Any, ...], list[int]] = {}
        for _, sums in served:
            for key, values in sums.items():
                have = total.get(key)
                total[key] = list(values) if have is None else [a + b for a, b in zip(have, values, strict=True)]
        for key, values in total.items():
            _add_sums(cells, (*key, 0), values)
    return left


def _offset_at(segments: list[tuple[int, int]]) -> Callable[[int], int]:
    """The local offset at an epoch: from `segments` inside them (what the queries use), else from the zone."""
    starts = [start for start, _ in segments]

    def offset(t: int) -> int:
        if t < starts[0]:
            return utc_offset(t)
        return segments[bisect.bisect_right(starts, t) - 1][1]
    return offset


def _dims_filter(filters: Filters) -> tuple[str, list[str]]:
    where, params = _filter_sql(filters, lambda name: name)
    if not params:
        return "", []
    return f" AND dims IN (SELECT id FROM rollup_dims WHERE {where})", params


def _rolled_sums(conn: sqlite3.Connection, cells: Cells, ranges: list[tuple[int, int]], dims: list[str],
                 period: str | None, segments: list[tuple[int, int]], filters: Filters, wanted: set[str]) -> None:
    for key, values in _rolled_rows(conn, ranges, dims, period, segments, filters, wanted):
        _add_sums(cells, key, values)


def _rolled_rows(conn: sqlite3.Connection, ranges: list[tuple[int, int]], dims: list[str], period: str | None,
                 segments: list[tuple[int, int]], filters: Filters,
                 wanted: set[str]) -> Iterator[tuple[tuple[Any, ...], Sequence[int]]]:
    """((group values…, billing, period), sums) from the rollup's buckets in `ranges`."""
    if not ranges:
        return
    dims_filter, params = _dims_filter(filters)
    keys = [f"d.{d}" for d in dims] + ["d.billing"]
    inner = ", ".join(f"sum({name}) AS {name}" if name in wanted else f"0 AS {name}" for name in _SUM_NAMES)
    outer = ", ".join(f"sum(x.{name})" if name in wanted else "0" for name in _SUM_NAMES)
    where = " OR ".join("(bucket >= ? AND bucket < ?)" for _ in ranges)
    sql = (f"SELECT {', '.join(keys)}, x.p, {outer} FROM (SELECT dims, {_period_sql('bucket', period, segments)} AS p, "
           f"{inner} FROM rollup WHERE ({where}){dims_filter} GROUP BY dims, p) AS x "
           f"JOIN rollup_dims AS d ON d.id = x.dims GROUP BY {', '.join(keys)}, x.p")
    for row in conn.execute(sql, (*(v for r in ranges for v in r), *params)):
        yield tuple(row[: len(keys) + 1]), row[len(keys) + 1:]


def _raw_where(raw: list[tuple[str, str]], filters: Filters) -> tuple[str, list[str]]:
    ranges = " OR ".join("(X.started_at >= ? AND X.started_at < ?)" for _ in raw)
    where, params = _filter_sql(filters, lambda name: DIMENSIONS[name])
    return f"({ranges}) AND {CONTRIBUTES} AND {where}", [p for r in raw for p in r] + params


def _raw_sums(conn: sqlite3.Connection, cells: Cells, raw: list[tuple[str, str]], dims: list[str], period: str | None,
              segments: list[tuple[int, int]], filters: Filters, wanted: set[str]) -> None:
    where, params = _raw_where(raw, filters)
    keys = [DIMENSIONS[d] for d in dims] + ["X.billing"]
    epoch = rollup.epoch_sql("X")
    sums = ", ".join(f"sum({expr})" if name in wanted else "0" for name, expr in SUMS.items())
    sql = (f"SELECT {', '.join(keys)}, {_period_sql(epoch, period, segments)} AS p, {sums} FROM calls AS X "
           f"WHERE {where} GROUP BY {', '.join(f'{i + 1}' for i in range(len(keys) + 1))}")
    for row in conn.execute(sql, tuple(params)):
        _add_sums(cells, tuple(row[: len(keys) + 1]), row[len(keys) + 1:])


def _add_sums(cells: Cells, key: tuple[Any, ...], values: Sequence[int]) -> None:
    current = cells.sums.get(key)
    if current is None:
        cells.sums[key] = [int(v or 0) for v in values]
    else:
        cells.sums[key] = [a + int(v or 0) for a, v in zip(current, values, strict=True)]


def _rolled_hists(conn: sqlite3.Connection, cells: Cells, rolled: tuple[int, int], dims: list[str], period: str | None,
                  segments: list[tuple[int, int]], filters: Filters) -> None:
    a, b = rolled
    dims_filter, filter_params = _dims_filter(filters)
    parts: list[str] = []
    params: list[object] = []
    fine = [(a, b)]
    if period is None:
        da, db = -(-a // DAY_SECONDS) * DAY_SECONDS, (b // DAY_SECONDS) * DAY_SECONDS
        if da < db:
            fine = [(lo, hi) for lo, hi in ((a, da), (db, b)) if lo < hi]
            parts.append(f"SELECT bucket, dims, metric, grp, {', '.join(_BIN_COLUMNS)} FROM rollup_hist_day "
                         f"WHERE bucket >= ? AND bucket < ?{dims_filter}")
            params += [da, db, *filter_params]
    if fine:
        ranges = " OR ".join("(bucket >= ? AND bucket < ?)" for _ in fine)
        parts.append(f"SELECT bucket, dims, metric, grp, {', '.join(_BIN_COLUMNS)} FROM rollup_hist "
                     f"WHERE ({ranges}){dims_filter}")
        params += [v for r in fine for v in r]
        params += filter_params
    keys = [f"d.{d}" for d in dims]
    inner = ", ".join(f"sum({c}) AS {c}" for c in _BIN_COLUMNS)
    outer = ", ".join(f"sum(x.{c})" for c in _BIN_COLUMNS)
    group_keys = ", ".join([*keys, "x.p", "x.metric", "x.grp"])
    sql = (f"SELECT {group_keys}, {outer} FROM (SELECT dims, {_period_sql('bucket', period, segments)} AS p, metric, "
           f"grp, {inner} FROM ({' UNION ALL '.join(parts)}) GROUP BY dims, p, metric, grp) AS x "
           f"JOIN rollup_dims AS d ON d.id = x.dims GROUP BY {group_keys}")
    width = len(keys) + 1
    for row in conn.execute(sql, tuple(params)):
        metric, grp = row[width], row[width + 1]
        counter = _hist(cells, tuple(row[:width]))[metric]
        base = grp * BINS_PER_ROW
        for i, n in enumerate(row[width + 2:]):
            if n:
                counter[base + i] += n


def _raw_hists(conn: sqlite3.Connection, cells: Cells, raw: list[tuple[str, str]], dims: list[str], period: str | None,
               segments: list[tuple[int, int]], filters: Filters) -> None:
    where, params = _raw_where(raw, filters)
    keys = [DIMENSIONS[d] for d in dims]
    epoch = rollup.epoch_sql("X")
    sql = (f"SELECT {', '.join([*keys, _period_sql(epoch, period, segments)])}, X.latency_ms, X.ttft_ms FROM calls AS X "
           f"WHERE {where} AND (X.latency_ms IS NOT NULL OR X.ttft_ms IS NOT NULL)")
    floors = cells.floors
    width = len(keys) + 1
    for row in conn.execute(sql, tuple(params)):
        hists = _hist(cells, tuple(row[:width]))
        for metric, value in enumerate(row[width:]):
            if value is not None and value >= floors[0]:  # as the triggers do: -inf has no bin
                hists[metric][bisect.bisect_right(floors, value) - 1] += 1


def _hist(cells: Cells, key: tuple[Any, ...]) -> list[Counter[int]]:
    found = cells.hists.get(key)
    if found is None:
        found = cells.hists[key] = [Counter(), Counter()]
    return found


def percentile_95(counts: Counter[int], floors: Sequence[float]) -> float | None:
    """The nearest-rank 95th percentile, as the geometric middle of the bin that holds it (within 4.9%)."""
    total = sum(counts.values())
    if not total:
        return None
    rank = -(-total * 95 // 100)  # ceil(0.95 * total), exactly
    seen = 0
    for k in sorted(counts):
        seen += counts[k]
        if seen >= rank:
            if k == 0:
                return 0.5  # under 1 ms
            if k + 1 >= len(floors):
                return floors[k]
            return (floors[k] * floors[k + 1]) ** 0.5
    return None  # pragma: no cover - the loop always reaches the rank


def count_refused(conn: sqlite3.Connection, since: str, until: str, filters: Filters) -> int:
    """Calls a budget refused (`error_type = 'budget_exceeded'`: answered by the meter, never sent) in
    [since, until) that pass the report's `filters`."""
    where, params = _raw_where([(since, until)], filters)
    row = conn.execute(f"SELECT count(*) FROM calls AS X WHERE X.error_type = 'budget_exceeded' AND {where}",
                       tuple(params)).fetchone()
    return int(row[0])
