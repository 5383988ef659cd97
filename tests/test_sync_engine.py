"""The sync engine with no target: the change log is switched off once, and never written again after."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from reportkit import call, write

from halton_meter.sync.engine import SyncEngine


def test_with_no_target_the_log_is_switched_off_once_then_starts_write_nothing(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    write(db, [call()])
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO sync_enabled (id) VALUES (0)")  # left on by a target since removed
    conn.execute("INSERT INTO sync_log (call_id) SELECT id FROM calls")
    SyncEngine(db, [], lambda s: None, machine_id="m" * 32).switch_on()  # type: ignore[arg-type, return-value]
    assert conn.execute("SELECT (SELECT count(*) FROM sync_enabled), (SELECT count(*) FROM sync_log)").fetchone() == (0, 0)
    # Already off: a start takes no write lock (another program holding it does not slow the core's start).
    conn.execute("BEGIN IMMEDIATE")
    try:
        engine = SyncEngine(db, [], lambda s: None, machine_id="m" * 32)  # type: ignore[arg-type, return-value]
        engine.switch_on()
    finally:
        conn.execute("ROLLBACK")
        conn.close()
