"""How fast does a first backfill reach the team's PostgreSQL?

Builds (or reuses, `--db`) the synthetic database of bench/report_bench.py, starts a throwaway PostgreSQL
from the machine's own binaries (tests/pgkit.py), and times the sync engine sending every row from the
start of history to it: rows per second and the total, against the target of 1,000,000 rows in 2 minutes.

    .venv-test/bin/python -m bench.sync_bench --calls 1000000
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_SECONDS = 120.0


def run(n_calls: int, db: Path | None = None) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import os

    from pgkit import PASSWORD, running_postgres

    from bench import report_bench
    from halton_meter.store.schema import migrate
    from halton_meter.sync.engine import SyncEngine
    from halton_meter.sync_config import parse_sync
    from halton_meter_plugins.sync.postgres import open_sink

    with tempfile.TemporaryDirectory(prefix="halton-sync-bench-") as tmp:
        local = Path(tmp) / "db.sqlite"
        if db is not None:
            source = sqlite3.connect(db)
            target = sqlite3.connect(local)
            source.backup(target)
            source.close()
            target.close()
        else:
            report_bench.generate(local, n_calls)
        migrate(local)
        rows = sqlite3.connect(local).execute("SELECT count(*) FROM calls").fetchone()[0]
        with running_postgres() as pg:
            os.environ["SYNC_BENCH_PASSWORD"] = PASSWORD
            [settings] = parse_sync([{"target": "postgres", "url": pg.url, "password_env": "SYNC_BENCH_PASSWORD",
                                      "user": "bench"}])
            engine = SyncEngine(local, [settings], lambda s: open_sink(s.options), machine_id="b" * 32)
            engine.switch_on()
            began = time.perf_counter()
            while True:
                progress = engine.run_once()
                if progress.errors:
                    raise RuntimeError(progress.errors)
                if progress.sent == 0:
                    break
            seconds = time.perf_counter() - began
            engine.stop()
            arrived = int(pg.sql("SELECT count(*) FROM halton_meter.calls", database="team"))
    shutil.rmtree(Path(tmp), ignore_errors=True)
    return {"rows": rows, "arrived": arrived, "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds),
            "target_s": TARGET_SECONDS, "ok": arrived == rows and seconds * 1_000_000 / max(rows, 1) <= TARGET_SECONDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="copy this database instead of building one")
    args = parser.parse_args(argv)
    result = run(args.calls, args.db)
    print(f"Backfill of {result['rows']:,} rows to PostgreSQL: {result['seconds']} s ({result['rows_per_s']:,} rows/s), "
          f"{result['arrived']:,} arrived; target ≤ {TARGET_SECONDS:.0f} s per million: "
          f"{'✓' if result['ok'] else '✗'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
