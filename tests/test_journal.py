"""The record journal (halton_meter/store/journal.py): a record `submit` accepted survives a crash.

The end-to-end combinations (database locked + kill -9, locked + stop, disk full + kill -9) run against a
real meter in tests/test_integrity.py; these tests pin the journal itself, with a real writer in a real
child process killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from halton_meter.store import journal
from halton_meter.store.schema import migrate
from halton_meter.store.writer import Writer
from halton_meter.types import CallRecord


def record(**fields) -> CallRecord:
    base = dict(id=str(uuid.uuid4()), started_at="2026-11-15T12:00:00.000000Z", provider="anthropic",
                endpoint_kind="messages", host="api.anthropic.com", method="POST", path="/v1/messages",
                ended_at="2026-11-15T12:00:01.000000Z", model="claude-sonnet-4-5-20250929",
                model_requested="claude-sonnet-4-5", status=200, complete=True, billable=True,
                usage_reported=True, input_tokens=1000, output_tokens=500, project="alpha",
                project_source="config", price_provider_id="anthropic", extra={"k": [1, "x"]})
    base.update(fields)
    return CallRecord(**base)


def rows(db: Path) -> dict[str, tuple]:
    conn = sqlite3.connect(db)
    try:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT id, incomplete_reason, input_tokens, cost_nanos, project FROM calls")}
    finally:
        conn.close()


def test_segments_round_trip_every_field(tmp_path: Path) -> None:
    j = journal.Journal(tmp_path, segment_bytes=64 * 1024).open()
    assert j.available
    sent = [record(), record(capture={"request": "a", "response": "b", "request_truncated": False,
                                      "response_truncated": True}), record(reasoning_tokens=None, latency_ms=1.5)]
    for r in sent:
        assert j.append(r) is not None
    found = [CallRecord(**d) for p in j.leftovers() for d in journal.read_segment(p)]
    assert found == sent
    assert journal.backlog(tmp_path) == (3, 0)


def test_segments_are_preallocated_and_recycled_once_committed(tmp_path: Path) -> None:
    size = 16 * 1024
    j = journal.Journal(tmp_path, segment_bytes=size).open()
    assert all(p.stat().st_size == size for p in j.leftovers())
    assert len(j.leftovers()) == 2  # the current segment and a spare allocated ahead
    line = len(journal.encode(record()))
    per_segment = (size - 300) // (line + 1)
    seqs = [j.append(record()) for _ in range(per_segment * 3)]
    # The current and the spare filled, a third could not be had without the writer: unsaved, counted.
    assert None in seqs and j.unsaved == seqs.count(None)
    assert journal.read_unsaved(j.counter_path) == j.unsaved
    j.committed(max(s for s in seqs if s is not None), unsaved_done=j.unsaved)
    assert j.unsaved == 0 and journal.read_unsaved(j.counter_path) == 0
    assert journal.backlog(tmp_path) == (0, 0)  # every segment restarted: nothing to replay
    files = j.leftovers()
    assert all(p.stat().st_size == size for p in files) and len(files) == 2  # recycled, never grown
    assert j.append(record()) is not None


def test_a_record_appended_after_the_committed_one_is_kept(tmp_path: Path) -> None:
    j = journal.Journal(tmp_path).open()
    early, later = record(), record()
    first = j.append(early)
    j.append(later)
    j.committed(first)  # the segment still holds an uncommitted record: it is kept whole
    assert [d["id"] for p in j.leftovers() for d in journal.read_segment(p)] == [early.id, later.id]
    j.committed(first + 1)
    assert [d["id"] for p in j.leftovers() for d in journal.read_segment(p)] == []


def test_a_torn_or_foreign_line_is_skipped(tmp_path: Path) -> None:
    j = journal.Journal(tmp_path).open()
    good = record()
    j.append(good)
    [path] = [p for p in j.leftovers() if journal.read_segment(p)]
    data = bytearray(path.read_bytes())
    end = data.index(b"\0")
    data[end:end + 12] = b'["torn", "li'
    path.write_bytes(bytes(data))
    assert [d["id"] for d in journal.read_segment(path)] == [good.id]


def test_writer_replays_a_dead_writers_journal_prices_it_and_final_beats_provisional(tmp_path: Path) -> None:
    db, spool = tmp_path / "db.sqlite", tmp_path / "spool"
    migrate(db)
    dead = journal.Journal(spool).open()  # what a killed core left: journaled, never committed
    done, running = record(), record(project="beta")
    dead.append(done.replace(incomplete_reason="in_progress", complete=False))
    dead.append(running.replace(incomplete_reason="in_progress", complete=False))
    dead.append(done)
    writer = Writer(db, spool_dir=spool).start(recover=True)
    assert writer.close(timeout=15)
    found = rows(db)
    assert found[done.id] == (None, 1000, 10_500_000, "alpha")  # priced at replay
    assert found[running.id][0] == "core_crash"
    assert writer.stats.replayed == 2 and writer.stats.recovered
    assert not list(spool.glob("journal-*")), "replayed segments are removed"


def test_recovery_waits_out_a_locked_database_instead_of_skipping_it(tmp_path: Path) -> None:
    db, spool = tmp_path / "db.sqlite", tmp_path / "spool"
    migrate(db)
    dead = journal.Journal(spool).open()
    left = record()
    dead.append(left.replace(incomplete_reason="in_progress", complete=False))
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("PRAGMA busy_timeout = 0")
    blocker.execute("BEGIN EXCLUSIVE")
    writer = Writer(db, spool_dir=spool).start(recover=True)
    new = record(project="gamma")
    writer.submit(new)
    deadline = time.monotonic() + 15
    while not writer.stats.write_errors and time.monotonic() < deadline:  # the busy timeout is 5 s
        time.sleep(0.05)
    assert not writer.stats.recovered and writer.stats.write_errors >= 1 and writer.stats.committed == 0
    blocker.execute("COMMIT")
    blocker.close()
    assert writer.close(timeout=20)
    found = rows(db)
    assert found[left.id][0] == "core_crash" and found[new.id][0] is None


CHILD = textwrap.dedent("""
    import sys, time, uuid
    from pathlib import Path
    from halton_meter.store.writer import Writer
    from halton_meter.types import CallRecord
    db, n = Path(sys.argv[1]), int(sys.argv[2])
    writer = Writer(db).start()
    for i in range(n):
        writer.submit(CallRecord(id=str(uuid.uuid4()), started_at="2026-11-15T12:00:00.000000Z",
                                 provider="anthropic", endpoint_kind="messages", host="api.anthropic.com",
                                 method="POST", path="/v1/messages", status=200, complete=True,
                                 input_tokens=i, project="killed"))
    print("SUBMITTED", flush=True)
    time.sleep(60)
""")


def test_records_queued_behind_a_locked_database_survive_kill_9(tmp_path: Path) -> None:
    """Identity: 200 submitted = 200 rows after the next start, though none had committed at the kill."""
    db = tmp_path / "db.sqlite"
    migrate(db)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("PRAGMA busy_timeout = 0")
    blocker.execute("BEGIN EXCLUSIVE")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), "200"], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"SUBMITTED"
        time.sleep(0.3)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        blocker.execute("COMMIT")
        blocker.close()
    assert rows(db) == {}
    ids, unsaved = journal.backlog(tmp_path / "spool")
    assert (ids, unsaved) == (200, 0)
    writer = Writer(db).start(recover=True)
    assert writer.close(timeout=20)
    found = rows(db)
    assert len(found) == 200 and {v[3] for v in found.values()} == {"killed"}
    assert sorted(v[1] for v in found.values()) == list(range(200))


def test_unjournaled_records_lost_in_a_crash_become_a_counted_gap(tmp_path: Path) -> None:
    db, spool = tmp_path / "db.sqlite", tmp_path / "spool"
    migrate(db)
    spool.mkdir()
    counter = spool / f"{journal.PREFIX}1-1{journal.UNSAVED_SUFFIX}"
    counter.write_bytes(b"7".ljust(journal.UNSAVED_BYTES - 1) + b"\n")
    writer = Writer(db, spool_dir=spool).start(recover=True)
    assert writer.close(timeout=15)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT kind, calls, reason FROM gaps").fetchall() == [("record", 7, "lost_unjournaled")]
    finally:
        conn.close()
    assert not counter.exists()


@pytest.mark.parametrize("n", [1, 50])
def test_a_clean_close_leaves_no_journal(tmp_path: Path, n: int) -> None:
    db = tmp_path / "db.sqlite"
    migrate(db)
    writer = Writer(db).start(recover=True)
    for _ in range(n):
        writer.submit(record())
    assert writer.close(timeout=15)
    assert list((tmp_path / "spool").glob("journal-*")) == []
    assert len(rows(db)) == n


def test_submit_costs_one_pwrite_and_no_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Durable against a process crash, not a power cut: the event loop never waits for the disk."""
    j = journal.Journal(tmp_path).open()
    calls: list[str] = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync"))
    real = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, off: calls.append("pwrite") or real(fd, data, off))
    j.append(record())
    assert calls == ["pwrite"]
    assert json.loads(journal.encode(record()))[0]


HELD_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from halton_meter.store.writer import Writer
    from halton_meter.types import CallRecord
    db, ids = Path(sys.argv[1]), sys.argv[2:]
    writer = Writer(db).start()
    base = dict(started_at="2026-11-15T12:00:00.000000Z", provider="anthropic", endpoint_kind="messages",
                host="api.anthropic.com", method="POST", path="/v1/messages", project="held")
    held, done = ids
    writer.submit(CallRecord(id=held, incomplete_reason="in_progress", **base))   # still running at the kill
    writer.submit(CallRecord(id=done, incomplete_reason="in_progress", **base))
    writer.submit(CallRecord(id=done, status=200, complete=True, input_tokens=7, **base))  # ended: committed
    while writer.stats.committed < 2:
        time.sleep(0.01)
    print("COMMITTED", writer.held, flush=True)
    time.sleep(60)
""")


def test_a_held_provisional_row_survives_kill_9_and_its_journal_is_kept(tmp_path: Path) -> None:
    """A provisional row held back for its final row is not in the database yet: the journal must keep it
    (its cursor never passes a held row, even once later records commit), so a crash still leaves the call
    as a row at the next start."""
    db = tmp_path / "db.sqlite"
    migrate(db)
    held, done = str(uuid.uuid4()), str(uuid.uuid4())
    child = subprocess.Popen([sys.executable, "-c", HELD_CHILD, str(db), held, done], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == [b"COMMITTED", b"1"]
        assert set(rows(db)) == {done}  # the ended call is written once; the running one is held
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    writer = Writer(db).start(recover=True)
    assert writer.close(timeout=20)
    found = rows(db)
    assert found[held][0] == "core_crash" and found[done][:2] == (None, 7)


def test_provisional_rows_are_held_then_written_when_due_and_at_a_stop(tmp_path: Path) -> None:
    from halton_meter.store import writer as writer_module

    db = tmp_path / "db.sqlite"
    migrate(db)
    writer = Writer(db, spool_dir=tmp_path / "spool").start()
    long_call, at_stop = record(project="long"), record(project="stop")
    started = time.monotonic()
    writer.submit(long_call.replace(incomplete_reason="in_progress", complete=False))
    time.sleep(0.2)
    assert rows(db) == {} and writer.held == 1 and writer.pending == 0  # held: not "behind"
    deadline = time.monotonic() + 10
    while long_call.id not in rows(db) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rows(db)[long_call.id][0] == "in_progress"
    assert writer_module.PROVISIONAL_HOLD_SECONDS <= time.monotonic() - started < writer_module.PROVISIONAL_HOLD_SECONDS + 1
    writer.submit(long_call)
    writer.submit(at_stop.replace(incomplete_reason="in_progress", complete=False))
    assert writer.close(timeout=15)  # a stop writes what is held
    found = rows(db)
    assert found[long_call.id][0] is None and found[at_stop.id][0] == "in_progress"
    assert list((tmp_path / "spool").glob("journal-*")) == []
