"""The database side of `halton-meter import`: what is already there, and writing imported calls.

Imports write through a short-lived connection of their own, one `BEGIN IMMEDIATE` transaction per batch of
at most `BATCH` rows, and never through `store.writer.Writer`: a second Writer would open the spool journal a
running meter is using and take its segments for an earlier core's leftovers. The busy timeout (5 s, as
every writing connection) makes a batch wait for the meter's writer, whose transactions are short; a batch
still refused is tried again a few times, then the import stops with one line (what was written stays, and
running the import again carries on). Each row is inserted with `ON CONFLICT DO NOTHING` on its import key,
so two imports running at once cannot duplicate a call, and the rollup triggers see plain INSERTs.

Lookups of what the meter itself recorded go one UTC day at a time through the `started_at` index: the
meter's write path gets no new index for them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from halton_meter.clock import utc_stamp
from halton_meter.errors import DatabaseError
from halton_meter.store.schema import connect, initialised, migrate, read_only_uri
from halton_meter.types import SOURCE_IMPORT, SOURCE_PROXY, CallRecord

BATCH = 500
BUSY_ATTEMPTS = 4
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def open_db(db: Path, dry_run: bool) -> sqlite3.Connection | None:
    """A connection for an import: with `dry_run`, read-only, and None when there is no database yet (a dry
    run creates nothing); else the database is created or migrated first, as the meter does at start."""
    if dry_run:
        if not initialised(db):
            return None
        conn = sqlite3.connect(read_only_uri(db), uri=True, timeout=5, isolation_level=None)
        conn.execute("PRAGMA query_only = ON")
        return conn
    migrate(db)
    return connect(db)


def _has_column(conn: sqlite3.Connection, name: str) -> bool:
    return any(row[1] == name for row in conn.execute("PRAGMA table_info(calls)"))


def has_import_columns(conn: sqlite3.Connection) -> bool:
    """False for a database from before schema 9 (only a dry run reads one: every row is then the meter's)."""
    return _has_column(conn, "import_key")


def _chunks(values: Sequence[str], size: int = BATCH) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def existing_keys(conn: sqlite3.Connection, keys: Sequence[str]) -> set[str]:
    """The import keys among `keys` that are in the table already (from an earlier import)."""
    if not has_import_columns(conn):
        return set()
    found: set[str] = set()
    for chunk in _chunks(keys):
        marks = ", ".join("?" * len(chunk))
        found.update(r[0] for r in conn.execute(f"SELECT import_key FROM calls WHERE import_key IN ({marks})", chunk))
    return found


def _metered(conn: sqlite3.Connection, providers: Sequence[str]) -> tuple[str, list[str]]:
    marks = ", ".join("?" * len(providers))
    where = f"provider IN ({marks}) AND started_at >= ? AND started_at < ?"
    if has_import_columns(conn):
        where += f" AND source = '{SOURCE_PROXY}'"
    return where, list(providers)


def metered_ids(conn: sqlite3.Connection, providers: Sequence[str], since: str, until: str) -> set[str]:
    """`provider_request_id` of the calls the meter recorded for `providers` in [since, until)."""
    where, params = _metered(conn, providers)
    return {r[0] for r in conn.execute(f"SELECT provider_request_id FROM calls WHERE {where} "
                                       "AND provider_request_id IS NOT NULL", (*params, since, until))}


def metered_usage(conn: sqlite3.Connection, providers: Sequence[str], since: str,
                  until: str) -> dict[tuple[int, int, int, int], list[str]]:
    """The calls the meter recorded for `providers` in [since, until): (input, cache read, cache write,
    output) → their start times, sorted."""
    where, params = _metered(conn, providers)
    found: dict[tuple[int, int, int, int], list[str]] = {}
    rows = conn.execute(f"SELECT input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, started_at "
                        f"FROM calls WHERE {where} AND usage_reported != 0 ORDER BY started_at",
                        (*params, since, until))
    for *counts, started_at in rows:
        found.setdefault((counts[0], counts[1], counts[2], counts[3]), []).append(started_at)
    return found


def latest_billing(conn: sqlite3.Connection, client: str, providers: Sequence[str]) -> str | None:
    """How the meter last saw `client` pay (`api` or `subscription`), or None when it never saw it."""
    marks = ", ".join("?" * len(providers))
    source = f" AND source = '{SOURCE_PROXY}'" if has_import_columns(conn) else ""
    row = conn.execute(f"SELECT billing FROM calls WHERE client = ? AND provider IN ({marks}) AND billable != 0"
                       f"{source} ORDER BY started_at DESC LIMIT 1", (client, *providers)).fetchone()
    return row[0] if row else None


def _transaction(conn: sqlite3.Connection, work: Any) -> Any:
    """`work(conn)` in one BEGIN IMMEDIATE transaction that also touches `meta.writes` (as every write of the
    meter does), tried again while another writer holds the database."""
    from halton_meter.store.writer import TOUCH_SQL

    for attempt in range(BUSY_ATTEMPTS):
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute(TOUCH_SQL)
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _BUSY or attempt == BUSY_ATTEMPTS - 1:
                raise DatabaseError(f"cannot write imported calls: {exc}; what was imported so far is kept, and "
                                    "running the import again carries on") from None
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def insert(conn: sqlite3.Connection, records: Sequence[CallRecord]) -> int:
    """Insert `records` (imported calls, priced) in batches; returns how many rows were new. Rows are built
    by the writer's own encoding, in its column order, so an imported row is stored as a metered one."""
    from halton_meter.store.writer import _COLUMNS, row_values  # SQLAlchemy: only when writing

    sql = (f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
           "ON CONFLICT DO NOTHING")
    inserted = 0
    for start in range(0, len(records), BATCH):
        recorded_at = utc_stamp()
        rows = [row_values(r, recorded_at) for r in records[start:start + BATCH]]
        inserted += _transaction(conn, lambda c, rows=rows: c.executemany(sql, rows).rowcount)
    return inserted


def rebill(conn: sqlite3.Connection, keys: Sequence[str], billing: str, provider: str) -> int:
    """Set the billing, and the provider that goes with it, of calls imported earlier under `keys` (their
    price does not depend on either: a subscription's cost is shown at list price). Returns how many rows
    changed."""
    changed = 0
    sql = (f"UPDATE calls SET billing = ?, provider = ? WHERE import_key = ? AND source = '{SOURCE_IMPORT}' "
           "AND (billing IS NOT ? OR provider IS NOT ?)")
    for chunk in _chunks(keys):
        params = [(billing, provider, key, billing, provider) for key in chunk]
        changed += _transaction(conn, lambda c, params=params: c.executemany(sql, params).rowcount)
    return changed


def count_imported(conn: sqlite3.Connection, since: str, until: str, filters: Any) -> dict[str, int]:
    """Imported calls in [since, until) that pass the report's `filters`, per client (the tool whose logs
    they came from). Empty for a database from before schema 9."""
    if not has_import_columns(conn):
        return {}
    from halton_meter.store.aggregate import _raw_where  # the report's own row filter, so the counts agree

    where, params = _raw_where([(since, until)], filters)
    rows = conn.execute(f"SELECT ifnull(X.client, ''), count(*) FROM calls AS X WHERE X.source = '{SOURCE_IMPORT}' "
                        f"AND {where} GROUP BY 1 ORDER BY 2 DESC, 1", tuple(params))
    return {client: n for client, n in rows}
