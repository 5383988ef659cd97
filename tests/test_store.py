"""SQLite store: migrations, refusal of bad files, the writer's batching, idempotence and retry."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest

from halton_meter import report
from halton_meter.errors import DatabaseError, ExitCode
from halton_meter.store.queries import list_calls, open_reader
from halton_meter.store.schema import LATEST_VERSION, MIGRATIONS, migrate
from halton_meter.store.writer import Writer
from halton_meter.timewindow import resolve_window
from halton_meter.types import CallRecord


def journal_ids(spool: Path) -> set[str]:
    from halton_meter.store import journal

    return {d["id"] for path in spool.glob("journal-*.seg") for d in journal.read_segment(path)}


def record(**fields) -> CallRecord:
    base = dict(
        id=str(uuid.uuid4()),
        started_at="2026-11-22T10:00:00.000000Z",
        provider="anthropic",
        endpoint_kind="messages",
        host="api.anthropic.com",
        method="POST",
        path="/v1/messages",
        model="claude-sonnet-4-5-20250929",
        model_requested="claude-sonnet-4-5",
        complete=True,
        billable=True,
        usage_reported=True,
        input_tokens=1000,
        output_tokens=500,
        price_provider_id="anthropic",
        project="alpha",
        project_source="env",
    )
    base.update(fields)
    return CallRecord(**base)


def version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def test_fresh_database_is_created_private_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    assert migrate(db) is None
    assert version(db) == LATEST_VERSION
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert migrate(db) is None  # idempotent


def test_upgrade_from_v1_backs_up_then_migrates_keeping_rows(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO calls (id, started_at, recorded_at, provider, endpoint_kind, host, method, path, streamed,"
        " complete, billable, usage_reported, priced, project, project_source)"
        " VALUES ('old', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', 'openai', 'chat.completions',"
        " 'api.openai.com', 'POST', '/v1/chat/completions', 0, 1, 1, 1, 1, 'p', 'cwd')"
    )
    conn.close()
    backup = migrate(db)
    assert backup is not None and backup.exists() and backup.name.startswith("db.sqlite.v1-")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert version(backup) == 1 and version(db) == LATEST_VERSION
    [row] = list_calls(open_reader(db))
    assert row.id == "old" and row.project == "p"
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM gaps").fetchone()[0] == 0
    conn.close()


def test_newer_schema_is_refused_naming_both_versions(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    migrate(db)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 5}")
    conn.commit()
    conn.close()
    with pytest.raises(DatabaseError) as info:
        migrate(db)
    assert f"schema version {LATEST_VERSION + 5}, newer than this Halton Meter understands ({LATEST_VERSION})" in str(info.value)
    assert info.value.exit_code == ExitCode.DATABASE
    assert version(db) == LATEST_VERSION + 5  # never downgraded


@pytest.mark.parametrize("content", [b"this is not a database at all" * 10, b"SQLite format 3\x00" + b"\xff" * 200])
def test_corrupt_file_is_refused_and_left_in_place(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / "db.sqlite"
    db.write_bytes(content)
    with pytest.raises(DatabaseError, match="is not a valid SQLite file"):
        migrate(db)
    assert db.read_bytes() == content


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE something (x)")
    conn.commit()
    conn.close()
    with pytest.raises(DatabaseError, match="was not created by Halton Meter"):
        migrate(db)


def test_cli_reports_a_corrupt_database_with_exit_3(paths, cli) -> None:
    paths.home.mkdir()
    paths.db.write_bytes(b"garbage" * 100)
    result = cli("calls")
    assert result.exit_code == 3
    assert result.stderr.startswith(f"halton-meter: error: database {paths.db} is not a valid SQLite file")
    assert cli("report").exit_code == 3
    # `serve` starts the proxy anyway (tests/test_bad_inputs.py B3): the core refuses the file, one line.
    assert paths.db.read_bytes() == b"garbage" * 100


def test_writer_commits_prices_and_calls_the_hook_after_commit(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    migrate(db)
    committed: list[tuple[str, int]] = []

    def on_committed(r: CallRecord) -> None:
        # The row is visible to another connection by the time the hook runs.
        conn = sqlite3.connect(db)
        count = conn.execute("SELECT count(*) FROM calls WHERE id = ?", (r.id,)).fetchone()[0]
        conn.close()
        committed.append((r.id, count))

    writer = Writer(db, on_committed=on_committed).start()
    records = [record() for _ in range(700)]  # more than one batch
    for r in records:
        assert writer.submit(r)
    assert writer.close(timeout=30)
    assert sorted(committed) == sorted((r.id, 1) for r in records)
    rows = list_calls(open_reader(db))
    assert len(rows) == 700
    # claude-sonnet-4-5 list price: $3/MTok in, $15/MTok out → 1000*3 + 500*15 = 10,500 µ$ = 10,500,000 n$.
    assert {r.cost_nanos for r in rows} == {10_500_000}
    assert {r.cost_usd for r in rows} == {"0.010500000"}
    assert writer.stats.batches >= 2


def test_writer_is_idempotent_by_uuid(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    migrate(db)
    writer = Writer(db).start()
    r = record()
    writer.submit(r)
    writer.submit(r.replace(project="changed"))
    assert writer.close(timeout=10)
    rows = list_calls(open_reader(db))
    assert [x.id for x in rows] == [r.id] and rows[0].project == "alpha"


def test_writer_waits_out_a_locked_database_without_losing_rows(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    migrate(db)
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("PRAGMA busy_timeout = 0")
    blocker.execute("BEGIN EXCLUSIVE")
    writer = Writer(db).start()
    sent = [record() for _ in range(5)]
    for r in sent:
        writer.submit(r)
    release = threading.Timer(6.5, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        deadline = time.monotonic() + 30
        while writer.stats.committed < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        release.join()
        blocker.close()
    assert writer.stats.committed == 5
    assert writer.stats.write_errors >= 1 and "locked" in (writer.stats.last_error or "")
    assert writer.close(timeout=10)
    assert len(list_calls(open_reader(db))) == 5


def test_full_queue_counts_the_drop(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    migrate(db)
    writer = Writer(db, max_queue=2)  # not started: nothing drains
    assert writer.submit(record()) and writer.submit(record())
    assert not writer.submit(record())
    assert writer.stats.dropped == 1 and writer.stats.submitted == 2


def test_report_totals_and_breakdowns(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    migrate(db)
    writer = Writer(db).start()
    writer.submit(record(project="alpha", input_tokens=100, output_tokens=10))
    writer.submit(record(project="beta", input_tokens=200, output_tokens=20, cache_read_tokens=50))
    writer.submit(record(project="beta", model="mystery-model-9", model_requested="mystery-model-9",
                         input_tokens=1, output_tokens=1))
    writer.submit(record(project="alpha", started_at="2020-01-01T00:00:00.000000Z"))  # outside the window
    writer.submit(record(project="alpha", billable=False, usage_reported=False, complete=False,
                         input_tokens=0, output_tokens=0, error_type="overloaded_error"))
    assert writer.close(timeout=30)
    window = resolve_window(since="2026-11-01T00:00:00Z", until="2026-12-01T00:00:00Z")
    data = report.build(db, window).to_json()
    assert data["totals"]["calls"] == 4
    assert data["totals"]["input_tokens"] == 301 and data["totals"]["cache_read_tokens"] == 50
    assert data["totals"]["unpriced_calls"] == 1
    assert data["totals"]["incomplete_calls"] == 1 and data["totals"]["error_calls"] == 1
    # 100*3+10*15 = 450 µ$ ; 200*3 + 50*0.3 + 20*15 = 915 µ$ ; mystery unpriced ; error $0
    assert data["totals"]["cost_usd"] == "0.001365000"
    by_project = {row["project"]: row for row in data["groups"]}
    assert by_project["alpha"]["calls"] == 2 and by_project["alpha"]["cost_usd"] == "0.000450000"
    assert by_project["beta"]["cost_usd"] == "0.000915000" and by_project["beta"]["unpriced_calls"] == 1
    assert [row["project"] for row in data["groups"]] == ["beta", "alpha"]  # by cost, descending
    by_model = report.build(db, window, by=("model",)).to_json()["groups"]
    assert {row["model"] for row in by_model} == {"claude-sonnet-4-5-20250929", "mystery-model-9"}


def test_report_keeps_subscription_traffic_apart(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    migrate(db)
    writer = Writer(db).start()
    writer.submit(record(project="p", input_tokens=1000, output_tokens=0))  # $0.003 charged
    writer.submit(record(project="p", billing="subscription", input_tokens=0, output_tokens=1000))  # $0.015 list
    writer.submit(record(project="p", estimated=True, usage_reported=False, input_tokens=100, output_tokens=0))
    assert writer.close(timeout=30)
    window = resolve_window(since="2026-11-01T00:00:00Z", until="2026-12-01T00:00:00Z")
    totals = report.build(db, window).to_json()["totals"]
    assert totals["cost_usd"] == "0.003300000"  # 1000 + 100 estimated input tokens at $3/MTok
    assert totals["subscription_calls"] == 1
    assert totals["subscription_list_price_usd"] == "0.015000000"
    assert totals["estimated_calls"] == 1 and totals["unpriced_calls"] == 0


def test_our_own_wal_after_a_crash_is_accepted_and_replayed(tmp_path: Path) -> None:
    import shutil

    db = tmp_path / "live" / "db.sqlite"
    migrate(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("INSERT INTO gaps (id, at, host, reason) VALUES ('g1', '2026-01-01T00:00:00Z', 'h', 'r')")
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'writes'")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("db.sqlite", "db.sqlite-wal"):  # what a SIGKILL leaves behind: the file and its log
        shutil.copy(db.parent / name, crashed / name)
    conn.close()
    assert migrate(crashed / "db.sqlite") is None
    check = sqlite3.connect(crashed / "db.sqlite")
    assert check.execute("SELECT id FROM gaps").fetchall() == [("g1",)]
    check.close()


def test_writer_keeps_one_connection_and_a_failed_batch_stays_journaled_then_commits_exactly_once(
        tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    migrate(db)
    hooked: list[str] = []
    writer = Writer(db, on_committed=lambda r: hooked.append(r.id), spool_dir=tmp_path / "spool").start()
    first = record()
    writer.submit(first.replace(incomplete_reason="in_progress", complete=False))
    assert writer.wait_idle(10)
    conn = writer._conn
    for _ in range(50):  # one batch each
        writer.submit(record())
        assert writer.wait_idle(10)
    assert writer._conn is conn and writer.stats.batches == 51

    # A failure that is not BUSY (here a rollup table gone, so the writer's rollup upsert fails after the
    # rows went in): the batch stays in the journal, is rolled back whole, retried on a new connection with
    # backoff, and commits exactly once when the database takes writes again.
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("ALTER TABLE rollup RENAME TO rollup_away")
    writer.submit(first)  # the final row of the provisional one above
    failing = record(project="beta")
    writer.submit(failing)
    deadline = time.monotonic() + 10
    while not writer.stats.write_errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.stats.write_errors and writer.pending == 2
    assert journal_ids(tmp_path / "spool") >= {failing.id, first.id}
    assert "no such table: rollup" in (writer.stats.last_error or "") and writer.stats.committed == 51
    assert failing.id not in hooked and first.id not in hooked
    other.execute("ALTER TABLE rollup_away RENAME TO rollup")
    other.close()
    assert writer.close(timeout=15)
    assert writer.stats.committed == 53
    assert not list((tmp_path / "spool").glob("journal-*")), "a clean stop leaves no journal behind"
    assert hooked.count(failing.id) == 1 and hooked.count(first.id) == 1

    check = sqlite3.connect(db)
    try:
        assert check.execute("SELECT count(*), count(DISTINCT id) FROM calls").fetchone() == (52, 52)
        assert check.execute("SELECT incomplete_reason, project FROM calls WHERE id = ?", (first.id,)).fetchone() \
            == (None, "alpha")
        assert check.execute("SELECT sum(calls) FROM rollup").fetchone()[0] == 52  # rolled up once per row
        # Every commit touched `meta` (our WAL always carries the identity page).
        assert int(check.execute("SELECT value FROM meta WHERE key = 'writes'").fetchone()[0]) == writer.stats.batches
    finally:
        check.close()


def test_a_call_that_ends_within_the_hold_is_written_once_and_a_long_one_shows_in_progress(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    migrate(db)
    writer = Writer(db, spool_dir=tmp_path / "spool").start()
    try:
        quick = record()
        writer.submit(quick.replace(incomplete_reason="in_progress", complete=False))
        time.sleep(0.005)
        writer.submit(quick)  # its final row, within the hold: one batch, one write (the final row)
        assert writer.wait_idle(10)
        assert writer.stats.committed == 2 and writer.stats.batches == 1
        slow = record(project="beta")
        writer.submit(slow.replace(incomplete_reason="in_progress", complete=False))
        deadline = time.monotonic() + 5
        seen = None
        while time.monotonic() < deadline and seen is None:  # a long call's provisional row lands on its own
            check = sqlite3.connect(db)
            seen = check.execute("SELECT incomplete_reason FROM calls WHERE id = ?", (slow.id,)).fetchone()
            check.close()
            time.sleep(0.01)
        assert seen == ("in_progress",)
        writer.submit(slow)
        assert writer.wait_idle(10)
    finally:
        assert writer.close(timeout=15)
    check = sqlite3.connect(db)
    try:
        rows = check.execute("SELECT id, incomplete_reason FROM calls ORDER BY project").fetchall()
        assert rows == [(quick.id, None), (slow.id, None)]
        assert check.execute("SELECT sum(calls) FROM rollup").fetchone()[0] == 2
    finally:
        check.close()


def test_a_long_migration_is_announced_and_the_supervisor_waits_for_it(tmp_path: Path, monkeypatch) -> None:
    """Restarting a core that is still migrating would roll the migration back, every time: after the core
    says MIGRATING the supervisor waits past its usual READY timeout."""
    import asyncio
    import os

    from halton_meter.serve import supervisor

    db = tmp_path / "db.sqlite"
    seen: list[tuple[int, int]] = []
    migrate(db, on_start=lambda old, new: seen.append((old, new)))
    assert seen == []  # a new database is made in moments: nothing to announce
    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old)
    for statement in MIGRATIONS[1]:  # a database the first version made
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    migrate(old, on_start=lambda old, new: seen.append((old, new)))
    assert seen == [(1, LATEST_VERSION)]
    migrate(old, on_start=lambda old, new: seen.append((old, new)))  # nothing to do: not announced again
    assert len(seen) == 1

    monkeypatch.setattr(supervisor, "READY_TIMEOUT", 0.3)
    script = "import time; print('MIGRATING 6 7', flush=True); time.sleep(1.0); print('READY 1', flush=True); time.sleep(30)"
    slow = supervisor.Child("core", ["-c", script], dict(os.environ))
    silent = supervisor.Child("core", ["-c", "import time; time.sleep(30)"], dict(os.environ))

    async def both() -> tuple[bool, bool]:
        try:
            return await slow.start(), await silent.start()
        finally:
            for child in (slow, silent):
                if child.proc is not None and child.proc.returncode is None:
                    child.proc.kill()
                    await child.proc.wait()

    assert asyncio.run(both()) == (True, False)


def test_a_truncated_database_is_refused_by_its_own_header(tmp_path: Path) -> None:
    from halton_meter.store.schema import check_intact, declared_size

    db = tmp_path / "db.sqlite"
    migrate(db)
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO gaps (id, at, host, reason) VALUES (?, '2026-01-01T00:00:00Z', 'h', 'r')",
                     [(str(i),) for i in range(2000)])
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    header = db.read_bytes()[:100]
    assert declared_size(header) == db.stat().st_size
    check_intact(db)
    with db.open("r+b") as fh:
        fh.truncate(db.stat().st_size - 4096)
    with pytest.raises(DatabaseError) as info:
        check_intact(db, settle=1)
    assert "is truncated" in info.value.message and f"mv {db} {db}.truncated" in info.value.message
    assert info.value.exit_code == ExitCode.DATABASE
    with pytest.raises(DatabaseError):
        migrate(db)


def test_migration_10_takes_self_tests_out_of_every_project(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    for version in range(1, 10):
        for statement in MIGRATIONS.get(version, []):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 9")
    for row_id, kind in (("canary", "self_test"), ("real", "messages")):
        conn.execute(
            "INSERT INTO calls (id, started_at, recorded_at, provider, endpoint_kind, host, method, path, streamed,"
            " complete, billable, usage_reported, priced, project, project_source)"
            f" VALUES ('{row_id}', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', 'anthropic', "
            f"'{kind}', 'api.anthropic.com', 'POST', '/v1/messages', 0, 1, 1, 1, 1, 'acme', 'cwd')")
    conn.close()
    migrate(db)
    conn = sqlite3.connect(db)
    found = dict((r[0], (r[1], r[2])) for r in conn.execute("SELECT id, project, project_source FROM calls"))
    conn.close()
    assert found == {"canary": ("", "self-test"), "real": ("acme", "cwd")}


def test_the_core_writes_rows_without_importing_sqlalchemy(tmp_path: Path) -> None:
    """SQLAlchemy costs a process about 12 MB of memory: the core (its modules, the migration it runs at
    start, the writer writing a priced row) must not load it. Reports and `reprice` still use it."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import halton_meter.core.runner, halton_meter.core.addon, halton_meter.core.pipeline
        from halton_meter.store.schema import migrate
        from halton_meter.store.writer import Writer
        from halton_meter.types import CallRecord
        db = Path({str(tmp_path / "db.sqlite")!r})
        migrate(db)
        writer = Writer(db, spool_dir=db.parent / "spool").start()
        writer.submit(CallRecord(id="c1", started_at="2026-11-22T10:00:00.000000Z", provider="anthropic",
                                 endpoint_kind="messages", host="api.anthropic.com", method="POST",
                                 path="/v1/messages", model="claude-sonnet-4-5", complete=True,
                                 usage_reported=True, input_tokens=10, output_tokens=5, billable=True,
                                 price_provider_id="anthropic", project="p", project_source="env"))
        assert writer.close(timeout=10)
        print(sorted(m for m in sys.modules if m.split(".")[0] == "sqlalchemy")[:3])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        assert conn.execute("SELECT id, cost_nanos > 0 FROM calls").fetchall() == [("c1", 1)]
