"""How fast is a `/metrics` scrape on a database of a million calls?

A scrape sums all history per (provider, model, project, client) from the rollups and builds the latency
and TTFT histograms (serve/metrics.py). This times `metrics.scrape` in process: the first scrape of a
process (history before the closed cutoff read once and kept) and the following ones (only the last day or
so read again, then the text formatted), median of several runs, and the cost without the kept part; prints
one markdown line.

    .venv/bin/python bench/metrics_bench.py [N_CALLS] [--db PATH]

`--db PATH` copies an existing database (one `bench/report_bench.py` generated) to a temporary home and
migrates the copy, instead of generating a new one (about 80 s for 1,000,000 calls).

Target: a warm scrape ≤ 300 ms on 1,000,000 calls.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root on the path, for `bench.report_bench`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report_bench import generate  # noqa: E402

TARGET_MS = 300.0
RUNS = 7


def _time_ms(fn: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    result = fn()
    return (time.perf_counter() - began) * 1000, result


def measure(home: Path) -> dict[str, Any]:
    from halton_meter.paths import Paths
    from halton_meter.serve import metrics

    paths = Paths(home)
    metrics.CLOSED.clear()
    cold, body = _time_ms(lambda: metrics.scrape(paths))
    warm = statistics.median(_time_ms(lambda: metrics.scrape(paths))[0] for _ in range(RUNS))
    metrics.CLOSED.clear()
    uncached = statistics.median(
        _time_ms(lambda: (metrics.CLOSED.clear(), metrics.scrape(paths)))[0] for _ in range(max(3, RUNS // 2)))
    text = body.decode()
    series = sum(1 for line in text.splitlines() if line.startswith("halton_meter_calls_total{"))
    return {"cold_ms": round(cold, 1), "warm_ms": round(warm, 1), "uncached_ms": round(uncached, 1),
            "series": series, "bytes": len(body), "samples": sum(1 for ln in text.splitlines() if ln and ln[0] != "#")}


def run(n_calls: int = 1_000_000, db: Path | None = None) -> dict[str, Any]:
    from halton_meter.store.schema import migrate

    with tempfile.TemporaryDirectory(prefix="halton-metrics-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir(mode=0o700)
        target = home / "db.sqlite"
        if db is not None:  # SQLite's backup: the write-ahead log's commits come along
            source, copy = sqlite3.connect(f"file:{db}?mode=ro", uri=True), sqlite3.connect(target)
            source.backup(copy)
            source.close()
            copy.close()
            generated = "copied"
        else:
            generate(target, n_calls)
            generated = "generated"
        migrate(target)
        conn = sqlite3.connect(target)
        calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        conn.close()
        result = measure(home)
    return {"calls": calls, "db": generated, **result, "target_ms": TARGET_MS, "ok": result["warm_ms"] <= TARGET_MS}


def markdown(result: dict[str, Any]) -> str:
    verdict = "✓" if result["ok"] else "✗ over target"
    return (f"| /metrics scrape | {result['calls']:,} calls | warm {result['warm_ms']} ms (target ≤ "
            f"{result['target_ms']:.0f} ms {verdict}) | first of a process {result['cold_ms']} ms, closed history "
            f"not kept {result['uncached_ms']} ms | {result['series']} label sets, {result['samples']:,} samples, "
            f"{result['bytes'] / 1024:.0f} KiB |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calls", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None, help="copy this database instead of generating one")
    args = parser.parse_args(argv)
    result = run(args.calls, args.db)
    print(result)
    print(markdown(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
