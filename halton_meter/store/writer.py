"""The single writer: a thread fed by a bounded queue, pricing records and committing them in batches.

The proxy's event loop only ever calls `submit`, which never blocks. Rows are inserted with
`INSERT OR IGNORE` keyed by our own UUID, so a retried batch never duplicates a row. A batch leaves the
writer's hands only after its transaction commits; on SQLITE_BUSY or I/O errors it is retried with
backoff. A record that cannot even be queued is counted (`dropped`), never silently lost.
"""

from __future__ import annotations

import datetime
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from halton_meter.pricing import Pricer
from halton_meter.store.schema import calls, make_engine
from halton_meter.types import CallRecord

log = structlog.get_logger("halton_meter.writer")

BATCH_MAX = 500
_STOP = object()


def utc_now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_for(record: CallRecord, recorded_at: str) -> dict[str, object]:
    row = {c.name: getattr(record, c.name) for c in calls.columns if c.name not in ("recorded_at",)}
    row["recorded_at"] = recorded_at
    return row


@dataclass
class WriterStats:
    submitted: int = 0
    committed: int = 0
    dropped: int = 0
    """Records that could not be queued (queue full): counted gaps."""
    write_errors: int = 0
    hook_errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    batches: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)


class Writer:
    def __init__(
        self,
        db_path: Path,
        on_committed: Callable[[CallRecord], None] | None = None,
        pricer: Pricer | None = None,
        max_queue: int = 10_000,
    ) -> None:
        self._engine = make_engine(db_path, immediate=True)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._on_committed = on_committed
        self._pricer = pricer or Pricer()
        self._thread = threading.Thread(target=self._run, name="halton-meter-writer", daemon=True)
        self._stopping = threading.Event()
        self.stats = WriterStats()

    # ---- producer side (event loop) --------------------------------------------------------------

    def start(self) -> Writer:
        self._thread.start()
        return self

    def submit(self, record: CallRecord) -> bool:
        """Queue a record without blocking. False when the queue is full (the record is counted as lost)."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.stats.dropped += 1
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
        """Flush what is queued (up to `timeout`) and stop. True when nothing was left behind."""
        self._stopping.set()
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        left = self._queue.qsize()
        if left:
            log.error("writer stopped with records still queued", left=left)
        self._engine.dispose()
        return left == 0 and not self._thread.is_alive()

    # ---- consumer side (writer thread) -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                self._queue.task_done()
                return
            batch: list[CallRecord] = [item]  # type: ignore[list-item]
            stop_after = False
            while len(batch) < BATCH_MAX:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._queue.task_done()
                    stop_after = True
                    break
                batch.append(more)  # type: ignore[arg-type]
            self._price(batch)
            self._commit(batch)
            for _ in batch:
                self._queue.task_done()
            if stop_after:
                return

    def _price(self, batch: list[CallRecord]) -> None:
        for record in batch:
            if record.cost_nanos is not None or record.priced:
                continue
            try:
                price = self._pricer.price(record)
            except Exception as exc:  # pricing must never cost the row
                log.error("pricing failed", record_id=record.id, error=str(exc))
                record.priced, record.price_source = False, f"pricing error: {type(exc).__name__}"
                continue
            record.cost_nanos, record.priced, record.price_source = price.cost_nanos, price.priced, price.source

    def _commit(self, batch: list[CallRecord]) -> None:
        delay = 0.05
        while True:
            recorded_at = utc_now_iso()
            try:
                with self._engine.begin() as conn:
                    conn.execute(calls.insert().prefix_with("OR IGNORE"), [row_for(r, recorded_at) for r in batch])
                break
            except Exception as exc:  # BUSY, I/O, disk full, anything: keep the batch and retry
                self._note_error(exc)
                if self._stopping.is_set() and delay > 2:
                    log.error("giving up on a batch at shutdown", rows=len(batch), error=self.stats.last_error)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.stats.committed += len(batch)
        self.stats.batches += 1
        if self._on_committed is not None:
            for record in batch:
                try:
                    self._on_committed(record)
                except Exception as exc:
                    self.stats.hook_errors += 1
                    log.error("usage_recorded hook failed", error=f"{type(exc).__name__}: {exc}")

    def _note_error(self, exc: Exception) -> None:
        message = str(getattr(exc, "orig", None) or exc)
        self.stats.write_errors += 1
        self.stats.last_error = message
        self.stats.last_error_at = time.time()
        kind = message.split(":")[0]
        self.stats.errors_by_kind[kind] = self.stats.errors_by_kind.get(kind, 0) + 1
        log.warning("database write failed; retrying", error=message)
