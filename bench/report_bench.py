"""How fast is `report --month` on a database of a million calls?

Generates a synthetic database (default 1,000,000 calls over 60 days, in a temp dir): work sessions in a
handful of repositories and branches, several tools and keys, realistic model mixes, subscription and API
billing, errors, unpriced and incomplete calls, log-normal latencies. Then times `report --month` twice:
the in-process query (`report.build`) and the whole `halton-meter report --month` command as a subprocess
(interpreter start-up included), median of several runs each, and prints one markdown line.

    .venv/bin/python bench/report_bench.py [N_CALLS]

Target: report --month ≤ 250 ms (in-process) on 1,000,000 calls.
"""

from __future__ import annotations

import math
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_MS = 250.0
RUNS = 7

# (provider, host, path, client, billing, models with weights, $ per MTok in/out)
_TOOLS: list[tuple[str, str, str, str, str, list[tuple[str, float]], tuple[float, float]]] = [
    ("anthropic", "api.anthropic.com", "/v1/messages", "claude-code", "subscription",
     [("claude-sonnet-4-5-20250929", 0.7), ("claude-haiku-4-5-20251001", 0.2), ("claude-opus-4-1-20250805", 0.1)],
     (3.0, 15.0)),
    ("anthropic", "api.anthropic.com", "/v1/messages", "claude-code", "api",
     [("claude-sonnet-4-5-20250929", 0.8), ("claude-haiku-4-5-20251001", 0.2)], (3.0, 15.0)),
    ("openai", "api.openai.com", "/v1/responses", "codex", "subscription",
     [("gpt-5-codex", 0.9), ("gpt-5-mini", 0.1)], (1.25, 10.0)),
    ("openai", "api.openai.com", "/v1/chat/completions", "cursor", "api",
     [("gpt-5", 0.5), ("gpt-4.1", 0.3), ("gpt-4.1-mini", 0.2)], (1.25, 10.0)),
    ("gemini", "generativelanguage.googleapis.com", "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
     "gemini-cli", "api", [("gemini-2.5-pro", 0.6), ("gemini-2.5-flash", 0.4)], (1.25, 10.0)),
    ("anthropic", "api.anthropic.com", "/v1/messages", "anthropic-sdk-python", "api",
     [("claude-sonnet-4-5-20250929", 0.6), ("claude-haiku-4-5-20251001", 0.4)], (3.0, 15.0)),
    ("openai", "api.openai.com", "/v1/chat/completions", "openai-sdk-python", "api",
     [("gpt-4.1-mini", 0.7), ("gpt-4.1", 0.3)], (0.4, 1.6)),
    ("openrouter", "openrouter.ai", "/api/v1/chat/completions", "curl", "api",
     [("mystery/unpriced-model", 1.0)], (0.0, 0.0)),
]
_TOOL_WEIGHTS = [0.30, 0.15, 0.12, 0.12, 0.08, 0.12, 0.08, 0.03]
_PROJECTS = [("halton-meter", 0.30), ("acme-web", 0.22), ("data-pipeline", 0.15), ("infra", 0.10),
             ("mobile-app", 0.08), ("ml-experiments", 0.07), ("docs-site", 0.05), ("unattributed", 0.03)]
_KEYS = {"anthropic": ["3f9a1c2e", "b07d44e1"], "openai": ["5c1e9a70", "e2f18b33"], "gemini": ["9d0c7a15"],
         "openrouter": ["71aa0c4d"]}
_SOURCES = ["git", "git", "git", "project_file", "env", "cwd"]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def _rows(n_calls: int, days: int, seed: int, end: float) -> Any:
    """Calls grouped in work sessions (one project, branch, tool and key each), oldest first."""
    rng = random.Random(seed)
    start = end - days * 86400
    per_session = 150
    sessions = max(1, n_calls // per_session)
    branches = {p: ["main"] + [f"feature/{p[:4]}-{i}" for i in range(rng.randint(2, 6))] for p, _ in _PROJECTS}
    made = 0
    for s in range(sessions):
        count = n_calls - made if s == sessions - 1 else per_session
        made += count
        project = rng.choices([p for p, _ in _PROJECTS], [w for _, w in _PROJECTS])[0]
        branch = rng.choice(branches[project]) if project != "unattributed" else None
        tool = rng.choices(_TOOLS, _TOOL_WEIGHTS)[0]
        provider, host, path, client, billing, models, (price_in, price_out) = tool
        key = rng.choice(_KEYS[provider])
        source = "none" if project == "unattributed" else rng.choice(_SOURCES)
        t = start + (s + rng.random()) * (end - start) / sessions
        names, weights = [m for m, _ in models], [w for _, w in models]
        for i in range(count):
            t += rng.expovariate(1 / 8.0)
            model = rng.choices(names, weights)[0]
            streamed = rng.random() < 0.8
            error = rng.random() < 0.02
            incomplete = not error and rng.random() < 0.005
            unpriced = price_in == 0.0
            estimated = rng.random() < 0.003
            inp = 0 if error else int(rng.lognormvariate(7.0, 1.2))
            out = 0 if error else int(rng.lognormvariate(5.5, 1.0))
            cache_read = 0 if error else int(rng.lognormvariate(9.5, 1.0)) if rng.random() < 0.7 else 0
            cache_write = 0 if error else int(rng.lognormvariate(7.5, 1.0)) if rng.random() < 0.3 else 0
            cost = None if unpriced else round((inp * price_in + out * price_out + cache_read * price_in * 0.1
                                                + cache_write * price_in * 1.25) * 1000)
            savings = None if unpriced else round(cache_read * price_in * 0.9 * 1000)
            latency = rng.lognormvariate(math.log(2500.0), 0.8)
            ttft = rng.lognormvariate(math.log(700.0), 0.6) if streamed and not error else None
            started = _iso(t)
            yield (
                f"{seed:08x}-0000-4000-8000-{made - count + i:012x}", started, _iso(t + latency / 1000),
                started, provider, "messages", host, "POST", path, model, model, int(streamed),
                429 if error else 200, int(not (error or incomplete)), int(not error), int(not error),
                int(estimated), inp, out, cache_read, cache_write, 0, None, "http_429" if error else None,
                "upstream_truncated" if incomplete else None, cost, int(not unpriced and not error),
                None if unpriced else "genai-prices", billing, provider, project, source, client, client,
                latency, ttft, None, "{}", None if project == "unattributed" else project, branch, key, None,
                savings,
            )


_COLUMNS = ("id, started_at, ended_at, recorded_at, provider, endpoint_kind, host, method, path, model, "
            "model_requested, streamed, status, complete, billable, usage_reported, estimated, input_tokens, "
            "output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens, "
            "error_type, incomplete_reason, cost_nanos, priced, price_source, billing, price_provider_id, project, "
            "project_source, client, client_process, latency_ms, ttft_ms, provider_request_id, extra, repo, "
            "branch, key_fingerprint, user_agent, cache_savings_nanos")


def generate(db: Path, n_calls: int, days: int = 60, seed: int = 7, end: float | None = None) -> dict[str, float]:
    """Write `n_calls` synthetic calls ending at `end` (default now) into a new database at `db`: rows are
    inserted at schema 6, then migration 7 builds the rollups from them (its backfill). Returns the seconds
    each step took."""
    from halton_meter.store.schema import MIGRATIONS, migrate

    conn = sqlite3.connect(db, isolation_level=None)
    for version in range(1, 7):
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 6")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -200000")
    marks = ", ".join("?" * len(_COLUMNS.split(", ")))
    began = time.perf_counter()
    batch: list[tuple[Any, ...]] = []
    for row in _rows(n_calls, days, seed, end if end is not None else time.time()):
        batch.append(row)
        if len(batch) >= 50_000:
            _insert(conn, marks, batch)
            batch = []
    if batch:
        _insert(conn, marks, batch)
    inserted = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    for statement in MIGRATIONS[7]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 7")
    conn.execute("COMMIT")
    backfilled = time.perf_counter()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    conn.close()
    migrate(db)  # a no-op at the latest version; proves the file is one the meter accepts
    return {"insert_s": inserted - began, "backfill_s": backfilled - inserted}


def insert_rates(rows: int = 20_000) -> dict[str, float]:
    """Calls per second the way the writer writes them (a provisional row, then the final row upserted over
    it, in batches of 50), at schema 6 (no triggers) and at the latest schema (rollup triggers)."""
    from halton_meter.store.schema import LATEST_VERSION, MIGRATIONS

    data = list(_rows(rows, 1, 11, time.time()))
    columns = _COLUMNS.split(", ")
    marks = ", ".join("?" * len(columns))
    reason = columns.index("incomplete_reason")
    provisional = [(*r[:reason], "in_progress", *r[reason + 1:]) for r in data]
    upsert = (f"INSERT INTO calls ({_COLUMNS}) VALUES ({marks}) ON CONFLICT (id) DO UPDATE SET "
              + ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id")
              + " WHERE calls.incomplete_reason IS 'in_progress'")
    rates: dict[str, float] = {}
    for version in (6, LATEST_VERSION):
        for _ in range(3):  # the best of three: other processes on a shared machine only ever slow it down
            with tempfile.TemporaryDirectory(prefix="halton-bench-") as tmp:
                conn = sqlite3.connect(Path(tmp) / "db.sqlite", isolation_level=None)
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                for v in range(1, version + 1):
                    for statement in MIGRATIONS[v]:
                        conn.execute(statement)
                began = time.perf_counter()
                for i in range(0, rows, 50):
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(upsert, provisional[i:i + 50])
                    conn.executemany(upsert, data[i:i + 50])
                    conn.execute("COMMIT")
                rate = rows / (time.perf_counter() - began)
                rates[f"v{version}"] = max(rates.get(f"v{version}", 0.0), rate)
                conn.close()
    return rates


def _insert(conn: sqlite3.Connection, marks: str, batch: list[tuple[Any, ...]]) -> None:
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO calls ({_COLUMNS}) VALUES ({marks})", batch)
    conn.execute("COMMIT")


def _median_ms(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def run(n_calls: int = 1_000_000) -> dict[str, Any]:
    """Generate the database, time `report --month` in-process and as a CLI subprocess; return the numbers."""
    from halton_meter.report import build
    from halton_meter.timewindow import resolve_window

    rates = insert_rates(min(20_000, max(1_000, n_calls // 50)))
    with tempfile.TemporaryDirectory(prefix="halton-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir(mode=0o700)
        db = home / "db.sqlite"
        steps = generate(db, n_calls)
        window = resolve_window(month=True)
        build(db, window)  # warm the page cache, as any second run of the command would find it
        in_process = _median_ms(lambda: build(db, window), RUNS)
        env = {**os.environ, "HALTON_METER_HOME": str(home), "NO_COLOR": "1"}
        command = [sys.executable, "-m", "halton_meter", "report", "--month"]
        subprocess.run(command, env=env, check=True, capture_output=True)
        cli = _median_ms(lambda: subprocess.run(command, env=env, check=True, capture_output=True), max(3, RUNS // 2))
        startup = _median_ms(lambda: subprocess.run([sys.executable, "-m", "halton_meter", "--version"], env=env,
                                                    check=True, capture_output=True), 3)
        size_mb = db.stat().st_size / 1e6
        conn = sqlite3.connect(db)
        rollup_rows = conn.execute("SELECT (SELECT count(*) FROM rollup), (SELECT count(*) FROM rollup_hist), "
                                   "(SELECT count(*) FROM rollup_hist_day)").fetchone()
        conn.close()
    return {"calls": n_calls, "insert_s": round(steps["insert_s"], 1), "backfill_s": round(steps["backfill_s"], 1),
            "db_mb": round(size_mb), "rollup_rows": rollup_rows[0], "rollup_hist_rows": rollup_rows[1],
            "rollup_hist_day_rows": rollup_rows[2], "report_month_ms": round(in_process, 1),
            "cli_report_month_ms": round(cli), "cli_startup_ms": round(startup), "target_ms": TARGET_MS,
            "ok": in_process <= TARGET_MS, "insert_per_s_without_triggers": round(rates["v6"]),
            "insert_per_s_with_triggers": round(rates[max(rates)])}


def markdown(result: dict[str, Any]) -> str:
    verdict = "✓" if result["ok"] else "✗ over target"
    return (f"| report --month | {result['calls']:,} calls ({result['db_mb']} MB) | in-process "
            f"{result['report_month_ms']} ms (target ≤ {result['target_ms']:.0f} ms {verdict}) | CLI "
            f"{result['cli_report_month_ms']} ms wall (interpreter start-up alone {result['cli_startup_ms']} ms) | "
            f"writer-style inserts {result['insert_per_s_with_triggers']:,} calls/s with rollup triggers, "
            f"{result['insert_per_s_without_triggers']:,} without | backfill {result['backfill_s']} s |")


if __name__ == "__main__":
    print(markdown(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)))
