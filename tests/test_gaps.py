"""The gap log (halton_meter/store/gaps.py): lines, ingestion, summaries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from halton_meter.store import gaps
from halton_meter.store.schema import migrate
from halton_meter.store.writer import Writer


def _rows(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT id, kind, project, client, bytes_up, bytes_down, connections, calls_estimated, "
                            "duration_ms, ended_at FROM gaps ORDER BY id").fetchall()
    finally:
        conn.close()


def test_a_closing_line_after_an_ingest_completes_the_row_it_opened(tmp_path: Path) -> None:
    """The finding: the writer ingested the opening line, then the closing line (bytes, project, client) came
    in a new file and was dropped for lacking `at` and `host`. Lines are self-contained now, and a later one
    completes the row without wiping what it does not repeat."""
    db, spool = tmp_path / "db.sqlite", tmp_path / "spool"
    migrate(db)
    writer = Writer(db, spool_dir=spool)
    opening = {"id": "g1", "at": "2026-12-01T10:00:00.000000Z", "host": "api.anthropic.com",
               "reason": "core restarting", "kind": "tunnel", "connections": 1}
    gaps.append_line(spool, opening)
    assert gaps.ingest(spool, writer._write) == 1
    assert _rows(db) == [("g1", "tunnel", None, None, None, None, 1, None, None, None)]
    gaps.append_line(spool, {**opening, "project": "acme", "client": "claude-code", "bytes_up": 900,
                             "bytes_down": 5000, "calls_estimated": 3, "duration_ms": 1234.5,
                             "ended_at": "2026-12-01T10:00:01.234500Z"})
    gaps.append_line(spool, {"id": "g1", "at": opening["at"], "host": opening["host"], "reason": "x",
                             "kind": "tunnel"})  # a later line without the numbers keeps them
    assert gaps.ingest(spool, writer._write) == 1
    assert _rows(db) == [("g1", "tunnel", "acme", "claude-code", 900, 5000, 1, 3, 1234.5,
                          "2026-12-01T10:00:01.234500Z")]
    assert not list(spool.glob("gaps*"))


def test_summary_counts_connections_and_calls_apart_and_lines_not_yet_ingested(tmp_path: Path) -> None:
    db, spool = tmp_path / "db.sqlite", tmp_path / "spool"
    migrate(db)
    writer = Writer(db, spool_dir=spool)
    gaps.append_line(spool, {"id": "t1", "at": "2026-12-01T10:00:00Z", "host": "h", "reason": "r", "kind": "tunnel",
                             "connections": 1, "calls_estimated": 4, "bytes_up": 10, "bytes_down": 20})
    gaps.append_line(spool, {"id": "r1", "at": "2026-12-01T10:01:00Z", "host": "h", "reason": "r", "kind": "request",
                             "calls": 1})
    gaps.ingest(spool, writer._write)
    gaps.append_line(spool, {"id": "t2", "at": "2026-12-01T10:02:00Z", "host": "h", "reason": "late", "kind": "tunnel",
                             "connections": 1})  # still open, not ingested: counted once, estimate unknown
    conn = sqlite3.connect(db)
    try:
        summary = gaps.summarize(conn, spool, since="2026-12-01T00:00:00Z")
    finally:
        conn.close()
    assert (summary.connections, summary.calls, summary.calls_at_least, summary.calls_estimated) == (2, 1, 3, 6)
    assert summary.last_reason == "late" and (summary.bytes_up, summary.bytes_down) == (10, 20)
    assert summary.describe() == "2 pass-through connections (≥ 2 calls, about 5 by estimate) and 1 call"
    assert gaps.summarize(None, spool, since="2026-12-01T10:01:30Z").describe() == \
        "1 pass-through connection (≥ 1 call)"


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    gaps.append_line(spool, {"id": "a", "at": "2026-12-01T10:00:00Z", "host": "h", "reason": "r", "kind": "request",
                             "calls": 1})
    with (spool / gaps.GAP_FILE).open("a") as fh:
        fh.write('{"id": "b", "at": "2026-12-01T10:0')
    assert list(gaps.pending(spool)) == ["a"]
