"""CPU per row of the meter's SQLite writer, by batch size (isolates the storage part of metering CPU).

    .venv/bin/python -m bench.writer [--rows 2000]

Each call through the meter is written twice (a provisional row when the request goes upstream, the final
row when it ends). At low concurrency every record is its own batch, so the cost per commit, not per row,
decides the metering CPU. This submits records the way the core does, one at a time (waiting for each
commit: batch size 1) and in bursts of 4 and 32, and prints the writer thread's own CPU per row (from
/proc/self/task/<tid>/schedstat), pricing included — and what `submit` itself costs the caller (the core's
event loop) per record: journaling the record (one pwrite into a preallocated segment) and queueing it.
Then the sustained rate: final rows submitted as fast as the caller can, written in whatever batches the
writer takes (the issue-19 target is 20,000 rows/s with rollups, on one thread).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _record(final: bool, rid: str):  # type: ignore[no-untyped-def]
    from halton_meter.types import CallRecord

    common = dict(id=rid, started_at="2026-11-22T10:00:00.000000Z", provider="anthropic", endpoint_kind="messages",
                  host="api.anthropic.com", method="POST", path="/v1/messages", model_requested="claude-sonnet-4-5",
                  billable=True, price_provider_id="anthropic")
    if not final:  # as core.records.provisional_record makes it
        return CallRecord(**common, model="claude-sonnet-4-5", incomplete_reason="in_progress")
    return CallRecord(**common, model="claude-sonnet-4-5-20250929", complete=True, usage_reported=True,
                      input_tokens=120, output_tokens=30, project="bench", project_source="env")


def measure(rows: int, burst: int) -> dict[str, float]:
    from halton_meter.store import writer as writer_module

    # Every row is written here, the provisional ones too (as for a call longer than the hold): this bench
    # measures the cost of a written row; how many calls are written once is the whole benchmark's business.
    hold, writer_module.PROVISIONAL_HOLD_SECONDS = writer_module.PROVISIONAL_HOLD_SECONDS, 0.0
    try:
        return _measure(rows, burst)
    finally:
        writer_module.PROVISIONAL_HOLD_SECONDS = hold


@contextmanager
def _fresh_writer() -> Iterator[Any]:
    """A started Writer on a new database in a temporary directory, closed afterwards."""
    from halton_meter.store.schema import migrate
    from halton_meter.store.writer import Writer

    with tempfile.TemporaryDirectory(prefix="halton-bench-writer-") as tmp:
        db = Path(tmp) / "db.sqlite"
        migrate(db)
        writer = Writer(db, spool_dir=Path(tmp) / "spool").start()
        try:
            yield writer
        finally:
            writer.close(timeout=10)


def _submit(writer: Any, records: list[Any]) -> float:
    """Submit records one at a time, as the core does; the seconds `submit` took in all."""
    started = time.perf_counter()
    for record in records:
        writer.submit(record)
    return time.perf_counter() - started


def _measure(rows: int, burst: int) -> dict[str, float]:
    with _fresh_writer() as writer:
        for _ in range(20):  # warm-up: imports, pricing tables, statement cache
            rid = str(uuid.uuid4())
            _submit(writer, [_record(False, rid), _record(True, rid)])
        _wait(writer, 40)
        base = writer.stats.committed
        tid = writer._thread.native_id
        cpu0, t0 = _thread_cpu(tid), time.perf_counter()
        sent = 0
        in_submit = 0.0
        while sent < rows:
            ids = [str(uuid.uuid4()) for _ in range(burst // 2 or 1)]
            in_submit += _submit(writer, [_record(False, rid) for rid in ids])
            _wait(writer, base + sent + len(ids))
            in_submit += _submit(writer, [_record(True, rid) for rid in ids])
            sent += 2 * len(ids)
            _wait(writer, base + sent)
        cpu, wall = _thread_cpu(tid) - cpu0, time.perf_counter() - t0
        batches = writer.stats.batches
    return {"burst": burst, "rows": sent, "cpu_ms_per_row": cpu * 1000 / sent, "wall_ms_per_row": wall * 1000 / sent,
            "batches": batches, "submit_us_per_row": in_submit * 1e6 / sent}


def sustained(rows: int) -> dict[str, float]:
    """Rows per second when calls end faster than the writer can write them: final rows only (most calls
    are written once, their provisional row held back and replaced unwritten), submitted while the writer's
    queue is less than half full, so the writer takes them in batches as large as its queue offers."""
    with _fresh_writer() as writer:
        _submit(writer, [_record(True, str(uuid.uuid4())) for _ in range(20)])
        _wait(writer, 20)
        records = [_record(True, str(uuid.uuid4())) for _ in range(rows)]
        tid = writer._thread.native_id
        cpu0, t0 = _thread_cpu(tid), time.perf_counter()
        room = writer._max_queue // 2  # a full queue drops records (counted as gaps): keep it half full at most
        for record in records:
            while writer.pending >= room:
                time.sleep(0.0005)
            writer.submit(record)
        _wait(writer, 20 + rows, timeout=120.0)
        assert writer.stats.dropped == 0
        cpu, wall = _thread_cpu(tid) - cpu0, time.perf_counter() - t0
        batches = writer.stats.batches
    return {"rows": rows, "rows_per_s": rows / wall, "cpu_ms_per_row": cpu * 1000 / rows, "batches": batches}


def _thread_cpu(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/schedstat", "rb") as f:
        return int(f.read().split()[0]) / 1e9


def _wait(writer, count: int, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while writer.stats.committed < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"writer stuck at {writer.stats.committed} of {count}")
        time.sleep(0.0005)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.writer", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args(argv)
    print("| rows per commit | rows | writer CPU ms/row | wall ms/row | submit (journal + queue) µs/row |")
    print("|---:|---:|---:|---:|---:|")
    for burst in (1, 8, 64):
        r = measure(args.rows, burst)
        print(f"| {max(1, burst // 2)} | {r['rows']} | {r['cpu_ms_per_row']:.3f} | {r['wall_ms_per_row']:.3f} "
              f"| {r['submit_us_per_row']:.1f} |")
    r = sustained(args.rows * 10)
    print(f"\nSustained (final rows submitted without waiting, rollups included): {r['rows']} rows, "
          f"{r['rows_per_s']:,.0f} rows/s, writer CPU {r['cpu_ms_per_row']:.3f} ms/row, {r['batches']} batches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
