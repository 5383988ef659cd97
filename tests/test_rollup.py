"""The rollups (schema 7): kept exact by triggers through inserts, the writer's provisional→final upsert,
updates, reprice, retag, recovery and deletes; built by the migration's backfill; and the report read from
them equals an aggregation of the raw rows, for random windows and groupings."""

from __future__ import annotations

import datetime
import random
import sqlite3
import uuid
from collections import Counter
from pathlib import Path

import pytest
from reportkit import assert_matches, call, expected, local_zone, rows, write

from halton_meter import report
from halton_meter.pricing import Pricer
from halton_meter.store import rollup
from halton_meter.store.aggregate import percentile_95
from halton_meter.store.reprice import reprice
from halton_meter.store.retag import retag
from halton_meter.store.schema import MIGRATIONS, make_engine, migrate
from halton_meter.store.writer import Writer
from halton_meter.timewindow import iso, resolve_window

BASE = datetime.datetime(2026, 10, 30, 0, 0, tzinfo=datetime.UTC)  # the US DST change (Nov 1) is inside
SPAN = 4 * 86400


def random_call(rng: random.Random, **fields) -> object:
    edge = rng.randrange(1, SPAN // 900) * 900.0  # some on bucket edges, some a microsecond before one
    offset = rng.choice([rng.uniform(0, SPAN), edge, edge - 0.000001])
    started = BASE + datetime.timedelta(seconds=offset)
    model = rng.choice(["claude-sonnet-4-5-20250929", "claude-haiku-4-5", "mystery-9", None])
    streamed = rng.random() < 0.6
    cache_write = rng.randrange(0, 10_000)
    base = dict(
        id=str(uuid.uuid4()), started_at=iso(started), provider=rng.choice(["anthropic", "openai"]),
        endpoint_kind="self_test" if rng.random() < 0.05 else "messages", model=model,
        model_requested=rng.choice([model, "claude-sonnet-4-5", None]), streamed=streamed,
        complete=rng.random() < 0.9, billable=rng.random() < 0.9, priced=rng.random() < 0.8,
        estimated=rng.random() < 0.1, input_tokens=rng.randrange(0, 50_000), output_tokens=rng.randrange(0, 5_000),
        cache_read_tokens=rng.randrange(0, 100_000), cache_write_tokens=cache_write,
        cache_write_1h_tokens=rng.randrange(0, cache_write + 1), reasoning_tokens=rng.choice([None, rng.randrange(0, 999)]),
        cost_nanos=rng.choice([None, rng.randrange(0, 10**9)]), cache_savings_nanos=rng.choice([None, 12_345]),
        billing=rng.choice(["api", "api", "subscription"]), project=rng.choice(["alpha", "beta", "gamma"]),
        client=rng.choice([None, "claude-code", "curl"]), branch=rng.choice([None, "main", "feat/x"]),
        key_fingerprint=rng.choice([None, "3f9a1c2e", "b07d44e1"]),
        error_type=rng.choice([None, None, None, "http_429"]),
        incomplete_reason=rng.choice([None, None, "upstream_truncated"]),
        latency_ms=rng.choice([None, rng.lognormvariate(7.5, 1.0) + 1]),
        ttft_ms=(rng.lognormvariate(6.5, 0.7) + 1) if streamed else None,
    )
    base.update(fields)
    return call(**base)


def rollup_rows(db: Path) -> dict[str, set[tuple]]:
    """The rollup tables with dimension ids replaced by their values (ids differ between databases)."""
    conn = sqlite3.connect(db)
    try:
        dims = {row[0]: row[1:] for row in conn.execute("SELECT * FROM rollup_dims")}
        return {table: {(r[0], dims[r[1]], *r[2:]) for r in conn.execute(f"SELECT * FROM {table}")}
                for table in ("rollup", "rollup_hist", "rollup_hist_day")}
    finally:
        conn.close()


def check(db: Path, rng: random.Random, rounds: int = 4) -> None:
    """Random windows (never bucket-aligned on purpose, sometimes aligned) and groupings: the report from the
    rollups equals the one from raw rows alone, and both equal the Python reference."""
    everything = rows(db)
    for _ in range(rounds):
        start = BASE + datetime.timedelta(seconds=rng.uniform(-3600, SPAN / 2))
        if rng.random() < 0.3:
            start = start.replace(minute=0, second=0, microsecond=0)
        end = start + datetime.timedelta(seconds=rng.uniform(60, SPAN))
        window = resolve_window(since=iso(start), until=iso(end))
        by = tuple(rng.sample(["project", "model", "provider", "client", "branch", "key", "day", "hour"],
                              rng.choice([1, 1, 2])))
        fast = report.build(db, window, by=by).to_json()
        slow = report.build(db, window, by=by, use_rollup=False).to_json()
        assert fast == slow, by
        assert_matches(fast, expected(everything, window.since_iso, window.until_iso, by))


@pytest.mark.parametrize(("seed", "zone"), [(1, "America/New_York"), (2, "Asia/Kolkata"),
                                            (3, "Australia/Adelaide"), (4, "UTC"),
                                            (5, "ODD-5:20")])  # a made-up UTC+05:20: days off bucket edges
def test_rollup_report_equals_raw_aggregation_through_every_kind_of_write(tmp_path: Path, seed: int,
                                                                          zone: str) -> None:
    rng = random.Random(seed)
    db = tmp_path / "db.sqlite"
    with local_zone(zone):
        calls = [random_call(rng) for _ in range(300)]
        # The meter's way: a provisional row at forward time, the final row upserted over it; some still in flight.
        write(db, [c.replace(incomplete_reason="in_progress", input_tokens=0, cost_nanos=None) for c in calls])
        write(db, calls[:260])
        write(db, [c.replace(incomplete_reason="in_progress") for c in calls[:20]])  # never replaces a final row
        check(db, rng)

        conn = sqlite3.connect(db, isolation_level=None)
        for c in rng.sample(calls, 60):  # updates that move rows between buckets, groups and in/out of reports
            conn.execute("UPDATE calls SET input_tokens = ?, latency_ms = ?, started_at = ?, model = ?, "
                         "endpoint_kind = ?, billing = ? WHERE id = ?",
                         (rng.randrange(10**6), rng.choice([None, 42.0, 9000.5]),
                          iso(BASE + datetime.timedelta(seconds=rng.uniform(0, SPAN))),
                          rng.choice(["gpt-5", None]), rng.choice(["messages", "self_test"]),
                          rng.choice(["api", "subscription"]), c.id))
        conn.close()
        check(db, rng)

        engine = make_engine(db, immediate=True)
        reprice(engine, engine, Pricer(), iso(BASE), iso(BASE + datetime.timedelta(seconds=SPAN)), {})
        engine.dispose()
        check(db, rng)

        moved = retag(db, "alpha", "delta", iso(BASE + datetime.timedelta(days=1)), iso(BASE + datetime.timedelta(
            days=3)), dry_run=False)
        assert moved.calls + moved.subscription_calls > 0
        check(db, rng)

        writer = Writer(db)
        writer.recover()  # calls left in progress by a "crash" become incomplete rows
        writer._disconnect()
        conn = sqlite3.connect(db, isolation_level=None)
        for c in rng.sample(calls, 80):
            conn.execute("DELETE FROM calls WHERE id = ?", (c.id,))
        conn.close()
        check(db, rng)

    # Rows subtracted to nothing are removed, never left as zeros.
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM rollup WHERE calls <= 0").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM rollup_hist WHERE n <= 0").fetchone()[0] == 0
    conn.execute("DELETE FROM calls")
    conn.commit()
    assert [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("rollup", "rollup_hist",
                                                                                "rollup_hist_day")] == [0, 0, 0]
    conn.close()


def test_the_migration_backfill_builds_what_the_triggers_build(tmp_path: Path) -> None:
    rng = random.Random(9)
    calls = [random_call(rng) for _ in range(200)]
    live = tmp_path / "live.sqlite"
    write(live, calls)
    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old, isolation_level=None)
    for version in range(1, 7):
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 6")
    conn.close()
    engine = make_engine(old, immediate=True)  # schema 6: rows written without triggers, then migrated
    from sqlalchemy.dialects.sqlite import insert

    from halton_meter.store.schema import calls as calls_table
    from halton_meter.store.writer import row_for

    conn = sqlite3.connect(old)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(calls)")}  # schema 6's: later ones add more
    conn.close()
    rows = [{k: v for k, v in row_for(r, "2026-11-22T00:00:00.000000Z").items() if k in columns} for r in calls]
    with engine.begin() as c:
        c.execute(insert(calls_table), rows)
    engine.dispose()
    backup = migrate(old)
    assert backup is not None and backup.exists()
    assert rollup_rows(old) == rollup_rows(live)
    assert rollup_rows(live)["rollup"]


def test_a_schema_6_database_reports_the_same_from_raw_rows(tmp_path: Path) -> None:
    """Before the meter restarts and migrates, `report` reads an old database's rows directly."""
    rng = random.Random(5)
    calls = [random_call(rng) for _ in range(120)]
    new = tmp_path / "new.sqlite"
    write(new, calls)
    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(new)
    conn.execute(f"VACUUM INTO '{old}'")
    conn.close()
    conn = sqlite3.connect(old)
    for table in rollup.TABLES:
        conn.execute(f"DROP TABLE {table}")
    conn.execute("PRAGMA user_version = 6")
    conn.commit()
    conn.close()
    window = resolve_window(since=iso(BASE), until=iso(BASE + datetime.timedelta(seconds=SPAN)))
    for by in (("project",), ("model", "day")):
        assert report.build(old, window, by=by).to_json() == report.build(new, window, by=by).to_json()


def test_p95_is_within_five_percent_and_bins_are_what_the_triggers_use(tmp_path: Path) -> None:
    rng = random.Random(3)
    floors = rollup.bin_floors()
    for _ in range(200):
        values = [rng.lognormvariate(rng.uniform(3, 9), rng.uniform(0.1, 2)) + 1 for _ in range(rng.randrange(1, 60))]
        counts: dict[int, int] = {}
        for v in values:
            k = max(i for i, lo in enumerate(floors) if lo <= v)
            counts[k] = counts.get(k, 0) + 1

        got = percentile_95(Counter(counts), floors)
        exact = sorted(values)[-(-len(values) * 95 // 100) - 1]
        assert abs(got - exact) / exact <= 0.0489, (got, exact)
    assert percentile_95(Counter({0: 3}), floors) == 0.5  # under 1 ms
    db = tmp_path / "db.sqlite"
    write(db, [call(latency_ms=v, ttft_ms=None, id=str(uuid.uuid4())) for v in (0.2, 1.0, 1.0999, 1.1, 250.0, 1e12)])
    conn = sqlite3.connect(db)
    stored = {r[0]: r[1] for r in conn.execute("SELECT lo, bin FROM rollup_bins")}
    assert sorted(stored) == floors and len(floors) == rollup.BIN_COUNT
    hist = conn.execute("SELECT grp, " + ", ".join(f"c{i}" for i in range(16)) + " FROM rollup_hist WHERE metric = 0")
    bins = sorted(grp * 16 + i for grp, *cs in hist for i, n in enumerate(cs) for _ in range(n))
    conn.close()
    assert bins == [0, 1, 1, 2, 58, rollup.BIN_COUNT - 1]
