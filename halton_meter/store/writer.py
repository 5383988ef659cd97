"""The single writer: a thread fed by a bounded queue, pricing records and committing them in batches.

The proxy's event loop only ever calls `submit`, which never blocks on the database. The contract:

* **Durable before queued.** `submit` appends the record to the journal (`store/journal.py`: preallocated
  segments, one `pwrite`, no fsync) before it queues it, so a record that `submit` accepted survives a
  crash, a `kill -9` or a stop while the database is locked: the next start replays the journal.
* **Idempotent by our UUID.** A call has a provisional record when the request is forwarded
  (`incomplete_reason = "in_progress"`) and a final one when it ends; the final one replaces the
  provisional one, a provisional one never replaces a final one, and a replayed record never duplicates.
* **One write for most calls.** A provisional record is held back (journaled, not yet written) for
  PROVISIONAL_HOLD_SECONDS: a call that ends within it is written once, as its final row; a longer one
  shows as in progress after at most that long. The journal's cursor never passes a held record, so a
  crash still leaves every call as a row at the next start.
* **Nothing is dropped before it commits.** A batch that fails to commit (SQLITE_BUSY, disk full,
  read-only, I/O error) is retried with backoff until it commits, and stays in the journal until then.
* **What cannot even be queued is counted.** When the queue is full, the record is counted as dropped
  and written later as a gap row (`reason = writer_queue_full`), never silently lost.
* **Recovery retries.** At start the writer thread first replays what the previous core left (journal
  segments, an old spool), ingests gaps and marks calls left in progress as `core_crash`, retrying until
  the database takes the writes (a lock at start delays recovery; it never skips it).
* **The WAL stays bounded:** a `wal_checkpoint(TRUNCATE)` runs every 30 s.
* **One connection, prepared statements.** The thread keeps one sqlite3 connection (opened on first use,
  reopened after any error other than BUSY) and runs each batch as one `BEGIN IMMEDIATE` transaction of
  statements built once; every transaction also touches `meta.writes`, so our WAL always carries the
  identity page (see `schema.check_wal_belongs`).
* Gaps the edge recorded (`spool/gaps.jsonl`, traffic passed through unmetered) are ingested into the
  `gaps` table (`store/gaps.py`).

Why this module is long: the contract above is one thread's state machine (journal, queue, batches,
retries, recovery, checkpoints) sharing one connection and one retry loop; split, the guarantees would
be spread over modules that each hold half of them.
"""

from __future__ import annotations

import dataclasses
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

from halton_meter.clock import utc_stamp
from halton_meter.errors import DatabaseError
from halton_meter.pricing import Pricer
from halton_meter.store import gaps, journal
from halton_meter.store.rollupwrite import RollupWriter, switch_triggers_off, triggers_on
from halton_meter.store.schema import CALLS_COLUMNS, check_intact, connect
from halton_meter.types import CallRecord

log = structlog.get_logger("halton_meter.writer")

BATCH_MAX = 500
PROVISIONAL_HOLD_SECONDS = 1.0
"""How long a provisional row is held back (in the journal, not yet in the database) for its final row: a
call that ends within it is written once. The bound on seeing a call in progress; a crash loses nothing
either way (the journal is replayed at the next start)."""
COMMIT_LINGER_SECONDS = 0.02
"""Once a record arrives, the writer waits this long for more before it commits, so calls that come one at a
time still share a commit (a commit costs about as much CPU as the rows in it): a row becomes visible at
most this much later. Budgets are unaffected: a call's reservation holds until its row commits."""
CHECKPOINT_EVERY = 30.0
GAP_INGEST_EVERY = 2.0
IDLE_WAIT_SECONDS = GAP_INGEST_EVERY
"""How long an idle writer sleeps on its queue: a record, the stop or a held row coming due wakes it sooner,
and nothing else it does is due more often (fewer wake-ups of an idle meter)."""
IN_PROGRESS = "in_progress"
_STOP = object()
_RECORD_FIELDS = {f.name for f in dataclasses.fields(CallRecord)}
_T = TypeVar("_T")

# The hot path is plain sqlite3 on one connection, with every statement built once here (SQLite caches the
# prepared statements per connection). A row is the CallRecord's attributes in `_FIELDS` order, then
# `recorded_at` and `extra` (JSON, as SQLAlchemy's JSON type stored it).
_FIELDS = tuple(name for name in CALLS_COLUMNS if name not in ("recorded_at", "extra"))
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
PLAN_COLUMNS = ("call_id", "seen_at", "provider", "account", "kind", "window", "window_minutes", "utilization",
                "resets_at", "status", "limit_value", "remaining", "claim", "fallback_percentage")
PLAN_SQL = (f"INSERT OR IGNORE INTO plan_snapshots ({', '.join(PLAN_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(PLAN_COLUMNS))})")
CAPTURE_SQL = ("INSERT OR REPLACE INTO captures (call_id, request, response, request_truncated, response_truncated) "
               "VALUES (?, ?, ?, ?, ?)")
CORE_CRASH_SQL = (f"UPDATE calls SET incomplete_reason = 'core_crash', complete = 0 "
                  f"WHERE incomplete_reason = '{IN_PROGRESS}'")
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_ROLLUPS = RollupWriter(_COLUMNS)


def _crash_marked(conn: sqlite3.Connection) -> int:
    with triggers_on(conn):  # once per start: the triggers move these rows into the rollups
        return conn.execute(CORE_CRASH_SQL).rowcount


def row_for(record: CallRecord, recorded_at: str) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in CALLS_COLUMNS if name != "recorded_at"}
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
    unsaved: int = 0
    """Queued records the journal could not take (full disk and every segment full): a crash would lose
    them, so they are counted on disk (the journal's counter file) until they commit."""
    write_errors: int = 0
    hook_errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    batches: int = 0
    replayed: int = 0
    gaps_ingested: int = 0
    recovered: bool = False
    """The start-up recovery (journal replay, core_crash marking) has run."""
    errors_by_kind: dict[str, int] = field(default_factory=dict)


class Writer:
    def __init__(
        self,
        db_path: Path,
        on_committed: Callable[[CallRecord], None] | None = None,
        pricer: Pricer | None = None,
        max_queue: int = 10_000,
        spool_dir: Path | None = None,
        journal_bytes: int = journal.SEGMENT_BYTES,
    ) -> None:
        self._db_path = db_path
        self._conn: sqlite3.Connection | None = None
        """The writer's one connection: opened on first use, reopened after an error other than BUSY."""
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._max_queue = max_queue
        self._on_committed = on_committed
        self._pricer = pricer or Pricer()
        self._thread = threading.Thread(target=self._run, name="halton-meter-writer", daemon=True)
        self._stopping = threading.Event()
        self._spool_dir = spool_dir or db_path.parent / "spool"
        self._old_spool = self._spool_dir / "records.jsonl"
        """Where versions before the journal kept failed batches: still replayed at start."""
        self._journal = journal.Journal(self._spool_dir, journal_bytes)
        self._leftovers: list[Path] | None = None
        self._submit_lock = threading.Lock()
        self._dropped: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._last_checkpoint = time.monotonic()
        self._last_gap_ingest = 0.0
        self._recover_at_start = False
        self._identity: tuple[int, int] | None = None
        self._largest = 0
        self._held: dict[str, tuple[int | None, CallRecord, float]] = {}
        """Provisional rows held back for their final row: call id → (journal seq, record, due)."""
        self._done_seq = 0
        self.linger = COMMIT_LINGER_SECONDS
        self.fatal: str | None = None
        """Why the writer stopped writing for good (the database file was truncated, replaced or deleted
        under it): the core then exits 3, and what is queued stays in the journal."""
        self.stats = WriterStats()

    # ---- producer side (event loop) --------------------------------------------------------------

    def start(self, recover: bool = False) -> Writer:
        """Open the journal and start the thread. With `recover`, the thread first replays what an earlier
        core left behind, retrying until the database takes it, before it writes anything new."""
        self._open_journal()
        self._recover_at_start = recover
        self._thread.start()
        return self

    def _open_journal(self) -> None:
        if self._leftovers is None:
            self._leftovers = self._journal.leftovers()  # before ours exist: everything here is an earlier core's
            self._journal.open()

    def submit(self, record: CallRecord, line: bytes | None = None) -> bool:
        """Journal and queue a record without waiting for the database. False when the queue is full (the
        record is then counted as a gap). `line`: the record's journal line when it came encoded (from a
        core worker)."""
        with self._submit_lock:  # journal order is queue order, whichever thread submits
            if self._queue.qsize() >= self._max_queue:
                self._drop(record)
                return False
            seq = self._journal.append(record, line) if self._journal.available else None
            if seq is None:
                self.stats.unsaved += 1
            self._queue.put_nowait((seq, record))
        self.stats.submitted += 1
        return True

    def _drop(self, record: CallRecord) -> None:
        self.stats.dropped += 1
        if record.incomplete_reason == IN_PROGRESS:
            return  # the call's final record (or, failing that, recovery) accounts for it
        with self._lock:
            if len(self._dropped) < 100_000:
                self._dropped.append({"host": record.host, "project": record.project, "client": record.client,
                                      "at": record.started_at})
        log.error("writer queue full; record counted as a gap", record_id=record.id)

    def estimate(self, record: CallRecord) -> int | None:
        """What `record` would cost at the current prices (the budget gate's reservation), without storing it."""
        return self._pricer.price(record).cost_nanos

    def set_pricer(self, pricer: Pricer) -> None:
        """A reloaded config's prices: batches from now on are priced with them."""
        self._pricer = pricer

    @property
    def pending(self) -> int:
        """Records accepted and not committed yet: queued, or in a batch being written (or retried). Held
        provisional rows are not counted: they wait for their call, not for the database (`held`)."""
        return max(0, self._queue.unfinished_tasks - len(self._held))

    @property
    def held(self) -> int:
        """Provisional rows held back for their final row (PROVISIONAL_HOLD_SECONDS at most)."""
        return len(self._held)

    @property
    def journal_problem(self) -> str | None:
        return self._journal.problem

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

        Whatever cannot commit before the deadline stays in the journal and is replayed at the next start.
        """
        self._stopping.set()
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        left = self._queue.qsize()
        alive = self._thread.is_alive()
        if left:
            log.error("writer stopped with records still queued; they stay in the journal for the next start",
                      left=left)
        if not alive:  # a thread still retrying keeps its connection (it is a daemon: it ends with the process)
            self._disconnect()
            # The journal goes only when everything it took has committed (a batch that could not commit was
            # taken off the queue, but it is still in the journal, for the next start).
            everything = self._journal.committed_seq >= self._journal.appended and not self.stats.unsaved
            self._journal.close(remove=left == 0 and everything)
        return left == 0 and not alive

    # ---- start-up --------------------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """Replay what an earlier core left (journal segments, an old spool, an unsaved count), ingest gaps,
        and mark calls a crashed core left in progress as `core_crash`. One attempt: raises when the
        database does not take the writes (the caller retries). Returns counts of each."""
        self._open_journal()
        leftovers = self._leftovers or []
        records: dict[str, CallRecord] = {}
        for path in leftovers:
            for data in journal.read_segment(path):
                self._keep_latest(records, data)
        if self._old_spool.exists():
            for line in self._old_spool.read_text(errors="replace").splitlines():
                try:
                    self._keep_latest(records, json.loads(line))
                except (ValueError, TypeError):
                    continue  # a torn last line from a crash mid-write
        replay = list(records.values())
        self._price(replay)
        lost = sum(journal.read_unsaved(path) for path in self._unsaved_leftovers())
        if replay:
            for start in range(0, len(replay), BATCH_MAX):
                self._upsert(replay[start:start + BATCH_MAX])
        if lost:
            self._write_gap_records([{"host": "unknown", "project": None, "client": None, "at": utc_stamp(),
                                      "reason": "lost_unjournaled", "calls": lost}])
        ingested = gaps.ingest(self._spool_dir, self._write)
        crashed = self._write(_crash_marked)
        for path in leftovers:
            path.unlink(missing_ok=True)
        for path in self._unsaved_leftovers():
            path.unlink(missing_ok=True)
        self._old_spool.unlink(missing_ok=True)
        self._leftovers = []
        self.stats.replayed += len(replay)
        self.stats.gaps_ingested += ingested
        self.stats.recovered = True
        if replay or ingested or crashed or lost:
            log.warning("recovered after an unclean stop", replayed=len(replay), gaps=ingested, core_crash=crashed,
                        lost_unjournaled=lost)
        return {"replayed": len(replay), "gaps": ingested, "core_crash": crashed, "lost": lost}

    def _unsaved_leftovers(self) -> list[Path]:
        own = self._journal.counter_path
        return [p for p in self._spool_dir.glob(f"{journal.PREFIX}*{journal.UNSAVED_SUFFIX}") if p != own]

    @staticmethod
    def _keep_latest(records: dict[str, CallRecord], data: dict[str, Any]) -> None:
        """A final record wins over a provisional one of the same call, whatever the order they come in."""
        record = record_from_json(data)
        known = records.get(record.id)
        if known is None or known.incomplete_reason == IN_PROGRESS:
            records[record.id] = record

    def _recover_until_done(self) -> None:
        delay = 0.1
        while True:
            try:
                self.recover()
                return
            except Exception as exc:  # a locked, full or read-only database: keep trying, keep the files
                self._note_error(exc)
                if self._stopping.is_set() or self.fatal is not None:
                    log.error("stopping before the start-up recovery could run; it runs at the next start",
                              error=self.stats.last_error)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # ---- consumer side (writer thread) -------------------------------------------------------------

    def _run(self) -> None:
        if self._recover_at_start:
            self._recover_until_done()
        while True:
            items, stop_after = self._take()
            batch = self._sorted_out(items, stop_after)
            if batch:
                taken = len(batch)
                records = _superseded_dropped([r for _, r in batch])
                self._price(records)
                if self._commit(records):
                    self.stats.committed += taken - len(records)  # the provisional rows their final rows replaced
                    seqs = [seq for seq, _ in batch if seq is not None]
                    unsaved = taken - len(seqs)
                    self.stats.unsaved = max(0, self.stats.unsaved - unsaved)
                    self._done_seq = max(self._done_seq, max(seqs, default=0))
                    self._journal.committed(self._journal_cursor(), unsaved)
                for _ in range(taken):
                    self._queue.task_done()
            self._housekeeping(final=stop_after)
            if stop_after:
                return

    def _take(self) -> tuple[list[tuple[int | None, CallRecord]], bool]:
        """What the queue holds now (waiting at most until the next held provisional row is due, or
        IDLE_WAIT_SECONDS), and what arrives within COMMIT_LINGER_SECONDS of the first record, up to
        BATCH_MAX records; and whether the stop sentinel came."""
        wait = IDLE_WAIT_SECONDS
        if self._held:
            wait = min(wait, max(0.0, min(due for _, _, due in self._held.values()) - time.monotonic()))
        items: list[tuple[int | None, CallRecord]] = []
        try:
            first = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return items, False
        linger_until = time.monotonic() + self.linger
        while True:
            if first is _STOP:
                self._queue.task_done()
                return items, True
            items.append(first)  # type: ignore[arg-type]  # the queue holds (seq, record) pairs and _STOP
            if len(items) >= BATCH_MAX:
                return items, False
            try:
                first = self._queue.get_nowait()
            except queue.Empty:
                remaining = linger_until - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return items, False
                try:
                    first = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return items, False

    def _sorted_out(self, items: list[tuple[int | None, CallRecord]], stopping: bool
                    ) -> list[tuple[int | None, CallRecord]]:
        """The batch to write now. A provisional row is held back (it stays in the journal) until its
        final row comes, which then replaces it unwritten, or until PROVISIONAL_HOLD_SECONDS have passed:
        most calls end within that and are written once. Held rows are written when due, and all at a stop."""
        now = time.monotonic()
        batch: list[tuple[int | None, CallRecord]] = []
        for seq, record in items:
            if record.incomplete_reason == IN_PROGRESS and record.id not in self._held and not stopping:
                self._held[record.id] = (seq, record, now + PROVISIONAL_HOLD_SECONDS)
                continue
            held = self._held.pop(record.id, None)
            if held is not None:  # its final row (or a repeat): the provisional one goes in the same batch
                batch.append((held[0], held[1]))
            batch.append((seq, record))
        for call_id in [k for k, (_, _, due) in self._held.items() if stopping or due <= now]:
            seq, record, _ = self._held.pop(call_id)
            batch.append((seq, record))
        return batch

    def _journal_cursor(self) -> int:
        """Every journaled record up to this sequence has committed: the highest committed one, but never
        past a held provisional row (it is not in the database yet, only in the journal)."""
        held = [seq for seq, _, _ in self._held.values() if seq is not None]
        return min(self._done_seq, min(held) - 1) if held else self._done_seq

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
            conn = connect(self._db_path)
            switch_triggers_off(conn)  # this connection keeps the rollups itself (store/rollupwrite.py)
            self._conn = conn
        return conn

    def _guard(self) -> None:
        """Raise (and remember, for good) when the database file can no longer be trusted with writes."""
        if self.fatal is not None:
            raise DatabaseError(self.fatal)
        try:
            self._check_file()
        except DatabaseError as exc:
            self.fatal = exc.message
            self._disconnect()
            log.error("the database cannot be written any more", error=exc.message)
            raise

    def _check_file(self) -> None:
        """Before every write: the file is still the one we opened, and whole. Writing on into a database
        that was truncated, replaced or deleted under us would report success while the rows vanish."""
        try:
            st = os.stat(self._db_path)
        except FileNotFoundError:
            raise DatabaseError(f"database {self._db_path} was deleted while the meter ran; restart the meter "
                                "(queued records are kept in the journal and written then)") from None
        identity = (st.st_dev, st.st_ino)
        if self._identity is None:
            self._identity = identity
            check_intact(self._db_path, settle=0)
        elif identity != self._identity:
            raise DatabaseError(f"database {self._db_path} was replaced while the meter ran; the meter restarts "
                                "on the new file (queued records are kept in the journal and written then)")
        elif st.st_size < self._largest:  # our files never shrink: someone cut it
            check_intact(self._db_path, settle=0)
        self._largest = max(self._largest, st.st_size)

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
        self._guard()
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
        recorded_at = utc_stamp()
        rows = [row_values(r, recorded_at) for r in batch]
        captured = [(r.id, r.capture.get("request"), r.capture.get("response"),
                     r.capture.get("request_truncated", False), r.capture.get("response_truncated", False))
                    for r in batch if r.capture]

        # Snapshots go with the final row only: a provisional row has seen no answer yet.
        plans = [(r.id, *(snap.get(c) for c in PLAN_COLUMNS[1:])) for r in batch
                 if r.plan and r.incomplete_reason != IN_PROGRESS for snap in r.plan]

        def work(conn: sqlite3.Connection) -> None:
            if _ROLLUPS.needs_triggers(rows):  # only SQLite can work these rows out exactly
                with triggers_on(conn):
                    conn.executemany(UPSERT_SQL, rows)
            else:
                written = _ROLLUPS.written(rows, _ROLLUPS.stored(conn, rows))
                conn.executemany(UPSERT_SQL, rows)
                _ROLLUPS.apply(conn, written)
            if captured:
                conn.executemany(CAPTURE_SQL, captured)
            if plans:
                conn.executemany(PLAN_SQL, plans)

        self._write(work)

    def _commit(self, batch: list[CallRecord]) -> bool:
        delay = 0.05
        while True:
            try:
                self._upsert(batch)
                break
            except Exception as exc:  # BUSY, disk full, read-only, I/O: the batch is in the journal; retry
                self._note_error(exc)
                if self.fatal is not None:
                    self._stopping.wait(1.0)
                    if self._stopping.is_set():
                        return False
                    continue  # never written by this writer: the core is stopping (it exits 3)
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF in _BUSY
                if self._stopping.is_set() and (delay > 2 or busy):
                    log.error("stopping with a batch not committed; it stays in the journal for the next start",
                              rows=len(batch), error=self.stats.last_error)
                    return False
                # A lock already cost the busy timeout: try again soon, to land within moments of its release.
                time.sleep(0.05 if busy else delay)
                delay = min(delay * 2, 5.0)
        self.stats.committed += len(batch)
        self.stats.batches += 1
        self.stats.last_success_at = time.time()
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

    def _housekeeping(self, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self._last_gap_ingest > GAP_INGEST_EVERY:
            self._last_gap_ingest = now
            try:
                self.stats.gaps_ingested += gaps.ingest(self._spool_dir, self._write)
                self._write_dropped()
            except Exception as exc:  # retried next time; the files stay in place
                self._note_error(exc)
        if final or now - self._last_checkpoint > CHECKPOINT_EVERY:
            self._last_checkpoint = now
            try:
                self._guard()  # a checkpoint into a file cut under us would grow it back over the hole
                self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except Exception:  # busy readers: the next checkpoint will do it (or the file is broken: fatal)
                pass

    def _write_dropped(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, []
        if not dropped:
            return
        try:
            self._write_gap_records([{**d, "reason": "writer_queue_full", "calls": 1} for d in dropped])
        except Exception:
            with self._lock:
                self._dropped = dropped + self._dropped
            raise

    def _write_gap_records(self, lost: list[dict[str, Any]]) -> None:
        """Calls the core metered but could not keep: `record` gaps, each an exact count of calls."""
        rows = [gaps.row_values({"id": str(uuid.uuid4()), "kind": "record", **d}) for d in lost]
        self._write(lambda conn: conn.executemany(gaps.UPSERT_SQL, rows))

    def _note_error(self, exc: Exception) -> None:
        message = str(getattr(exc, "orig", None) or exc)
        self.stats.write_errors += 1
        self.stats.last_error = message
        self.stats.last_error_at = time.time()
        kind = message.split(":")[0]
        self.stats.errors_by_kind[kind] = self.stats.errors_by_kind.get(kind, 0) + 1
        log.warning("database write failed; retrying", error=message)
