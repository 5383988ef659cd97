"""Rollups kept by the meter's writer, in the transaction that writes the rows.

The rollup tables (`store/rollup.py`) are kept exact by triggers on `calls`, for every connection. The
meter's own writer is the one that writes all day, and the triggers cost it about as much again as the row
itself (six statements with subqueries per row, and no sharing between the rows of a batch). So the
writer's connection switches triggers off (`SQLITE_DBCONFIG_ENABLE_TRIGGER`, a setting of that one
connection) and does their work itself, in the same transaction:

* the rollups: each written row's contribution is worked out in Python with the same arithmetic as the
  trigger SQL (`rollup.SUMS`, `rollup.DIMENSIONS`, the 15-minute and day buckets, the histogram bins), the
  batch's contributions are summed per (bucket, dimensions) and each sum is one upsert;
* the closed-day generation counter (`store/daycache.py`): bumped once when a written row is older than
  `STABLE_SECONDS`;
* the sync change log (`store/synclog.py`): one entry per written row while sync is on.

Every other connection (reprice, retag, import, the start-up recovery's `core_crash` update, a hand-run
`sqlite3`) still runs the triggers, so hand-run SQL keeps the rollups right with nothing to rebuild.

Which rows a batch writes follows the writer's upsert exactly: a row is inserted when its id is new, and
replaces the stored row only when that one is provisional and the new one is not. A provisional row never
contributes, so a replacement only adds the final row's contribution.

Where Python and SQLite could disagree (a `started_at` not in the `YYYY-MM-DDTHH:MM:SS…` shape, or before
1970; a latency that is not a finite number below 2**52 µs), the batch is written with the triggers on
instead (`needs_triggers`): exact for any input, and the meter's own rows never take that path.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
import sqlite3
import time
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from halton_meter.store.daycache import STABLE_SECONDS
from halton_meter.store.rollup import BINS_PER_ROW, BUCKET_SECONDS, DAY_SECONDS, DIMENSIONS, SUMS, bin_floors

IN_PROGRESS = "in_progress"
_STAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d", re.ASCII)
_EXACT_FLOAT = 2.0 ** 52  # below it, SQLite's round() and Python's add-a-half-and-truncate agree
_FIELDS = ("id", "started_at", "endpoint_kind", "incomplete_reason", "project", "model", "model_requested",
           "provider", "client", "branch", "key_fingerprint", "billing", "input_tokens", "output_tokens",
           "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens", "cost_nanos",
           "cache_savings_nanos", "billable", "priced", "estimated", "complete", "error_type", "latency_ms",
           "ttft_ms")
_SUM_NAMES = tuple(SUMS)
_ROLLUP_SQL = (f"INSERT INTO rollup (bucket, dims, {', '.join(_SUM_NAMES)}) "
               f"VALUES ({', '.join('?' * (2 + len(_SUM_NAMES)))}) ON CONFLICT (bucket, dims) DO UPDATE SET "
               + ", ".join(f"{n} = {n} + excluded.{n}" for n in _SUM_NAMES))
_BINS = ", ".join(f"c{i}" for i in range(BINS_PER_ROW))
_HIST_SQL = {table: (f"INSERT INTO {table} (bucket, dims, metric, grp, n, {_BINS}) "
                     f"VALUES ({', '.join('?' * (5 + BINS_PER_ROW))}) "
                     "ON CONFLICT (bucket, dims, metric, grp) DO UPDATE SET n = n + excluded.n, "
                     + ", ".join(f"c{i} = c{i} + excluded.c{i}" for i in range(BINS_PER_ROW)))
             for table in ("rollup_hist", "rollup_hist_day")}
_DIMS_SELECT = f"SELECT id FROM rollup_dims WHERE {' AND '.join(f'{name} = ?' for name in DIMENSIONS)}"
_DIMS_INSERT = f"INSERT INTO rollup_dims ({', '.join(DIMENSIONS)}) VALUES ({', '.join('?' * len(DIMENSIONS))})"
_MAX_VARIABLES = 500

Row = Sequence[Any]


@contextmanager
def triggers_on(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run a statement with the triggers on, on a connection that has them off (rare: it makes SQLite
    prepare the connection's statements again)."""
    conn.setconfig(sqlite3.SQLITE_DBCONFIG_ENABLE_TRIGGER, True)
    try:
        yield conn
    finally:
        conn.setconfig(sqlite3.SQLITE_DBCONFIG_ENABLE_TRIGGER, False)


def switch_triggers_off(conn: sqlite3.Connection) -> None:
    conn.setconfig(sqlite3.SQLITE_DBCONFIG_ENABLE_TRIGGER, False)


def epoch(started_at: object) -> int | None:
    """Whole UTC seconds of a stamp, as `rollup.epoch_sql` computes them, or None where only SQLite can
    say (any other shape, a date Python refuses, a time before 1970)."""
    if not isinstance(started_at, str) or not _STAMP.match(started_at):
        return None
    minute = _minute_epoch(started_at[:16])
    second = int(started_at[17:19])
    if minute is None or second > 59:
        return None
    return minute + second


@functools.lru_cache(maxsize=4096)
def _minute_epoch(prefix: str) -> int | None:
    """`YYYY-MM-DD?HH:MM` as UTC epoch seconds (None: not a date, or before 1970). A batch's rows share a few
    minutes, so each is worked out once."""
    try:
        moment = datetime.datetime.fromisoformat(prefix + ":00")
    except ValueError:
        return None
    seconds = int(moment.replace(tzinfo=datetime.UTC).timestamp())
    return seconds if seconds >= 0 else None


def micros(value: object) -> int | None:
    """`CAST(round(value * 1000) AS INTEGER)` for a finite value below 2**52 (None: not such a value)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    scaled = value * 1000.0
    if not math.isfinite(scaled) or abs(scaled) >= _EXACT_FLOAT:
        return None
    return int(scaled + 0.5) if scaled >= 0 else -int(-scaled + 0.5)


class RollupWriter:
    """The trigger work for the writer's batches. `columns` is the order of the writer's row tuples."""

    def __init__(self, columns: Sequence[str]) -> None:
        index = {name: i for i, name in enumerate(columns)}
        missing = [name for name in _FIELDS if name not in index]
        if missing:
            raise ValueError(f"the writer's rows lack {missing}")
        self._at = {name: index[name] for name in _FIELDS}
        self._floors = bin_floors()

    # ---- which rows a batch writes -------------------------------------------------------------------

    def needs_triggers(self, rows: Sequence[Row]) -> bool:
        """True when some row's contribution is one only SQLite can work out exactly (see the module)."""
        at = self._at
        for row in rows:
            if epoch(row[at["started_at"]]) is None:
                return True
            for name in ("latency_ms", "ttft_ms"):
                value = row[at[name]]
                if value is not None and micros(value) is None:
                    return True
        return False

    def stored(self, conn: sqlite3.Connection, rows: Sequence[Row]) -> dict[str, tuple[bool, object]]:
        """For the batch's ids already stored: (is it provisional, its started_at). Read before the upsert."""
        ids = list({row[self._at["id"]] for row in rows})
        found: dict[str, tuple[bool, object]] = {}
        for start in range(0, len(ids), _MAX_VARIABLES):
            chunk = ids[start:start + _MAX_VARIABLES]
            sql = (f"SELECT id, incomplete_reason IS '{IN_PROGRESS}', started_at FROM calls "
                   f"WHERE id IN ({', '.join('?' * len(chunk))})")
            for rid, provisional, started_at in conn.execute(sql, chunk):
                found[rid] = (bool(provisional), started_at)
        return found

    def written(self, rows: Sequence[Row], stored: dict[str, tuple[bool, object]]) -> list[tuple[Row, object]]:
        """The rows the upsert writes, in order, each with the started_at of the row it replaced (None when
        it was inserted). `stored` is updated as the upsert would update the table."""
        at = self._at
        out: list[tuple[Row, object]] = []
        for row in rows:
            rid = row[at["id"]]
            provisional = row[at["incomplete_reason"]] == IN_PROGRESS
            before = stored.get(rid)
            if before is None:
                out.append((row, None))
            elif before[0] and not provisional:
                out.append((row, before[1]))
            else:
                continue
            stored[rid] = (provisional, row[at["started_at"]])
        return out

    # ---- their effects ---------------------------------------------------------------------------------

    def apply(self, conn: sqlite3.Connection, written: list[tuple[Row, object]]) -> None:
        """What the triggers would have done for these written rows, in the caller's transaction."""
        if not written:
            return
        at = self._at
        sums: dict[tuple[int, tuple[Any, ...]], list[int]] = {}
        hists: dict[tuple[str, int, tuple[Any, ...], int, int], list[int]] = {}
        old_before = time.time() - STABLE_SECONDS + 5  # a little early: a spare bump only empties a cache
        old = False
        floors = self._floors
        for row, replaced_start in written:
            seconds = epoch(row[at["started_at"]])
            assert seconds is not None  # needs_triggers sent any other batch to the triggers
            if seconds < old_before or (replaced_start is not None and (epoch(replaced_start) or 0) < old_before):
                old = True
            if row[at["endpoint_kind"]] == "self_test" or row[at["incomplete_reason"]] == IN_PROGRESS:
                continue
            model = row[at["model"]]
            if model is None:
                model = row[at["model_requested"]]
            dims = (row[at["project"]], "" if model is None else model, row[at["provider"]],
                    _blank(row[at["client"]]), _blank(row[at["branch"]]), _blank(row[at["key_fingerprint"]]),
                    row[at["billing"]])
            latency, ttft = row[at["latency_ms"]], row[at["ttft_ms"]]
            contribution = (
                1, row[at["input_tokens"]] or 0, row[at["output_tokens"]] or 0, row[at["cache_read_tokens"]] or 0,
                row[at["cache_write_tokens"]] or 0, row[at["cache_write_1h_tokens"]] or 0,
                row[at["reasoning_tokens"]] or 0, row[at["cost_nanos"]] or 0, row[at["cache_savings_nanos"]] or 0,
                int(row[at["billable"]] != 0 and row[at["priced"]] == 0), int(row[at["estimated"]] != 0),
                int(row[at["complete"]] == 0), int(row[at["error_type"]] is not None),
                micros(latency) or 0, int(latency is not None), micros(ttft) or 0, int(ttft is not None))
            key = (seconds // BUCKET_SECONDS * BUCKET_SECONDS, dims)
            total = sums.get(key)
            if total is None:
                sums[key] = list(contribution)
            else:
                for i, value in enumerate(contribution):
                    total[i] += value
            for metric, value in ((0, latency), (1, ttft)):
                if value is None:
                    continue
                k = bisect_right(floors, value) - 1
                for table, width in (("rollup_hist", BUCKET_SECONDS), ("rollup_hist_day", DAY_SECONDS)):
                    hkey = (table, seconds // width * width, dims, metric, k // BINS_PER_ROW)
                    counts = hists.get(hkey)
                    if counts is None:
                        counts = hists[hkey] = [0] * (1 + BINS_PER_ROW)
                    counts[0] += 1
                    counts[1 + k % BINS_PER_ROW] += 1
        ids: dict[tuple[Any, ...], int] = {}
        if sums:
            conn.executemany(_ROLLUP_SQL, [(bucket, self._dims_id(conn, ids, dims), *total)
                                           for (bucket, dims), total in sums.items()])
        for table, sql in _HIST_SQL.items():
            rows = [(bucket, self._dims_id(conn, ids, dims), metric, grp, *counts)
                    for (name, bucket, dims, metric, grp), counts in hists.items() if name == table]
            if rows:
                conn.executemany(sql, rows)
        if old:
            conn.execute("UPDATE rollup_generation SET n = n + 1 WHERE id = 0")
        if conn.execute("SELECT 1 FROM sync_enabled LIMIT 1").fetchone() is not None:
            conn.executemany("INSERT INTO sync_log (call_id) VALUES (?)", [(row[at["id"]],) for row, _ in written])

    @staticmethod
    def _dims_id(conn: sqlite3.Connection, ids: dict[tuple[Any, ...], int], dims: tuple[Any, ...]) -> int:
        found = ids.get(dims)
        if found is not None:
            return found
        row = conn.execute(_DIMS_SELECT, dims).fetchone()
        found = row[0] if row is not None else conn.execute(_DIMS_INSERT, dims).lastrowid
        assert found is not None
        ids[dims] = found
        return found


def _blank(value: object) -> object:
    return "" if value is None else value


if tuple(SUMS) != ("calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                   "cache_write_1h_tokens", "reasoning_tokens", "cost_nanos", "cache_savings_nanos", "unpriced",
                   "estimated", "incomplete", "errors", "latency_us", "latency_n", "ttft_us", "ttft_n"):
    raise RuntimeError("rollup.SUMS changed: RollupWriter.apply adds its contributions in that order")
