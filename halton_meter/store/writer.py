"""The single writer: a thread fed by a bounded queue, pricing records and committing them in batches.

The proxy's event loop only ever calls `submit`, which never blocks. The contract:

* **Idempotent by our UUID.** A call is written twice: a provisional row when the request is forwarded
  (`incomplete_reason = "in_progress"`) and the final row when it ends; the final one replaces the
  provisional one, a provisional one never replaces a final one, and a replayed batch never duplicates.
* **Nothing is dropped before it commits.** A batch that fails to commit (SQLITE_BUSY, disk full,
  read-only, I/O error) is first appended to the spool file (`spool/records.jsonl`, fsynced) and then
  retried with backoff until it commits; the spool is replayed at start and emptied only once everything
  in it has committed.
* **What cannot even be queued is counted.** When the queue is full, the record is counted as dropped
  and written later as a gap row (`reason = writer_queue_full`), never silently lost.
* **The WAL stays bounded:** a `wal_checkpoint(TRUNCATE)` runs every 30 s.
* **One connection, prepared statements.** The thread keeps one sqlite3 connection (opened on first use,
  reopened after any error other than BUSY) and runs each batch as one `BEGIN IMMEDIATE` transaction of
  statements built once; every transaction also touches `meta.writes`, so our WAL always carries the
  identity page (see `schema.check_wal_belongs`).
* Gaps the edge recorded (`spool/gaps.jsonl`, calls passed through unmetered) are ingested into the
  `gaps` table.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import operator
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from halton_meter.pricing import Pricer
from halton_meter.store.schema import calls, connect
from halton_meter.types import CallRecord

log = structlog.get_logger("halton_meter.writer")

BATCH_MAX = 500
LINGER_SECONDS = 0.02
"""How long a lone provisional row waits for more records (usually its own final row) before committing."""
CHECKPOINT_EVERY = 30.0
GAP_INGEST_EVERY = 2.0
IN_PROGRESS = "in_progress"
_STOP = object()
_RECORD_FIELDS = {f.name for f in dataclasses.fields(CallRecord)}
_T = TypeVar("_T")

# The hot path is plain sqlite3 on one connection, with every statement built once here (SQLite caches the
# prepared statements per connection). A row is the CallRecord's attributes in `_FIELDS` order, then
# `recorded_at` and `extra` (JSON, as SQLAlchemy's JSON type stored it).
_FIELDS = tuple(c.name for c in calls.columns if c.name not in ("recorded_at", "extra"))
_COLUMNS = (*_FIELDS, "recorded_at", "extra")
_values = operator.attrgetter(*_FIELDS)
# A final row replaces a provisional one; a provisional row never replaces anything. An upsert, never INSERT
# OR REPLACE: the rollup triggers (store/rollup.py) see the replacement as an UPDATE.
UPSERT_SQL = (
    f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _COLUMNS if c != 'id')} "
    f"WHERE excluded.incomplete_reason IS NOT '{IN_PROGRESS}' AND calls.incomplete_reason IS '{IN_PROGRESS}'"
)
# Keeps our identity page in our own WAL (see schema.check_wal_belongs): run in every write transaction.
TOUCH_SQL = """UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE "key" = 'writes'"""
CAPTURE_SQL = ("INSERT OR REPLACE INTO captures (call_id, request, response, request_truncated, response_truncated) "
               "VALUES (?, ?, ?, ?, ?)")
_GAP_COLUMNS = ("id", "at", "host", "reason", "project", "client", "bytes_up", "bytes_down")
_GAP_VALUES = f"INTO gaps ({', '.join(_GAP_COLUMNS)}) VALUES ({', '.join('?' * len(_GAP_COLUMNS))})"
DROPPED_SQL = f"INSERT OR IGNORE {_GAP_VALUES}"
GAP_UPSERT_SQL = (f"INSERT {_GAP_VALUES} ON CONFLICT (id) DO UPDATE SET project = excluded.project, "
                  "client = excluded.client, bytes_up = excluded.bytes_up, bytes_down = excluded.bytes_down")
CORE_CRASH_SQL = (f"UPDATE calls SET incomplete_reason = 'core_crash', complete = 0 "
                  f"WHERE incomplete_reason = '{IN_PROGRESS}'")
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def utc_now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_for(record: CallRecord, recorded_at: str) -> dict[str, Any]:
    row = {c.name: getattr(record, c.name) for c in calls.columns if c.name != "recorded_at"}
    row["recorded_at"] = recorded_at
    return row


def row_values(record: CallRecord, recorded_at: str) -> tuple[Any, ...]:
    """The parameters of UPSERT_SQL for one record."""
    return (*_values(record), recorded_at, json.dumps(record.extra))


def record_from_json(data: dict[str, Any]) -> CallRecord:
    return CallRecord(**{k: v for k, v in data.items() if k in _RECORD_FIELDS})


def _superseded_dropped(batch: list[CallRecord]) -> list[CallRecord]:
    """The batch without provisional rows whose final row is in it too (the final would replace them)."""
    finals = {r.id for r in batch if r.incomplete_reason != IN_PROGRESS}
    if not finals:
        return batch
    return [r for r in batch if r.incomplete_reason != IN_PROGRESS or r.id not in finals]


@dataclass
class WriterStats:
    submitted: int = 0
    committed: int = 0
    dropped: int = 0
    """Records that could not be queued (queue full): written as gap rows once the database takes writes."""
    spooled: int = 0
    """Records in the spool file that have not committed yet."""
    write_errors: int = 0
    hook_errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    batches: int = 0
    replayed: int = 0
    gaps_ingested: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)


class Writer:
    def __init__(
        self,
        db_path: Path,
        on_committed: Callable[[CallRecord], None] | None = None,
        pricer: Pricer | None = None,
        max_queue: int = 10_000,
        spool_dir: Path | None = None,
    ) -> None:
        self._db_path = db_path
        self._conn: sqlite3.Connection | None = None
        """The writer's one connection: opened on first use, reopened after an error other than BUSY."""
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._on_committed = on_committed
        self._pricer = pricer or Pricer()
        self._thread = threading.Thread(target=self._run, name="halton-meter-writer", daemon=True)
        self._stopping = threading.Event()
        self._spool_dir = spool_dir or db_path.parent / "spool"
        self._spool = self._spool_dir / "records.jsonl"
        self._dropped: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._last_checkpoint = time.monotonic()
        self._last_gap_ingest = 0.0
        self.stats = WriterStats()

    # ---- producer side (event loop) --------------------------------------------------------------

    def start(self) -> Writer:
        self._thread.start()
        return self

    def submit(self, record: CallRecord) -> bool:
        """Queue a record without blocking. False when the queue is full (the record is counted as a gap)."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.stats.dropped += 1
            with self._lock:
                if len(self._dropped) < 100_000:
                    self._dropped.append({"host": record.host, "project": record.project, "client": record.client,
                                          "at": record.started_at})
            log.error("writer queue full; record counted as a gap", record_id=record.id)
            return False
        self.stats.submitted += 1
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def wait_idle(self, timeout: float) -> bool:
        """Block until everything submitted so far has been committed (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return self._queue.unfinished_tasks == 0

    def close(self, timeout: float = 10.0) -> bool:
        """Flush what is queued (up to `timeout`) and stop. True when nothing was left behind.

        A batch that cannot commit before the deadline stays in the spool and is replayed at next start.
        """
        self._stopping.set()
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        left = self._queue.qsize()
        if left:
            log.error("writer stopped with records still queued", left=left)
        alive = self._thread.is_alive()
        if not alive:  # a thread still retrying keeps its connection (it is a daemon: it ends with the process)
            self._disconnect()
        return left == 0 and not alive

    # ---- start-up --------------------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """At start, before serving: replay the spool, ingest gaps, and mark calls a crashed core left in
        progress. Returns counts of each."""
        replayed = self._replay_spool()
        ingested = self._ingest_gaps()
        crashed = self._write(lambda conn: conn.execute(CORE_CRASH_SQL).rowcount)
        if replayed or ingested or crashed:
            log.warning("recovered after an unclean stop", replayed=replayed, gaps=ingested, core_crash=crashed)
        return {"replayed": replayed, "gaps": ingested, "core_crash": crashed}

    def _replay_spool(self) -> int:
        if not self._spool.exists():
            return 0
        records = []
        with self._spool.open() as fh:
            for line in fh:
                try:
                    records.append(record_from_json(json.loads(line)))
                except (ValueError, TypeError):
                    continue  # a torn last line from a crash mid-write
        if records:
            self._upsert(records)
        self._spool.unlink()
        self.stats.replayed += len(records)
        return len(records)

    # ---- consumer side (writer thread) -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                self._housekeeping()
                continue
            if item is _STOP:
                self._queue.task_done()
                self._housekeeping(final=True)
                return
            batch: list[CallRecord] = [item]  # type: ignore[list-item]
            stop_after = False
            # A provisional row waits a moment for company: most calls end within it, and then only their
            # final row is written (one commit instead of two). A crash in that moment loses no more than
            # any record still in the queue would.
            linger_until = time.monotonic() + LINGER_SECONDS if item.incomplete_reason == IN_PROGRESS else 0.0  # type: ignore[union-attr]
            open_calls = {item.id} if linger_until else set()  # type: ignore[union-attr]
            while len(batch) < BATCH_MAX:
                try:
                    wait = linger_until - time.monotonic()
                    more = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._queue.task_done()
                    stop_after = True
                    break
                batch.append(more)  # type: ignore[arg-type]
                if linger_until:  # provisional rows in the batch whose final row has not come yet
                    if more.incomplete_reason == IN_PROGRESS:  # type: ignore[union-attr]
                        open_calls.add(more.id)  # type: ignore[union-attr]
                    else:
                        open_calls.discard(more.id)  # type: ignore[union-attr]
                    if not open_calls:
                        linger_until = 0.0  # every call in the batch has ended: write now
            taken = len(batch)
            batch = _superseded_dropped(batch)
            self._price(batch)
            if self._commit(batch):
                self.stats.committed += taken - len(batch)  # the provisional rows their final rows replaced
            for _ in range(taken):
                self._queue.task_done()
            self._housekeeping(final=stop_after)
            if stop_after:
                return

    def _price(self, batch: list[CallRecord]) -> None:
        for record in batch:
            if record.incomplete_reason == IN_PROGRESS or record.cost_nanos is not None or record.priced:
                continue
            try:
                price = self._pricer.price(record)
            except Exception as exc:  # pricing must never cost the row
                log.error("pricing failed", record_id=record.id, error=str(exc))
                record.priced, record.price_source = False, f"pricing error: {type(exc).__name__}"
                continue
            record.cost_nanos, record.priced, record.price_source = price.cost_nanos, price.priced, price.source
            record.cache_savings_nanos = price.cache_savings_nanos

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = self._conn = connect(self._db_path)
        return conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `work` and the `meta` touch in one BEGIN IMMEDIATE transaction on the writer's connection.
        On failure the transaction is rolled back and the error raised; after any SQLite error but BUSY
        (disk full, read-only, I/O, corruption) the connection is closed, and the next write opens a new one."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute(TOUCH_SQL)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if conn.in_transaction:  # could not even roll back: start afresh on a new connection
                    self._disconnect()
                raise
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _BUSY:
                self._disconnect()
            raise
        return result

    def _upsert(self, batch: list[CallRecord]) -> None:
        recorded_at = utc_now_iso()
        rows = [row_values(r, recorded_at) for r in batch]
        captured = [(r.id, r.capture.get("request"), r.capture.get("response"),
                     r.capture.get("request_truncated", False), r.capture.get("response_truncated", False))
                    for r in batch if r.capture]

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(UPSERT_SQL, rows)
            if captured:
                conn.executemany(CAPTURE_SQL, captured)

        self._write(work)

    def _commit(self, batch: list[CallRecord]) -> bool:
        delay = 0.05
        spooled = False
        while True:
            try:
                self._upsert(batch)
                break
            except Exception as exc:  # BUSY, disk full, read-only, I/O: make it durable, then retry
                self._note_error(exc)
                if not spooled:
                    spooled = self._append_spool(batch)
                if self._stopping.is_set() and delay > 2:
                    log.error("stopping with a batch not committed; it stays in the spool for the next start",
                              rows=len(batch), spooled=spooled, error=self.stats.last_error)
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.stats.committed += len(batch)
        self.stats.batches += 1
        self.stats.last_success_at = time.time()
        if spooled:
            self.stats.spooled = max(0, self.stats.spooled - len(batch))
            if self.stats.spooled == 0:
                self._spool.unlink(missing_ok=True)
        if self._on_committed is not None:
            for record in batch:
                if record.incomplete_reason == IN_PROGRESS:
                    continue
                try:
                    self._on_committed(record)
                except Exception as exc:
                    self.stats.hook_errors += 1
                    log.error("usage_recorded hook failed", error=f"{type(exc).__name__}: {exc}")
        return True

    def _append_spool(self, batch: list[CallRecord]) -> bool:
        try:
            self._spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self._spool, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as fh:
                for record in batch:
                    line = {**row_for(record, ""), "capture": record.capture}
                    fh.write(json.dumps(line, separators=(",", ":")) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # the spool's disk is full too: the batch stays in memory and is retried
            log.error("cannot write the spool either; keeping the batch in memory", error=str(exc))
            return False
        self.stats.spooled += len(batch)
        return True

    def _housekeeping(self, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self._last_gap_ingest > GAP_INGEST_EVERY:
            self._last_gap_ingest = now
            try:
                self._ingest_gaps()
                self._write_dropped()
            except Exception as exc:  # retried next time; the files stay in place
                self._note_error(exc)
        if final or now - self._last_checkpoint > CHECKPOINT_EVERY:
            self._last_checkpoint = now
            try:
                self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except Exception:  # busy readers: the next checkpoint will do it
                pass

    def _write_dropped(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, []
        if not dropped:
            return
        rows = [(str(uuid.uuid4()), d["at"], d["host"], "writer_queue_full", d["project"], d["client"], None, None)
                for d in dropped]
        try:
            self._write(lambda conn: conn.executemany(DROPPED_SQL, rows))
        except Exception:
            with self._lock:
                self._dropped = dropped + self._dropped
            raise

    def _ingest_gaps(self) -> int:
        """Move the edge's gap lines into the `gaps` table: rename first (the edge opens the file per line),
        insert, then delete, so a crash at any point loses nothing and duplicates nothing."""
        live = self._spool_dir / "gaps.jsonl"
        if live.exists():
            live.rename(self._spool_dir / f"gaps.{time.time_ns()}.ingest")
        total = 0
        for batch_file in sorted(self._spool_dir.glob("gaps.*.ingest")):
            latest: dict[str, dict[str, Any]] = {}
            for line in batch_file.read_text().splitlines():
                try:
                    gap = json.loads(line)
                except ValueError:
                    continue
                if isinstance(gap, dict) and gap.get("id"):
                    latest[gap["id"]] = {**latest.get(gap["id"], {}), **gap}  # a later line completes it
            rows = [tuple((g.get("reason") or "unknown") if k == "reason" else g.get(k) for k in _GAP_COLUMNS)
                    for g in latest.values() if g.get("at") and g.get("host")]
            if rows:
                self._write(lambda conn, rows=rows: conn.executemany(GAP_UPSERT_SQL, rows))
            batch_file.unlink()
            total += len(rows)
        self.stats.gaps_ingested += total
        return total

    def _note_error(self, exc: Exception) -> None:
        message = str(getattr(exc, "orig", None) or exc)
        self.stats.write_errors += 1
        self.stats.last_error = message
        self.stats.last_error_at = time.time()
        kind = message.split(":")[0]
        self.stats.errors_by_kind[kind] = self.stats.errors_by_kind.get(kind, 0) + 1
        log.warning("database write failed; retrying", error=message)
