"""What changed, in order: the local sequence sync targets follow (docs/sync.md).

Schema version 15 adds `sync_log` (an autoincrement `seq` and the `call_id` that changed) and triggers that
append to it whenever a call row is inserted or updated — by the meter, `reprice`, `retag`, `import` or a
hand-run `sqlite3` — but only while sync is switched on (a row in `sync_enabled`, which the core writes
when a `[[sync]]` target is configured): without targets the triggers' `WHEN` finds nothing and costs one
lookup. A call's latest version is its highest `seq`; a target that has sent everything up to `seq` N
needs only the calls logged after N, and re-sending one is harmless (targets upsert by call id and keep
the higher version).

`sync_state` keeps one row per target: how far its first-time backfill (by `calls.rowid`) and its log cursor
have gone, and its last success and error.

Entries every target has passed are deleted (`prune`), so the log holds only what some target still needs.
"""

from __future__ import annotations

import sqlite3

_WATCHED = ", ".join((
    "started_at", "ended_at", "endpoint_kind", "incomplete_reason", "project", "model", "model_requested", "provider",
    "client", "branch", "key_fingerprint", "billing", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens", "cost_nanos", "cache_savings_nanos", "billable",
    "priced", "estimated", "complete", "error_type", "latency_ms", "ttft_ms", "status", "session_id",
))
_ON = "EXISTS (SELECT 1 FROM sync_enabled)"


def migration() -> list[str]:
    """Schema version 15."""
    return [
        "CREATE TABLE sync_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL)",
        "CREATE TABLE sync_enabled (id INTEGER PRIMARY KEY CHECK (id = 0))",
        """CREATE TABLE sync_state (
            target TEXT PRIMARY KEY,
            backfill_rowid INTEGER NOT NULL DEFAULT 0,
            backfill_until INTEGER,
            log_seq INTEGER NOT NULL DEFAULT 0,
            last_success TEXT,
            last_error TEXT,
            last_error_at TEXT,
            sent INTEGER NOT NULL DEFAULT 0
        )""",
        f"CREATE TRIGGER calls_sync_insert AFTER INSERT ON calls WHEN {_ON}\n"
        "BEGIN\n  INSERT INTO sync_log (call_id) VALUES (NEW.id);\nEND",
        f"CREATE TRIGGER calls_sync_update AFTER UPDATE OF {_WATCHED} ON calls WHEN {_ON}\n"
        "BEGIN\n  INSERT INTO sync_log (call_id) VALUES (NEW.id);\nEND",
    ]


def enable(conn: sqlite3.Connection, on: bool) -> None:
    """Switch the log on (a target is configured) or off (none is: the log is emptied)."""
    if on:
        conn.execute("INSERT OR IGNORE INTO sync_enabled (id) VALUES (0)")
    else:
        conn.execute("DELETE FROM sync_enabled")
        conn.execute("DELETE FROM sync_log")


def prune(conn: sqlite3.Connection, targets: list[str]) -> int:
    """Delete the entries every configured target has passed; returns how many went."""
    if not targets:
        return 0
    marks = ", ".join("?" * len(targets))
    row = conn.execute(f"SELECT min(log_seq), count(*) FROM sync_state WHERE target IN ({marks})", targets).fetchone()
    if row is None or row[1] < len(targets) or row[0] is None:
        return 0  # a target has no state yet: it will need the whole log
    return conn.execute("DELETE FROM sync_log WHERE seq <= ?", (row[0],)).rowcount
