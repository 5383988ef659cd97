"""How fast does the dashboard's data come back from a million calls?

Builds the synthetic database of bench/report_bench.py (default 1,000,000 calls over 60 days, ending now),
then times the API's endpoint functions directly (server-side time: no HTTP, no JSON encoding), median of
several runs each after one warm-up:

* `/v1/overview` (today, week, month, last month, each with the previous period) in Asia/Kolkata, as served
  with the closed days cached (store/daycache.py) and cold;
* `/v1/report?since=30d&by=day,project` and `/v1/report?window=today&by=hour`;
* `/v1/calls` first page (50 calls) with no filter and with each single filter.

    .venv/bin/python -m bench.dashboard_bench --calls 1000000

Targets: ≤ 100 ms per overview or chart request, ≤ 50 ms per explorer first page.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHART_TARGET_MS = 100.0
PAGE_TARGET_MS = 50.0
RUNS = 7
ZONE = "Asia/Kolkata"

CHARTS: list[tuple[str, str, dict[str, list[str]]]] = [
    ("overview", "/v1/overview", {"tz": [ZONE]}),
    ("chart: 30 d by day,project", "/v1/report",
     {"since": ["30d"], "by": ["day,project"], "latency": ["0"], "tz": [ZONE]}),
    ("chart: today by hour", "/v1/report", {"window": ["today"], "by": ["hour"], "latency": ["0"], "tz": [ZONE]}),
]
TABLES: list[tuple[str, str, dict[str, list[str]]]] = [
    # The top table shows p95 latency, so it reads the histograms; no target is set for it.
    ("top table: 30 d by project, with p95", "/v1/report", {"since": ["30d"], "by": ["project"], "tz": [ZONE]}),
]
PAGES: list[tuple[str, dict[str, list[str]]]] = [
    ("no filter", {}),
    ("project", {"project": ["docs-site"]}),
    ("model", {"model": ["gpt-4.1"]}),
    ("model glob", {"model": ["claude-haiku-*"]}),
    ("provider", {"provider": ["gemini"]}),
    ("client", {"client": ["curl"]}),
    ("branch", {"branch": ["main"]}),
    ("key", {"key": ["71aa"]}),
    ("status error", {"status": ["error"]}),
    ("status incomplete", {"status": ["incomplete"]}),
    ("status estimated", {"status": ["estimated"]}),
    ("status unpriced", {"status": ["unpriced"]}),
    ("status subscription", {"status": ["subscription"]}),
    ("since 7d", {"since": ["7d"]}),
    ("search (request id)", {"q": ["no-such-request"]}),
]


def _median_ms(fn: Callable[[], Any], runs: int) -> float:
    from bench.report_bench import _median_ms as timed

    fn()  # warm: the page cache, the zone data, SQLite's schema
    return timed(fn, runs)


def run(n_calls: int = 1_000_000, runs: int = RUNS, home: Path | None = None) -> dict[str, Any]:
    """Build the database (or use the one in `home`, built earlier by `generate`) and time every request."""
    from bench import report_bench
    from halton_meter.paths import Paths
    from halton_meter.serve import endpoints

    with tempfile.TemporaryDirectory(prefix="halton-bench-") as tmp:
        paths = Paths(home) if home is not None else Paths(Path(tmp) / "home")
        began = time.perf_counter()
        if home is None:
            paths.home.mkdir(mode=0o700)
            report_bench.generate(paths.db, n_calls)  # then migrate(): the explorer's indexes (migration 11)
        else:
            import sqlite3

            conn = sqlite3.connect(paths.db)
            n_calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
            conn.close()
        built_s = time.perf_counter() - began
        charts, cold = {}, {}
        for name, path, query in CHARTS:
            def uncached(p: str = path, q: dict[str, list[str]] = query) -> None:
                endpoints.DAY_CACHE.clear()
                endpoints.ROUTES[p](paths, q)
            cold[name] = round(_median_ms(uncached, runs), 1)
            charts[name] = round(_median_ms(lambda p=path, q=query: endpoints.ROUTES[p](paths, q), runs), 1)
        tables = {name: round(_median_ms(lambda p=path, q=query: endpoints.ROUTES[p](paths, q), runs), 1)
                  for name, path, query in TABLES}
        pages = {}
        for name, query in PAGES:
            full = {**query, "limit": ["50"]}
            pages[name] = round(_median_ms(lambda q=full: endpoints.ROUTES["/v1/calls"](paths, q), runs), 1)
        size_mb = paths.db.stat().st_size / 1e6
        paint = _paint(paths.home)
    return {"paint": paint, "calls": n_calls, "runs": runs, "db_mb": round(size_mb), "build_s": round(built_s, 1), "charts_ms": charts,
            "charts_cold_ms": cold,
            "tables_ms": tables, "pages_ms": pages, "chart_target_ms": CHART_TARGET_MS, "page_target_ms": PAGE_TARGET_MS,
            "ok": all(v <= CHART_TARGET_MS for v in charts.values())
            and all(v <= PAGE_TARGET_MS for v in pages.values()) and paint.get("ok", True)}


def _paint(home: Path) -> dict[str, Any]:
    """The page in a real browser over the same database (bench/dashboard_paint.py), when it can run here."""
    import importlib.util

    from bench import dashboard_paint

    if importlib.util.find_spec("playwright") is None or not Path(dashboard_paint.CHROMIUM).exists():
        return {"skipped": "playwright or /usr/bin/chromium is not installed"}
    try:
        return dashboard_paint.measure(home)
    except Exception as exc:  # a browser that cannot start must not cost the other figures
        return {"error": f"{type(exc).__name__}: {exc}"}


def markdown(result: dict[str, Any]) -> str:
    def mark(ms: float, target: float) -> str:
        return "✓" if ms <= target else "✗ over target"

    lines = [f"Dashboard endpoints over {result['calls']:,} synthetic calls ({result['db_mb']} MB), server-side "
             f"time, median of {result.get('runs', RUNS)} runs. Charts: as served once the closed days are cached "
             "(the API caches them in the background when it starts), and cold (`cold`: the cache emptied before "
             "each run, as after a reprice or retag):", "", "| request | ms | target |", "|---|---:|---|"]
    for name, ms in result["charts_ms"].items():
        lines.append(f"| {name} | {ms} | ≤ {result['chart_target_ms']:.0f} ms {mark(ms, result['chart_target_ms'])} |")
    for name, ms in result.get("charts_cold_ms", {}).items():
        lines.append(f"| {name}, cold | {ms} | none set |")
    for name, ms in result.get("tables_ms", {}).items():
        lines.append(f"| {name} | {ms} | none set |")
    for name, ms in result["pages_ms"].items():
        lines.append(f"| /v1/calls first page, {name} | {ms} | ≤ {result['page_target_ms']:.0f} ms "
                     f"{mark(ms, result['page_target_ms'])} |")
    paint = result.get("paint") or {}
    if "meaningful_ms" in paint:
        from bench import dashboard_paint

        lines += ["", dashboard_paint.markdown(paint)]
    elif paint:
        lines += ["", f"Dashboard in a browser: not measured ({paint.get('skipped') or paint.get('error')})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="synthetic calls (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"timed runs per request (default {RUNS})")
    parser.add_argument("--home", type=Path, help="time against HOME/db.sqlite, built before by "
                                                  "report_bench.generate, instead of building one")
    args = parser.parse_args(argv)
    print(markdown(run(args.calls, args.runs, args.home)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
