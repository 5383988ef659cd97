"""The gap log: traffic to metered hosts that reached the provider without being metered.

A gap is never a silent loss: it is a line appended (and fsynced) to `spool/gaps.jsonl` by whoever saw the
traffic pass — the edge, which needs no database — and later moved into the `gaps` table by the writer.
The file and the table together are the one source of truth: `status` and `report` read both.

Three kinds, each honest about what it covers:

* `tunnel` — a CONNECT tunnel passed through while the core was down. Its TLS is end to end, so the
  number of calls inside is unknown: the gap counts one *connection*, its bytes each way, its duration,
  who the client was, and `calls_estimated`, an estimate from the TLS record pattern (see
  `edge.TlsRequestCounter`), always labelled as one. A tunnel is reported as "≥ 1 call".
* `request` — one plain-HTTP request passed through: exactly one call (`calls = 1`).
* `record` — a call the core metered but could not keep (writer queue full, or lost in a crash while
  the disk was too full to journal it): `calls` is exact.

Each line is self-contained (id, time, host, reason, kind), and a later line with the same id completes
the earlier one (a tunnel's closing line adds bytes, duration and the client); the table upsert keeps any
value a later line does not repeat.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GAP_FILE = "gaps.jsonl"
INGEST_GLOB = "gaps.*.ingest"
KINDS = ("tunnel", "request", "record")
COLUMNS = ("id", "at", "host", "reason", "kind", "project", "client", "bytes_up", "bytes_down", "connections",
           "calls", "calls_estimated", "duration_ms", "ended_at")
_KEEP = ", ".join(f"{c} = coalesce(excluded.{c}, gaps.{c})" for c in COLUMNS if c not in ("id", "at", "host"))
UPSERT_SQL = (f"INSERT INTO gaps ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
              f"ON CONFLICT (id) DO UPDATE SET {_KEEP}")


def append_line(directory: Path, line: dict[str, Any]) -> None:
    """Append one gap line durably (fsync): a power cut after this returns still leaves the gap counted.
    Blocking I/O: callers on an event loop run it in an executor."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
    fd = os.open(directory / GAP_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _merge_into(latest: dict[str, dict[str, Any]], text: str) -> None:
    for raw in text.splitlines():
        try:
            gap = json.loads(raw)
        except ValueError:
            continue  # a torn last line from a crash mid-write
        if isinstance(gap, dict) and isinstance(gap.get("id"), str):
            merged = latest.setdefault(gap["id"], {})
            merged.update({k: v for k, v in gap.items() if v is not None})


def pending(directory: Path) -> dict[str, dict[str, Any]]:
    """Gap lines not yet in the database (the live file and any batch being ingested), merged by id."""
    latest: dict[str, dict[str, Any]] = {}
    for path in [*sorted(directory.glob(INGEST_GLOB)), directory / GAP_FILE]:
        with contextlib.suppress(OSError):
            _merge_into(latest, path.read_text(errors="replace"))
    return latest


def row_values(gap: dict[str, Any]) -> tuple[Any, ...]:
    values = {c: gap.get(c) for c in COLUMNS}
    values["reason"] = values["reason"] or "unknown"
    if values["kind"] not in KINDS:
        values["kind"] = "tunnel"
    return tuple(values[c] for c in COLUMNS)


def _upsert(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> sqlite3.Cursor:
    return conn.executemany(UPSERT_SQL, rows)


def ingest(directory: Path, write: Callable[[Callable[[sqlite3.Connection], Any]], Any]) -> int:
    """Move gap lines into the `gaps` table: rename the live file first (appenders open it per line, so the
    next line starts a new one), upsert, then delete, so a crash at any point loses nothing and duplicates
    nothing. `write(work)` runs `work(conn)` in one write transaction."""
    live = directory / GAP_FILE
    if live.exists():
        live.rename(directory / f"gaps.{time.time_ns()}.ingest")
    total = 0
    for batch_file in sorted(directory.glob(INGEST_GLOB)):
        latest: dict[str, dict[str, Any]] = {}
        _merge_into(latest, batch_file.read_text(errors="replace"))
        rows = [row_values(g) for g in latest.values() if g.get("at") and g.get("host")]
        if rows:
            write(functools.partial(_upsert, rows=rows))
        batch_file.unlink()
        total += len(rows)
    return total


@dataclass
class GapSummary:
    """What passed the meter by in a window. `calls_at_least` counts every tunnel as one call (it carried
    at least the request that opened it); `calls_estimated` adds the tunnels' estimates instead."""

    connections: int = 0
    """Pass-through tunnels."""
    calls: int = 0
    """Calls known exactly (plain-HTTP requests passed through, records that could not be kept)."""
    calls_estimated: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    last_at: str | None = None
    last_reason: str | None = None

    @property
    def calls_at_least(self) -> int:
        return self.calls + self.connections

    @property
    def empty(self) -> bool:
        return not (self.connections or self.calls)

    def add(self, kind: str | None, connections: int | None, calls: int | None, estimated: int | None,
            up: int | None, down: int | None, at: str | None, reason: str | None) -> None:
        if kind == "tunnel" or kind is None:
            n = connections or 1
            self.connections += n
            self.calls_estimated += estimated if estimated is not None else n
        else:
            self.calls += calls or 1
            self.calls_estimated += calls or 1
        self.bytes_up += up or 0
        self.bytes_down += down or 0
        if at and (self.last_at is None or at > self.last_at):
            self.last_at, self.last_reason = at, reason

    def describe(self) -> str:
        """`2 pass-through connections (≥ 2 calls, about 9 by estimate) and 1 call` — never "N calls" for
        tunnels, whose calls nobody counted."""
        parts = []
        if self.connections:
            noun = "connection" if self.connections == 1 else "connections"
            estimate = (f", about {self.calls_estimated - self.calls} by estimate"
                        if self.calls_estimated - self.calls != self.connections else "")
            parts.append(f"{self.connections} pass-through {noun} (≥ {self.connections} "
                         f"call{'s' if self.connections != 1 else ''}{estimate})")
        if self.calls:
            parts.append(f"{self.calls} call{'s' if self.calls != 1 else ''}")
        return " and ".join(parts) or "none"

    def to_json(self) -> dict[str, Any]:
        return {"connections": self.connections, "calls": self.calls, "calls_at_least": self.calls_at_least,
                "calls_estimated": self.calls_estimated, "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
                "last_at": self.last_at, "last_reason": self.last_reason}


SUMMARY_SELECT = ("SELECT kind, connections, calls, calls_estimated, bytes_up, bytes_down, at, reason, id "
                  "FROM gaps")


def summarize(conn: sqlite3.Connection | None, directory: Path | None, since: str | None = None,
              until: str | None = None, where: str = "", params: tuple[Any, ...] = (),
              keep: Callable[[dict[str, Any]], bool] | None = None) -> GapSummary:
    """Gaps in [since, until) from the table and, when `directory` is given, the lines not ingested yet
    (a line already in the table is counted once). `where`/`params` filter the table (project, client) and
    `keep` the same way the lines not ingested yet."""
    summary = GapSummary()
    clauses, args = [], []
    if since is not None:
        clauses.append("at >= ?")
        args.append(since)
    if until is not None:
        clauses.append("at < ?")
        args.append(until)
    if where:
        clauses.append(where)
        args.extend(params)
    seen: set[str] = set()
    if conn is not None:
        sql = SUMMARY_SELECT + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
        for kind, connections, calls, estimated, up, down, at, reason, gap_id in conn.execute(sql, args):
            summary.add(kind, connections, calls, estimated, up, down, at, reason)
            seen.add(gap_id)
    if directory is not None:
        for gap_id, gap in pending(directory).items():
            at = gap.get("at")
            if gap_id in seen or not at or (since is not None and at < since) or (until is not None and at >= until):
                continue
            if keep is not None and not keep(gap):
                continue
            summary.add(gap.get("kind"), gap.get("connections"), gap.get("calls"), gap.get("calls_estimated"),
                        gap.get("bytes_up"), gap.get("bytes_down"), at, gap.get("reason"))
    return summary
