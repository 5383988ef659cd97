"""The dashboard's cache of closed days (store/daycache.py, schema 12): a report read through it always equals
the report read without it, through every kind of write; only writes to buckets older than 6 hours bump the
generation; days are the zone's own, DST and skipped midnights included; the cache is bounded."""

from __future__ import annotations

import datetime
import random
import sqlite3
import time
import zoneinfo
from pathlib import Path

import pytest
from reportkit import local_zone, write
from test_rollup import random_call

from halton_meter import report
from halton_meter.paths import Paths
from halton_meter.pricing import Pricer
from halton_meter.serve import api, endpoints
from halton_meter.store.aggregate import Filters
from halton_meter.store.daycache import STABLE_SECONDS, DayCache, local_days
from halton_meter.store.reprice import reprice
from halton_meter.store.retag import retag
from halton_meter.store.schema import make_engine
from halton_meter.timewindow import iso, resolve_window

DAYS = 12


def recent_calls(rng: random.Random, n: int, now: float, days: int = DAYS) -> list:
    """Calls over the last `days` days up to `now`, some within the last 6 hours (still open buckets)."""
    out = []
    for _ in range(n):
        age = rng.choice([rng.uniform(0, days * 86400), rng.uniform(0, STABLE_SECONDS)])
        started = datetime.datetime.fromtimestamp(now - age, datetime.UTC)
        out.append(random_call(rng, started_at=iso(started)))
    return out


def generation(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT n FROM rollup_generation").fetchone()[0]
    finally:
        conn.close()


def compare(db: Path, cache: DayCache, rng: random.Random, now: datetime.datetime, rounds: int = 6) -> None:
    """Random and calendar windows, groupings and filters: the report through the cache equals the one
    without it, asked twice (the second time from the cache)."""
    for i in range(rounds):
        if i < 3:
            flags = {["today", "week", "month"][i]: True}
            window = resolve_window(**flags, now=now, prefix="")
        else:
            start = now - datetime.timedelta(seconds=rng.uniform(3600, (DAYS + 1) * 86400))
            if rng.random() < 0.5:
                start = start.replace(minute=0, second=0, microsecond=0)
            window = resolve_window(since=iso(start), until=iso(now), now=now, prefix="")
        by = tuple(rng.sample(["project", "model", "client", "branch", "key", "day"], rng.randrange(0, 3)))
        filters = rng.choice([Filters(), Filters(project=("alpha", "beta")), Filters(branch=("(none)",)),
                              Filters(model=("claude-*",))])
        plain = report.build(db, window, by=by, filters=filters, vs_previous=True, latency=False).to_json()
        for _ in range(2):
            cached = report.build(db, window, by=by, filters=filters, vs_previous=True, latency=False,
                                  cache=cache).to_json()
            assert cached == plain, (window, by, filters)


@pytest.mark.parametrize(("seed", "zone"), [(1, "Asia/Kolkata"), (2, "Asia/Kathmandu"), (3, "America/New_York"),
                                            (4, "UTC")])
def test_cached_reports_equal_uncached_ones_through_every_kind_of_write(tmp_path: Path, seed: int,
                                                                        zone: str) -> None:
    rng = random.Random(seed)
    db = tmp_path / "db.sqlite"
    now_s = time.time()
    now = datetime.datetime.fromtimestamp(now_s, datetime.UTC)
    cache = DayCache()
    with local_zone(zone):
        calls = recent_calls(rng, 400, now_s)
        write(db, calls)
        compare(db, cache, rng, now)
        assert cache.hits > 0 and len(cache) > 0  # the second reading came from the cache

        # New calls in the open hours: no generation change, and the reports still agree.
        before = generation(db)
        write(db, [random_call(rng, started_at=iso(now - datetime.timedelta(minutes=rng.uniform(0, 300))))
                   for _ in range(30)])
        assert generation(db) == before
        compare(db, cache, rng, now)

        # Every kind of write to closed days: each one must show in the cached reports.
        old = [c for c in calls if c.started_at < iso(now - datetime.timedelta(days=1))]
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("UPDATE calls SET cost_nanos = cost_nanos + 7, project = 'beta' WHERE id = ?", (old[0].id,))
        conn.close()
        compare(db, cache, rng, now, rounds=4)

        engine = make_engine(db, immediate=True)
        reprice(engine, engine, Pricer(), iso(now - datetime.timedelta(days=DAYS)), iso(now), {})
        engine.dispose()
        compare(db, cache, rng, now, rounds=4)

        moved = retag(db, "alpha", "delta", iso(now - datetime.timedelta(days=DAYS)), iso(now), dry_run=False)
        assert moved.calls + moved.subscription_calls > 0
        compare(db, cache, rng, now, rounds=4)

        write(db, [random_call(rng, started_at=iso(now - datetime.timedelta(days=3, hours=rng.uniform(0, 24))))
                   for _ in range(10)])  # an import of old history
        compare(db, cache, rng, now, rounds=4)

        conn = sqlite3.connect(db, isolation_level=None)
        for c in rng.sample(old, 25):
            conn.execute("DELETE FROM calls WHERE id = ?", (c.id,))
        conn.close()
        compare(db, cache, rng, now, rounds=4)


def test_only_writes_to_buckets_older_than_six_hours_change_the_generation(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    rng = random.Random(5)
    now = datetime.datetime.now(datetime.UTC)
    fresh = random_call(rng, started_at=iso(now - datetime.timedelta(minutes=30)), endpoint_kind="messages")
    old = random_call(rng, started_at=iso(now - datetime.timedelta(hours=7)), endpoint_kind="messages")
    write(db, [fresh.replace(incomplete_reason="in_progress")])
    assert generation(db) == 0
    write(db, [fresh])  # the writer's provisional → final upsert of a recent call
    assert generation(db) == 0
    write(db, [old])
    assert generation(db) == 1
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE calls SET extra = '{}' WHERE id = ?", (old.id,))  # no column the rollups read
    assert generation(db) == 1
    conn.execute("UPDATE calls SET cost_nanos = 1 WHERE id = ?", (fresh.id,))
    assert generation(db) == 1
    conn.execute("UPDATE calls SET started_at = ? WHERE id = ?", (iso(now - datetime.timedelta(days=2)), fresh.id))
    assert generation(db) == 2  # moved into a closed day
    conn.execute("UPDATE calls SET cost_nanos = 2 WHERE id = ?", (old.id,))
    assert generation(db) == 3
    conn.execute("DELETE FROM calls WHERE id = ?", (old.id,))
    assert generation(db) == 4
    conn.execute("UPDATE calls SET started_at = 'garbage' WHERE id = ?", (fresh.id,))
    assert generation(db) == 5  # a malformed time lands in bucket 0, a closed one
    conn.close()


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "Australia/Lord_Howe",
                                  "America/Havana", "Pacific/Apia", "UTC"])
def test_local_days_are_the_zones_own_midnights(zone: str) -> None:
    tz = zoneinfo.ZoneInfo(zone)

    def offset(t: int) -> int:
        found = datetime.datetime.fromtimestamp(t, tz).utcoffset()
        assert found is not None
        return int(found.total_seconds())

    seen_skip = False
    for start_day in (datetime.date(2026, 3, 1), datetime.date(2026, 10, 20), datetime.date(2011, 12, 20)):
        start = int(datetime.datetime.combine(start_day, datetime.time(5, 15), tz).timestamp()) // 900 * 900
        end = start + 45 * 86400
        days = local_days(start, end, offset)
        assert days, zone
        for (number, first, following), nxt in zip(days, [*days[1:], None], strict=True):
            assert start <= first < following <= end
            local = datetime.datetime.fromtimestamp(first, tz)
            before = datetime.datetime.fromtimestamp(first - 1, tz)
            assert local.date() != before.date()  # `first` is the day's first second
            assert (local.date() - datetime.date(1970, 1, 1)).days == number
            assert datetime.datetime.fromtimestamp(following - 1, tz).date() == local.date()
            if nxt is not None:
                assert nxt[1] == following and nxt[0] == number + 1
        # Where no midnight was skipped, no day is missing: the list reaches the range's last whole day.
        last = datetime.datetime.fromtimestamp(end, tz).date()
        dates = [last - datetime.timedelta(days=k) for k in range(46)]
        skipped = any(  # a midnight (or a whole day: Apia, 30 December 2011) the clock jumped over
            datetime.datetime.fromtimestamp(datetime.datetime.combine(d, datetime.time(), tz).timestamp(),
                                            tz).replace(tzinfo=None) != datetime.datetime.combine(d, datetime.time())
            for d in dates)
        seen_skip = seen_skip or skipped
        if not skipped:
            assert datetime.datetime.fromtimestamp(days[-1][2], tz).date() >= last - datetime.timedelta(days=1)
    # Havana moves its clocks at midnight (8 March 2026), Apia skipped 30 December 2011: the check above is
    # skipped there, and only there.
    assert seen_skip == (zone in ("America/Havana", "Pacific/Apia"))


def test_the_cache_is_bounded_and_a_replaced_database_empties_it(tmp_path: Path) -> None:
    rng = random.Random(8)
    now_s = time.time()
    now = datetime.datetime.fromtimestamp(now_s, datetime.UTC)
    db = tmp_path / "db.sqlite"
    write(db, recent_calls(rng, 300, now_s))
    window = resolve_window(since="10d", now=now, prefix="")
    cache = DayCache(max_cells=40)
    for by in (("project",), ("model",), ("client",), ("branch",), ("project", "model")):
        report.build(db, window, by=by, latency=False, cache=cache)
        assert cache._cells <= 40
    assert 0 < len(cache) < 5 * 9  # the oldest days went out

    cache = DayCache()
    first = report.build(db, window, by=("project",), latency=False, cache=cache).to_json()
    assert len(cache) > 0
    other = tmp_path / "other.sqlite"
    write(other, recent_calls(random.Random(9), 100, now_s))
    other.replace(db)  # a restored backup: same path, another file
    again = report.build(db, window, by=("project",), latency=False, cache=cache).to_json()
    assert again == report.build(db, window, by=("project",), latency=False).to_json() != first


def test_the_api_warms_the_cache_with_what_the_dashboard_opens_with(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "home")
    paths.home.mkdir(mode=0o700)
    write(paths.db, recent_calls(random.Random(3), 200, time.time()))
    endpoints.DAY_CACHE.clear()
    api.warm(paths)
    warmed = len(endpoints.DAY_CACHE)
    assert warmed >= 30  # the overview's months and the chart's 30 days
    misses = endpoints.DAY_CACHE.misses
    endpoints.overview(paths, {})
    assert endpoints.DAY_CACHE.misses == misses  # the page's first request reads no closed day again
    api.warm(Paths(tmp_path / "nothing-here"))  # no database yet: nothing happens, nothing raised
    endpoints.DAY_CACHE.clear()
