"""How fast is `halton-meter statusline` as Claude Code runs it: a cold process, on a million calls?

Builds the synthetic database of bench/report_bench.py (default 1,000,000 calls over 60 days, ending now) or
reuses HOME/db.sqlite (`--home`, migrated to the latest schema first), then adds a Claude Code session: its
calls (copies of recent calls with `session_id` set, spread over the last two hours), plan snapshots for its
account on each (5h, 7d, 7d_opus, 7d_sonnet, unified, overage), and API-key snapshots for other accounts.
Then times cold runs of `python -m halton_meter statusline` with Claude Code's JSON on standard input (wall
time of the subprocess, after one warm-up run), against `python -c pass` on the same interpreter, runs
interleaved so both see the same machine.

Bytecode: the children may write and read it under HOME/pycache (`PYTHONPYCACHEPREFIX`), as an installed
package has it; with `PYTHONDONTWRITEBYTECODE` every run would compile the modules again.

    .venv/bin/python -m bench.statusline_bench [--calls N] [--runs 21] [--home DIR]

Target: ≤ 60 ms p50 on 1,000,000 calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_MS = 60.0
RUNS = 21
SESSION = "5e55a1a0-bench-4000-8000-000000000001"
ACCOUNT = "3f9a1c2e"  # one of report_bench's Anthropic keys
PREFIX = "statusline-bench-"
PLAN_WINDOWS = (("5h", 300, 0.62, 3 * 3600), ("7d", 10080, 0.31, 4 * 86400), ("7d_opus", 10080, 0.78, 4 * 86400),
                ("7d_sonnet", 10080, 0.2, 4 * 86400))


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}Z"


def add_session(db: Path, session_calls: int, api_snapshots: int, now: float) -> None:
    """The session's calls and snapshots (any left by an earlier run replaced): copies of the latest calls of
    project halton-meter, with new ids, `session_id`, the session's key and times over the last two hours."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("DELETE FROM plan_snapshots WHERE call_id LIKE ?", (PREFIX + "%",))
    conn.execute("DELETE FROM calls WHERE id LIKE ?", (PREFIX + "%",))
    keep = [r[1] for r in conn.execute("PRAGMA table_info(calls)")
            if r[1] not in ("id", "started_at", "session_id", "key_fingerprint")]
    ids = [f"{PREFIX}{i:06d}" for i in range(session_calls)]
    for i, call_id in enumerate(ids):
        started = now - 7200 + 7200 * i / max(1, session_calls)
        conn.execute(f"INSERT INTO calls (id, started_at, session_id, key_fingerprint, {', '.join(keep)}) "
                     f"SELECT ?, ?, ?, ?, {', '.join(keep)} FROM calls WHERE project = 'halton-meter' "
                     "AND id NOT LIKE ? ORDER BY started_at DESC LIMIT 1 OFFSET ?",
                     (call_id, _iso(started), SESSION, ACCOUNT, PREFIX + "%", i))
        seen = _iso(started + 5)
        for window, minutes, used, reset in PLAN_WINDOWS:
            _snapshot(conn, call_id, seen, ACCOUNT, "plan", window, minutes, used * (i + 1) / session_calls,
                      _iso(now + reset), "allowed")
        _snapshot(conn, call_id, seen, ACCOUNT, "plan", "unified", None, None, _iso(now + 3 * 3600), "allowed")
        _snapshot(conn, call_id, seen, ACCOUNT, "plan", "overage", None, None, None, "rejected")
    for i in range(api_snapshots):  # API keys' rate limits: other accounts, never shown
        account, window = ("b07d44e1", "5c1e9a70", "e2f18b33")[i % 3], ("requests", "tokens")[i % 2]
        _snapshot(conn, f"{PREFIX}api-{i:07d}", _iso(now - 86400 * 30 * (1 - i / api_snapshots)), account, "api",
                  window, None, 0.4, _iso(now + 60), None)
    conn.execute("COMMIT")
    conn.execute("ANALYZE plan_snapshots")
    conn.close()


def _snapshot(conn: sqlite3.Connection, call_id: str, seen: str, account: str, kind: str, window: str,
              minutes: int | None, used: float | None, resets: str | None, status: str | None) -> None:
    conn.execute("INSERT INTO plan_snapshots (call_id, seen_at, provider, account, kind, window, window_minutes, "
                 "utilization, resets_at, status) VALUES (?, ?, 'anthropic', ?, ?, ?, ?, ?, ?, ?)",
                 (call_id, seen, account, kind, window, minutes, used, resets, status))


def stdin_json(cwd: str = "/home/dev/src/halton-meter") -> bytes:
    """What Claude Code sends a status line command."""
    return json.dumps({
        "hook_event_name": "Status", "session_id": SESSION, "transcript_path": f"/home/dev/.claude/{SESSION}.jsonl",
        "cwd": cwd, "model": {"id": "claude-sonnet-4-5-20250929", "display_name": "Sonnet 4.5"},
        "workspace": {"current_dir": cwd, "project_dir": cwd}, "version": "2.1.90",
        "output_style": {"name": "default"},
        "cost": {"total_cost_usd": 0.42, "total_duration_ms": 45000, "total_api_duration_ms": 2300,
                 "total_lines_added": 156, "total_lines_removed": 23},
    }).encode()


def _wall_ms(command: list[str], env: dict[str, str], stdin: bytes) -> tuple[float, str]:
    began = time.perf_counter()
    result = subprocess.run(command, input=stdin, env=env, capture_output=True, check=True)
    return (time.perf_counter() - began) * 1000, result.stdout.decode().strip()


def _percentiles(times: list[float]) -> dict[str, float]:
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    return {"p50": round(statistics.median(times), 1), "p90": round(deciles[8], 1)}


def time_runs(home: Path, runs: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "NO_COLOR")}
    env.update(HALTON_METER_HOME=str(home), PYTHONPYCACHEPREFIX=str(home / "pycache"))
    command = [sys.executable, "-m", "halton_meter", "statusline"]
    baseline = [sys.executable, "-c", "pass"]
    _, line = _wall_ms(command, env, stdin_json())  # warm-up: bytecode written, database pages cached
    _wall_ms(baseline, env, b"")
    times: list[float] = []
    startup: list[float] = []
    for _ in range(runs):
        times.append(_wall_ms(command, env, stdin_json())[0])
        startup.append(_wall_ms(baseline, env, b"")[0])
    return {"statusline_ms": _percentiles(times), "python_pass_ms": _percentiles(startup), "line": line,
            "runs": runs}


def run(n_calls: int = 1_000_000, runs: int = RUNS, home: Path | None = None, session_calls: int = 300,
        api_snapshots: int = 100_000) -> dict[str, Any]:
    from bench import report_bench
    from halton_meter.store.schema import migrate

    with tempfile.TemporaryDirectory(prefix="halton-bench-") as tmp:
        home = home if home is not None else Path(tmp) / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        db = home / "db.sqlite"
        if not db.exists():
            report_bench.generate(db, n_calls)
        migrate(db)
        add_session(db, session_calls, api_snapshots, time.time())
        conn = sqlite3.connect(db)
        calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        conn.close()
        result = time_runs(home, runs)
        result.update(calls=calls, db_mb=round(db.stat().st_size / 1e6), session_calls=session_calls,
                      api_snapshots=api_snapshots, target_ms=TARGET_MS,
                      ok=result["statusline_ms"]["p50"] <= TARGET_MS)
    return result


def markdown(result: dict[str, Any]) -> str:
    verdict = "✓" if result["ok"] else "✗ over target"
    ms, base = result["statusline_ms"], result["python_pass_ms"]
    return (f"| statusline | {result['calls']:,} calls ({result['db_mb']} MB), a {result['session_calls']}-call "
            f"session, {result['api_snapshots']:,} API-key snapshots | cold `python -m halton_meter statusline` "
            f"p50 {ms['p50']} ms, p90 {ms['p90']} ms wall, {result['runs']} runs (target ≤ {result['target_ms']:.0f} "
            f"ms p50 {verdict}) | `python -c pass` p50 {base['p50']} ms, p90 {base['p90']} ms |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.statusline_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="synthetic calls (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"timed cold runs (default {RUNS})")
    parser.add_argument("--home", type=Path, help="use HOME/db.sqlite (built by report_bench.generate if missing; "
                                                  "migrated, and the bench session added to it)")
    parser.add_argument("--session-calls", type=int, default=300, help="calls in the session (default 300)")
    args = parser.parse_args(argv)
    result = run(args.calls, args.runs, args.home, args.session_calls)
    print(f"line: {result['line']}")
    print(f"statusline p50 {result['statusline_ms']['p50']} ms, p90 {result['statusline_ms']['p90']} ms; "
          f"python -c pass p50 {result['python_pass_ms']['p50']} ms, p90 {result['python_pass_ms']['p90']} ms")
    print(markdown(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
