"""The writer keeps the rollups, the closed-day generation and the sync log itself (triggers off on its
connection, store/rollupwrite.py): batch for batch, it leaves exactly what the triggers leave when the same
batches go through the same upsert on an ordinary connection."""

from __future__ import annotations

import datetime
import random
import shutil
import sqlite3
import uuid
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from reportkit import call
from test_rollup import random_call, rollup_rows

from halton_meter.clock import utc_stamp
from halton_meter.store import rollup, synclog
from halton_meter.store.rollupwrite import epoch, micros
from halton_meter.store.schema import migrate
from halton_meter.store.writer import UPSERT_SQL, Writer, _superseded_dropped, row_values
from halton_meter.timewindow import iso

NOW = datetime.datetime.now(datetime.UTC)


def _state(db: Path) -> tuple[dict[str, set[tuple]], list[str], int]:
    conn = sqlite3.connect(db)
    try:
        log = [r[0] for r in conn.execute("SELECT call_id FROM sync_log ORDER BY seq")]
        generation = conn.execute("SELECT n FROM rollup_generation").fetchone()[0]
    finally:
        conn.close()
    return rollup_rows(db), log, generation


def _by_triggers(db: Path, batch: list) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(UPSERT_SQL, [row_values(r, utc_stamp()) for r in _superseded_dropped(batch)])
        conn.execute("COMMIT")
    finally:
        conn.close()


def _batches(rng: random.Random, count: int) -> list[list]:
    """Batches as the core makes them: provisional rows, their final rows later (or in the same batch),
    repeats the upsert must skip, self-tests, calls older than the closed-day horizon and brand new ones."""
    pending: list = []
    batches = []
    for _ in range(count):
        batch = []
        for _ in range(rng.randrange(1, 9)):
            if pending and rng.random() < 0.5:
                final = pending.pop(rng.randrange(len(pending)))
                batch.append(final)
                if rng.random() < 0.1:
                    batch.append(final.replace(input_tokens=final.input_tokens + 1))  # the upsert keeps the first
                continue
            recent = rng.random() < 0.4
            fields = {"started_at": iso(NOW - datetime.timedelta(seconds=rng.uniform(0, 3000)))} if recent else {}
            final = random_call(rng, **fields)
            if final.incomplete_reason is None and rng.random() < 0.3:
                final = final.replace(latency_ms=rng.choice(rollup.bin_floors()[1:40]))  # exactly on a bin floor
            if rng.random() < 0.6:
                batch.append(final.replace(incomplete_reason="in_progress", input_tokens=0, cost_nanos=None))
                pending.append(final)
            else:
                batch.append(final)
            if rng.random() < 0.1:
                batch.append(final.replace(incomplete_reason="in_progress"))  # never replaces a final row
        batches.append(batch)
    return batches


def _compare(tmp_path: Path, batches: list[list], sync_on: bool) -> None:
    ours, theirs = tmp_path / "ours.sqlite", tmp_path / "theirs.sqlite"
    migrate(ours)
    if sync_on:
        conn = sqlite3.connect(ours)
        synclog.enable(conn, True)
        conn.commit()
        conn.close()
    shutil.copy(ours, theirs)
    writer = Writer(ours)
    try:
        for batch in batches:
            before = _state(theirs)[2], _state(ours)[2]
            writer._upsert(_superseded_dropped(batch))
            _by_triggers(theirs, batch)
            mine, reference = _state(ours), _state(theirs)
            assert mine[0] == reference[0]
            assert mine[1] == reference[1]
            assert (mine[2] > before[1]) == (reference[2] > before[0])  # bumped in the same batches
    finally:
        writer._disconnect()
    assert rollup_rows(ours)["rollup"]


def test_the_writer_leaves_what_the_triggers_leave_batch_for_batch(tmp_path: Path) -> None:
    _compare(tmp_path, _batches(random.Random(11), 120), sync_on=True)


def test_with_sync_off_no_log_and_still_the_same_rollups(tmp_path: Path) -> None:
    _compare(tmp_path, _batches(random.Random(12), 60), sync_on=False)
    conn = sqlite3.connect(tmp_path / "ours.sqlite")
    assert conn.execute("SELECT count(*) FROM sync_log").fetchone() == (0,)
    conn.close()


def test_rows_only_sqlite_can_work_out_go_through_the_triggers(tmp_path: Path) -> None:
    odd = [
        call(started_at="2026-11-22"),  # a date alone: SQLite reads midnight
        call(started_at="2026-02-30T10:00:00Z"),  # SQLite normalises to March 2
        call(started_at="1969-12-31T23:59:59Z"),  # before 1970: SQLite divides towards zero
        call(started_at="not a time"),  # bucket 0
        call(latency_ms=float("nan")), call(latency_ms=float("inf")), call(ttft_ms=1e300),
    ]
    _compare(tmp_path, [[r] for r in odd] + [odd], sync_on=True)


def test_a_replaced_provisional_row_that_moved_buckets_bumps_for_the_old_one(tmp_path: Path) -> None:
    """The generation counter sees both the row replaced and the row written (as the UPDATE trigger does)."""
    old = call(started_at=iso(NOW - datetime.timedelta(days=2)), incomplete_reason="in_progress")
    new = old.replace(started_at=iso(NOW), incomplete_reason=None)
    _compare(tmp_path, [[old], [new], [call(started_at=iso(NOW))]], sync_on=False)


def _sql(conn: sqlite3.Connection, expr: str, value: object) -> object:
    return conn.execute(f"SELECT {expr}", (value,)).fetchone()[0]


@settings(max_examples=400)
@given(st.datetimes(min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(9998, 12, 31)),
       st.sampled_from(["T", " "]), st.sampled_from(["", "Z", ".5Z", ".999999Z", "+05:30"]))
def test_epoch_is_sqlites(moment: datetime.datetime, sep: str, tail: str) -> None:
    stamp = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + tail
    conn = sqlite3.connect(":memory:")
    assert epoch(stamp) == _sql(conn, "CAST(strftime('%s', substr(?, 1, 19)) AS INTEGER)", stamp)
    conn.close()


ODD_STAMPS = ["2026-02-30T10:00:00Z", "2026-11-22T10:00:60Z", "2026-11-22T24:00:00Z", "2026-11-22T10:60:00Z",
              "0000-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "2026-11-22T10:00:0\u0665Z",
              "2026-11-22T10:0\u0665:00Z", "\uff12026-11-22T10:00:00Z", "2026-11-22t10:00:00Z"]


@settings(max_examples=600)
@given(st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(Z|\.[0-9]{1,6}Z)?\Z")
       | st.text(alphabet="0123456789-T :.Z\u0665\uff15", min_size=16, max_size=24)
       | st.sampled_from(ODD_STAMPS))
def test_epoch_of_any_string_is_sqlites_or_none(stamp: str) -> None:
    """Odd dates (Feb 30, second 60, hour 24), other digits, other shapes: None, or SQLite's own answer."""
    conn = sqlite3.connect(":memory:")
    got = epoch(stamp)
    if got is not None:
        assert got == _sql(conn, "CAST(strftime('%s', substr(?, 1, 19)) AS INTEGER)", stamp)
    conn.close()


@settings(max_examples=600)
@given(st.one_of(st.floats(min_value=-1e9, max_value=4.5e12, allow_nan=False),
                 st.integers(min_value=0, max_value=10**9).map(lambda n: n / 2000),  # half microseconds
                 st.integers(min_value=-10**6, max_value=10**9)))
def test_micros_and_bins_are_sqlites(value: float) -> None:
    conn = sqlite3.connect(":memory:")
    for statement in rollup.migration()[:4]:  # the tables and rollup_bins
        conn.execute(statement)
    assert micros(value) == _sql(conn, "CAST(round(? * 1000) AS INTEGER)", value)
    floors = rollup.bin_floors()
    from bisect import bisect_right

    k = bisect_right(floors, value) - 1
    assert conn.execute("SELECT bin FROM rollup_bins WHERE lo = (SELECT max(lo) FROM rollup_bins WHERE lo <= ?)",
                        (value,)).fetchone() == (k,)
    conn.close()


def test_a_user_trigger_on_calls_does_not_fire_for_the_meters_writes(tmp_path: Path) -> None:
    """Documented: the writer's connection runs no triggers, a user's own included; other connections do."""
    db = tmp_path / "db.sqlite"
    migrate(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE mine (id TEXT)")
    conn.execute("CREATE TRIGGER mine_copy AFTER INSERT ON calls BEGIN INSERT INTO mine VALUES (NEW.id); END")
    writer = Writer(db)
    writer._upsert([call(id=str(uuid.uuid4()))])
    writer._disconnect()
    assert conn.execute("SELECT count(*) FROM mine").fetchone() == (0,)
    assert conn.execute("SELECT sum(calls) FROM rollup").fetchone() == (1,)
    conn.close()
