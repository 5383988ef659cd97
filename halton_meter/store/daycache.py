"""Closed days, summed once: the sums of whole local days that can no longer change, kept in memory by the
process that serves the dashboard, so a page that asks for the same months again (every refresh, the four
overview periods, a chart and its previous period) reads SQLite only for the last hours.

Which days are closed. The meter writes a call's row when the call ends, with `started_at` at its start, so
recent buckets keep changing; older ones change only when someone reprices, retags, imports, deletes or edits
rows by hand. Schema version 12 counts those changes: a trigger adds one to `rollup_generation.n` whenever a
row whose `started_at` is more than `STABLE_SECONDS` (6 hours) before SQLite's clock is inserted, deleted or
updated in a column the rollups read. A day is closed when it ends at least 6 hours ago; a cached day is used
only while the generation, the schema version and the database file (device, inode) are the ones it was read
with, all read in the same snapshot as the sums. So a cached figure is always the figure SQLite would give:
the meter's own writes of recent calls never touch a closed day, and every other write bumps the generation,
which empties the cache.

Two things bypass the count, and both are documented for operators: writing to the rollup tables themselves
(rather than to `calls`), and a system clock set back by more than 6 hours. Restarting the meter empties the
cache.

Only sums are cached (not latency histograms): per local day, per grouping and filters, with the sums that
were asked for (a day cached with all of them also serves a request for a few). The cache is bounded by the number of group cells it holds (`MAX_CELLS`), oldest entries first out.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from halton_meter.store.rollup import BUCKET_SECONDS, DAY_SECONDS, SUMS, UPDATE_COLUMNS, epoch_sql

STABLE_SECONDS = 6 * 3600
"""How long after its start a call's bucket may still change through the meter's own writes."""
MAX_CELLS = 200_000
"""At most this many (group, billing) sums are kept: about 40 MB at worst, a few MB in practice."""




def _old(row: str) -> str:
    # A malformed started_at counts as old (the rollups put it in bucket 0, which is closed).
    return f"ifnull({epoch_sql(row)}, 0) < CAST(strftime('%s', 'now') AS INTEGER) - {STABLE_SECONDS}"


def migration() -> list[str]:
    """Schema version 12: the generation counter and its three triggers."""
    bump = "UPDATE rollup_generation SET n = n + 1 WHERE id = 0"
    return [
        "CREATE TABLE rollup_generation (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL)",
        "INSERT INTO rollup_generation VALUES (0, 0)",
        f"CREATE TRIGGER calls_generation_insert AFTER INSERT ON calls WHEN {_old('NEW')}\nBEGIN\n  {bump};\nEND",
        f"CREATE TRIGGER calls_generation_delete AFTER DELETE ON calls WHEN {_old('OLD')}\nBEGIN\n  {bump};\nEND",
        f"CREATE TRIGGER calls_generation_update AFTER UPDATE OF {UPDATE_COLUMNS} ON calls "
        f"WHEN {_old('OLD')} OR {_old('NEW')}\nBEGIN\n  {bump};\nEND",
    ]


Ranges = list[tuple[int, int]]
Sums = dict[tuple[Any, ...], list[int]]
"""(group values…, billing) → the sums in `rollup.SUMS` order."""
Reader = Callable[[Ranges, frozenset[str]], dict[tuple[Any, ...], list[int]]]
"""Reads the named sums from the rollup over bucket ranges, grouped by (group values…, billing, local day
number)."""


class DayCache:
    """Thread-safe: the API's worker threads share one."""

    def __init__(self, max_cells: int = MAX_CELLS, clock: Callable[[], float] = time.time) -> None:
        self.max_cells = max_cells
        self.clock = clock
        self._lock = threading.Lock()
        self._identity: tuple[Any, ...] | None = None
        self._days: OrderedDict[tuple[Any, ...], tuple[frozenset[str], Sums]] = OrderedDict()
        self._cells = 0
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        with self._lock:
            self._days.clear()
            self._cells = 0
            self._identity = None

    def __len__(self) -> int:
        return len(self._days)

    def serve(self, conn: sqlite3.Connection, rolled: tuple[int, int], shape: tuple[Any, ...], wanted: frozenset[str],
              days: Sequence[tuple[int, int, int]], read: Reader) -> tuple[list[tuple[int, Sums]], Ranges]:
        """The closed whole days of `days` ((local day number, start, end), in order, within `rolled`), each
        as (day number, sums), from the cache or read once with `read(spans, names)`; and the bucket ranges
        of `rolled` left for the caller to read itself. `shape` says what the sums are grouped and filtered
        by; `wanted` names the sums asked for: a day cached with more of them serves a request for fewer (the
        others read 0, as if never asked for)."""
        identity = snapshot_identity(conn)
        limit = (int(self.clock()) - STABLE_SECONDS) // BUCKET_SECONDS * BUCKET_SECONDS
        closed = [d for d in days if d[2] <= limit]
        if identity is None or not closed:
            return [], [rolled]
        # Only a run of consecutive days: what is left is at most one range before it and one after.
        run = [closed[0]]
        for day in closed[1:]:
            if day[1] != run[-1][2]:
                break
            run.append(day)
        first, last = run[0][1], run[-1][2]
        left = [r for r in ((rolled[0], first), (last, rolled[1])) if r[0] < r[1]]
        found: dict[int, Sums] = {}
        with self._lock:
            if identity != self._identity:
                self._days.clear()
                self._cells = 0
                self._identity = identity
            names = wanted
            for number, start, end in run:
                entry = self._days.get((shape, start, end))
                if entry is None:
                    continue
                if wanted <= entry[0]:
                    self._days.move_to_end((shape, start, end))
                    found[number] = entry[1] if wanted == entry[0] else _only(entry, wanted)
                else:  # read again with what the cached day had too, so the next request finds both
                    names = names | entry[0]
        missing = [d for d in run if d[0] not in found]
        self.hits += len(run) - len(missing)
        self.misses += len(missing)
        if missing:
            spans: Ranges = []
            for _, start, end in missing:
                if spans and spans[-1][1] == start:
                    spans[-1] = (spans[-1][0], end)
                else:
                    spans.append((start, end))
            fresh: dict[int, Sums] = {number: {} for number, _, _ in missing}
            for key, sums in read(spans, names).items():
                number = key[-1]
                if number in fresh:  # always: the spans hold these days only
                    fresh[number][key[:-1]] = sums
            with self._lock:
                if identity == self._identity:
                    for number, start, end in missing:
                        self._store((shape, start, end), (names, fresh[number]))
            for number, _, _ in missing:
                found[number] = fresh[number] if names == wanted else _only((names, fresh[number]), wanted)
        return [(number, found[number]) for number, _, _ in run], left

    def _store(self, key: tuple[Any, ...], entry: tuple[frozenset[str], Sums]) -> None:
        size = max(1, len(entry[1]))
        if size > self.max_cells:
            return
        old = self._days.pop(key, None)
        if old is not None:
            self._cells -= max(1, len(old[1]))
        self._days[key] = entry
        self._cells += size
        while self._cells > self.max_cells:
            _, evicted = self._days.popitem(last=False)
            self._cells -= max(1, len(evicted[1]))


def _only(entry: tuple[frozenset[str], Sums], wanted: frozenset[str]) -> Sums:
    keep = [name in wanted for name in SUMS]
    return {key: [v if k else 0 for v, k in zip(values, keep, strict=True)] for key, values in entry[1].items()}


def snapshot_identity(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
    """What sums read in this connection's snapshot were read from: the file (path, device, inode), the
    schema version and the rollup generation. Anything kept against it (this cache, the `/metrics` history)
    is still exact while it is unchanged. None when the database has no generation counter (older than
    schema 12, or an in-memory one): nothing is kept then."""
    try:
        generation = conn.execute("SELECT n FROM rollup_generation WHERE id = 0").fetchone()
    except sqlite3.OperationalError:
        return None
    if generation is None:
        return None
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    file = next((row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"), "")
    if not file:
        return None
    try:
        stat = os.stat(file)
    except OSError:
        return None
    return (file, stat.st_dev, stat.st_ino, version, generation[0])


def local_days(start: int, end: int, offset_at: Callable[[int], int]) -> list[tuple[int, int, int]]:
    """The whole local days inside [start, end) as (day number, first second, end), where a day's number is
    `(t + offset) // 86400` as the rollup queries compute it. A day whose bounds cannot be found exactly (a
    midnight skipped by a clock change) ends the list: the rest is read without the cache."""
    days: list[tuple[int, int, int]] = []
    number = (start + offset_at(start)) // DAY_SECONDS
    midnight = _midnight(number, offset_at)
    if midnight is None or midnight < start:
        number += 1
        midnight = _midnight(number, offset_at)
    for _ in range(4000):  # about eleven years: more than any window the API accepts
        if midnight is None or midnight >= end:
            break
        following = _midnight(number + 1, offset_at)
        if following is None or following > end:
            break
        days.append((number, midnight, following))
        number, midnight = number + 1, following
    return days


def _midnight(number: int, offset_at: Callable[[int], int]) -> int | None:
    """The first second of local day `number`: t with (t + offset(t)) = number × 86400, t 15-minute aligned."""
    base = number * DAY_SECONDS
    for guess in (offset_at(base), offset_at(base - 14 * 3600), offset_at(base + 14 * 3600)):
        t = base - guess
        if offset_at(t) == guess and t % BUCKET_SECONDS == 0 and (t - 1 + offset_at(t - 1)) // DAY_SECONDS < number:
            return t
    return None
