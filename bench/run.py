"""The benchmark runner: every path side by side in one run, interleaved, repeated; medians in a table.

    .venv/bin/python -m bench            # the full run (about 25 minutes on a 2-core machine)
    .venv/bin/python -m bench --quick    # a smoke run (about 5 minutes)
    .venv/bin/python bench/run.py ...    # the same

Paths, all to the same loopback fake provider (bench/fake.py), all over TLS with keep-alive:

* `direct`   — the client talks to the fake itself;
* `tunnel`   — through a minimal asyncio CONNECT tunnel (bench/tunnel.py), the baseline of the edge hop;
* `mitmdump` — through bare mitmdump: no addon, every body streamed (`stream_large_bodies=1`);
* `meter`    — through Halton Meter (`halton-meter serve`: edge + its cores, metering on, rows written),
               with the default number of core processes (`HALTON_METER_WORKERS` auto: one per CPU, up to 4;
               `--workers` sets another);
* `meter1`   — the same meter forced to one core process (`HALTON_METER_WORKERS=1`): the baseline that
               shows what the extra cores buy, in the same run.

Each round runs every scenario on every path in turn (the path order rotates from round to round), so
drift on a shared machine hits all paths alike; figures are medians over rounds, and "added" figures are
the median of per-round differences against `direct` in the same round. CPU comes from /proc (utime +
stime of the proxy processes), so it is robust to other load; wall-time figures are not, and say so.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import json
import math
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py` from a checkout: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procs  # noqa: E402
from bench.client import BadResponse, Conn, Route, client_context, fresh_call, subject_of_pem  # noqa: E402
from bench.fake import HOST  # noqa: E402

PATHS = ("direct", "tunnel", "mitmdump", "meter", "meter1")
METER_PATHS = ("meter", "meter1")
"""Paths through Halton Meter: each has its own serve, home and database, and its rows are checked."""
PROXY_ROLES = {"direct": (), "tunnel": ("tunnel",), "mitmdump": ("mitmdump",), "meter": ("edge", "core", "serve"),
               "meter1": ("edge", "core", "serve")}
"""The roles every run has; a meter with several cores adds `worker1` … (procs.start_meter; records list
their own roles)."""
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Plan:
    rounds: int = 5
    concurrencies: tuple[int, ...] = (1, 8, 64)
    json_seconds: float = 3.0
    json_warmup: int = 3
    """Calls per connection before the measured window (connections, TLS sessions, caches)."""
    sse_spacings: tuple[int, ...] = (0, 20)
    sse_streams: dict[int, dict[int, int]] = field(default_factory=lambda: {
        0: {1: 30, 8: 6, 64: 2},
        20: {1: 3, 8: 2, 64: 1},
    })
    """Streams per connection, by spacing (ms) and concurrency."""
    sse_concurrencies: tuple[int, ...] | None = None
    """Concurrencies for the SSE scenarios (default: `concurrencies`)."""
    newconn_calls: int = 100
    idle_seconds: float = 60.0
    growth_calls: int = 50_000
    growth_concurrency: int = 8
    help_runs: int = 15
    report_calls: int = 1_000_000
    paths: tuple[str, ...] = PATHS
    meter_workers: str | None = None
    """`HALTON_METER_WORKERS` for the `meter` path (None: the meter's default, auto unless the environment
    sets it); `meter1` always runs one core."""
    quick: bool = False
    settle_timeout: float = 60.0
    pause_after_warmup: float = 2.0
    pause_after_rounds: float = 5.0
    """Seconds of quiet before idle figures (tunnels the edge keeps open for late bytes close in 3 s)."""


FULL = Plan()
QUICK = Plan(
    rounds=2, json_seconds=1.0, json_warmup=2,
    sse_streams={0: {1: 10, 8: 2, 64: 1}, 20: {1: 2, 8: 1, 64: 1}},
    newconn_calls=20, idle_seconds=5.0, growth_calls=2_000, help_runs=5, report_calls=100_000, quick=True,
    pause_after_rounds=3.5,
)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Rows:
    """What one meter's database owes: a final, complete row per call its cores metered."""

    db: str
    calls: int = 0
    """Calls sent through this meter and metered (each owes a row)."""
    unmetered: int = 0
    """Calls the edge passed through unmetered (the client got the fake's own certificate): lost rows."""
    gaps_seen: int = 0


class Bench:
    def __init__(self, plan: Plan, workdir: Path, log: Any = print) -> None:
        self.plan = plan
        self.workdir = workdir
        self.log = log
        self.children: dict[str, procs.Child] = {}
        self.routes: dict[str, Route] = {}
        self.pids: dict[str, dict[str, int]] = {}
        self.records: list[dict[str, Any]] = []
        self.rows: dict[str, Rows] = {}
        """Per meter path: the calls its database owes rows for."""
        self.rows_checks: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}

    # ---- processes ---------------------------------------------------------------------------------

    def start(self) -> None:
        wd = self.workdir
        ca, server = procs.make_ca(wd)
        self.fake_ca = ca
        self.fake_issuer = subject_of_pem(ca)
        fake = self.children["fake"] = procs.start_module("fake", "bench.fake", "--cert", server, workdir=wd)
        self.routes["direct"] = Route("direct", client_context(ca), address=("127.0.0.1", fake.port))
        self.pids["direct"] = {}
        if "tunnel" in self.plan.paths:
            tunnel = self.children["tunnel"] = procs.start_module(
                "tunnel", "bench.tunnel", "--resolve", f"{HOST}:443=127.0.0.1:{fake.port}", workdir=wd)
            self.routes["tunnel"] = Route("tunnel", client_context(ca), proxy=("127.0.0.1", tunnel.port))
            self.pids["tunnel"] = dict(tunnel.pids)
        # bare mitmdump and the meters start side by side (all mostly wait on imports and key generation)
        resolve = [f"{HOST}:443:127.0.0.1:{fake.port}"]
        workers = {"meter": self.plan.meter_workers, "meter1": "1"}
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures: dict[str, concurrent.futures.Future[procs.Child]] = {}
            if "mitmdump" in self.plan.paths:
                futures["mitmdump"] = pool.submit(procs.start_mitmdump, ca, wd)
            for path in self.meter_paths():
                futures[path] = pool.submit(procs.start_meter, ca, resolve, wd, name=path, workers=workers[path])
            errors = []
            for name, future in futures.items():
                try:
                    self.children[name] = future.result()
                except Exception as exc:  # stop() then stops whatever did start
                    errors.append(exc)
            if errors:
                raise errors[0]
        if "mitmdump" in futures:
            # mitmproxy's eager upstream connection goes where the CONNECT says; the client's SNI (HOST)
            # becomes the upstream SNI, which the fake's certificate covers. No addon, no DNS override.
            mitm = self.children["mitmdump"]
            self.routes["mitmdump"] = Route("mitmdump", client_context(str(mitm.extra["ca"])),
                                            proxy=("127.0.0.1", mitm.port), authority=f"127.0.0.1:{fake.port}")
            self.pids["mitmdump"] = dict(mitm.pids)
        for path in self.meter_paths():
            meter = self.children[path]
            # Trust the fake's CA too, as a real client trusts public roots: a call the edge passes through
            # unmetered (a gap) then still completes, and is counted as a lost row instead of an error.
            self.routes[path] = Route(path, client_context(str(meter.extra["ca"]), ca),
                                      proxy=("127.0.0.1", meter.port))
            self.pids[path] = dict(meter.pids)
            self.rows[path] = Rows(str(meter.extra["db"]))
            self.info.setdefault("cores", {})[path] = meter.extra["cores"]
            self.info.setdefault("roles", {})[path] = list(meter.pids)
        self.fake_pid = fake.proc.pid

    def meter_paths(self) -> list[str]:
        return [p for p in METER_PATHS if p in self.plan.paths]

    def stop(self) -> None:
        """SIGTERM to every child at once (the meter finishes its rows first), then wait for each."""
        children = [self.children.pop(n) for n in (*METER_PATHS, "mitmdump", "tunnel", "fake") if n in self.children]
        with concurrent.futures.ThreadPoolExecutor(max(1, len(children))) as pool:
            for future in [pool.submit(child.stop) for child in children]:
                with contextlib.suppress(Exception):
                    future.result()

    def all_proxy_pids(self) -> dict[str, int]:
        """Every proxy process of the run, by `procs.proc_key` (the two meters' roles kept apart)."""
        out: dict[str, int] = {}
        for path in self.plan.paths:
            out.update({procs.proc_key(path, role): pid for role, pid in self.pids.get(path, {}).items()})
        return out

    # ---- rows --------------------------------------------------------------------------------------

    def ledger(self, path: str) -> dict[str, int]:
        db = self.rows[path].db
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            final, pending = conn.execute(
                "SELECT count(*) FILTER (WHERE incomplete_reason IS NOT 'in_progress'), "
                "count(*) FILTER (WHERE incomplete_reason IS 'in_progress') FROM calls").fetchone()
            gaps = conn.execute("SELECT count(*) FROM gaps").fetchone()[0]
            complete = conn.execute("SELECT count(*) FROM calls WHERE complete = 1").fetchone()[0]
        finally:
            conn.close()
        return {"rows": int(final), "in_progress": int(pending), "gaps": int(gaps), "complete": int(complete)}

    async def settle_rows(self, path: str, label: str, unmetered: int = 0) -> dict[str, Any]:
        """Wait (bounded) until every call that went through this meter path's cores so far has its final
        row; stops early once nothing has moved for 3 s. `unmetered`: calls of this measurement that the
        edge passed through unmetered (they never get a row)."""
        owed = self.rows[path]
        owed.unmetered += unmetered
        t0 = time.perf_counter()
        deadline = t0 + self.plan.settle_timeout
        last, last_change = None, t0
        while True:
            state = self.ledger(path)
            now = time.perf_counter()
            if state["rows"] >= owed.calls and state["in_progress"] == 0:
                break
            if state != last:
                last, last_change = state, now
            elif now - last_change > 3.0 or now > deadline:
                break
            await asyncio.sleep(0.05)
        new_gaps = state["gaps"] - owed.gaps_seen
        owed.gaps_seen = state["gaps"]
        check = {"path": path, "label": label, "calls": owed.calls + owed.unmetered, "metered_calls": owed.calls,
                 "unmetered": unmetered, **state, "new_gaps": new_gaps, "settle_s": time.perf_counter() - t0,
                 "ok": state["rows"] == owed.calls and not unmetered and not new_gaps
                 and state["in_progress"] == 0 and state["complete"] == state["rows"]}
        self.rows_checks.append(check)
        return check

    def _account(self, path: str, conns: list[Conn]) -> int:
        """Adds the calls of these connections through meter `path` to its expected rows; returns how many
        went through unmetered."""
        metered = sum(c.calls for c in conns if c.issuer != self.fake_issuer)
        self.rows[path].calls += metered
        return sum(c.calls for c in conns) - metered

    # ---- one measurement ---------------------------------------------------------------------------

    async def measure(self, path: str, scenario: str, concurrency: int, round_: int) -> dict[str, Any]:
        route = self.routes[path]
        pids = dict(self.pids[path])
        context = {"fake": self.fake_pid, "client": os.getpid()}
        watch = procs.PeakWatch(self.pids[path])
        record: dict[str, Any] = {"round": round_, "path": path, "scenario": scenario, "c": concurrency,
                                  "roles": list(pids)}
        calls = errors = 0
        latencies: list[float] = []
        firsts: list[float] = []
        lasts: list[float] = []
        spreads: list[float] = []
        error_text: list[str] = []
        conns: list[Conn] = []
        used: list[Conn] = []
        fresh_issuers: list[tuple] = []  # type: ignore[type-arg]
        try:
            if scenario == "newconn":
                watch.start()
                cpu0 = procs.cpu_snapshot(pids)
                ctx0 = procs.cpu_snapshot(context)
                start = time.perf_counter()
                for _ in range(self.plan.newconn_calls):
                    calls += 1
                    try:
                        seconds, issuer = await fresh_call(route)
                        latencies.append(seconds)
                        fresh_issuers.append(issuer)
                    except (OSError, BadResponse, asyncio.IncompleteReadError, TimeoutError) as exc:
                        errors += 1
                        error_text.append(f"{type(exc).__name__}: {exc}")
                elapsed = time.perf_counter() - start
                ctx_cpu = procs.cpu_delta(ctx0, procs.cpu_snapshot(context))
            else:
                opened = await asyncio.gather(*(Conn.open(route) for _ in range(concurrency)),
                                              return_exceptions=True)
                conns = [c for c in opened if isinstance(c, Conn)]
                errors += len(opened) - len(conns)
                error_text += [f"{type(e).__name__}: {e}" for e in opened if not isinstance(e, Conn)]
                warmup = self.plan.json_warmup if scenario == "json" else 1

                async def warm(conn: Conn) -> None:
                    for _ in range(warmup):
                        await conn.json_call()

                warmed = await asyncio.gather(*(warm(c) for c in conns), return_exceptions=True)
                for conn, outcome in zip(list(conns), warmed, strict=True):
                    if isinstance(outcome, BaseException):
                        errors += 1
                        error_text.append(f"warm-up {type(outcome).__name__}: {outcome}")
                        conns.remove(conn)
                        conn.close()
                        used.append(conn)
                watch.start()
                cpu0 = procs.cpu_snapshot(pids)
                ctx0 = procs.cpu_snapshot(context)
                start = time.perf_counter()
                if scenario == "json":
                    deadline = start + self.plan.json_seconds

                    async def worker(conn: Conn) -> None:
                        nonlocal calls
                        while time.perf_counter() < deadline:
                            calls += 1
                            latencies.append(await conn.json_call())
                else:
                    spacing = int(scenario[3:])
                    per_conn = self.plan.sse_streams[spacing].get(concurrency, 1)

                    async def worker(conn: Conn) -> None:
                        nonlocal calls
                        for _ in range(per_conn):
                            calls += 1
                            result = await conn.sse_call(spacing)
                            latencies.append(result.total)
                            firsts.append(result.first_event)
                            lasts.append(result.last_event)
                            spreads.append(result.last_event - result.first_event)

                outcomes = await asyncio.gather(*(worker(c) for c in conns), return_exceptions=True)
                elapsed = time.perf_counter() - start
                ctx_cpu = procs.cpu_delta(ctx0, procs.cpu_snapshot(context))
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        errors += 1
                        error_text.append(f"{type(outcome).__name__}: {outcome}")
                await asyncio.gather(*(c.aclose() for c in conns), return_exceptions=True)
                used += conns
                conns = []
            if path in METER_PATHS:
                if scenario == "newconn":
                    unmetered = sum(1 for i in fresh_issuers if i == self.fake_issuer)
                    self.rows[path].calls += len(fresh_issuers) - unmetered
                else:
                    unmetered = self._account(path, used)
                check = await self.settle_rows(path, f"r{round_} {scenario} c{concurrency}", unmetered)
                record["gaps"] = check["new_gaps"]
                record["unmetered_calls"] = unmetered
                record["settle_s"] = check["settle_s"]
            else:
                await asyncio.sleep(0.05)
            cpu = {**procs.cpu_delta(cpu0, procs.cpu_snapshot(pids)), **ctx_cpu}
            peaks = watch.peaks()
        finally:
            watch.stop()
            for conn in conns:
                conn.close()
        done = len(latencies)
        record.update(
            calls=calls, completed=done, errors=errors, error_sample=error_text[:3], elapsed=elapsed,
            rps=done / elapsed if elapsed > 0 else math.nan,
            p50=pct(latencies, 0.5), p99=pct(latencies, 0.99),
            cpu_ms={k: v * 1000 / done if done else math.nan for k, v in cpu.items()},
            rss_peak_kb=peaks,
        )
        if firsts:
            record.update(first_p50=pct(firsts, 0.5), first_p99=pct(firsts, 0.99),
                          last_p50=pct(lasts, 0.5), last_p99=pct(lasts, 0.99), spread_p50=pct(spreads, 0.5))
        return record

    # ---- the interleaved rounds --------------------------------------------------------------------

    def scenarios(self) -> list[tuple[str, int]]:
        out = [("json", c) for c in self.plan.concurrencies]
        for spacing in self.plan.sse_spacings:
            out += [(f"sse{spacing}", c) for c in (self.plan.sse_concurrencies or self.plan.concurrencies)]
        out.append(("newconn", 1))
        return out

    async def warm(self) -> None:
        """One call per path (certificates minted, modules imported) before anything is measured."""
        for path in self.plan.paths:
            conn = await Conn.open(self.routes[path])
            await conn.json_call()
            await conn.sse_call(0)
            await conn.aclose()
            if path in METER_PATHS:
                await self.settle_rows(path, "warm-up", self._account(path, [conn]))

    async def rounds(self) -> None:
        paths = list(self.plan.paths)
        scenarios = self.scenarios()
        for r in range(self.plan.rounds):
            order = paths[r % len(paths):] + paths[: r % len(paths)]
            t0 = time.perf_counter()
            for scenario, c in scenarios:
                for path in order:
                    rec = await self.measure(path, scenario, c, r)
                    self.records.append(rec)
                    if rec["errors"]:
                        self.log(f"    ! {path} {scenario} c{c}: {rec['errors']} errors, e.g. {rec['error_sample'][:1]}")
            self.log(f"  round {r + 1}/{self.plan.rounds} done in {time.perf_counter() - t0:.0f} s "
                     f"(order: {', '.join(order)})")

    # ---- footprint ---------------------------------------------------------------------------------

    def rss_now(self) -> dict[str, int]:
        return {name: procs.rss_kb(pid) for name, pid in self.all_proxy_pids().items()}

    async def idle_cpu(self) -> dict[str, float]:
        """Percent of one core each proxy process uses while nothing goes through it."""
        pids = self.all_proxy_pids()
        before = procs.cpu_snapshot(pids)
        t0 = time.perf_counter()
        await asyncio.sleep(self.plan.idle_seconds)
        seconds = time.perf_counter() - t0
        delta = procs.cpu_delta(before, procs.cpu_snapshot(pids))
        return {name: 100 * v / seconds for name, v in delta.items()}

    async def growth(self, path: str = "meter") -> dict[str, Any]:
        """RSS of a meter's processes (every core included) over `growth_calls` calls (1 in 10 a stream), at
        checkpoints."""
        route = self.routes[path]
        total = self.plan.growth_calls
        c = self.plan.growth_concurrency
        pids = self.pids[path]
        checkpoints: list[dict[str, Any]] = [{"calls": 0, **{k: procs.rss_kb(p) for k, p in pids.items()}}]
        step = max(1, total // 10)
        sent = 0
        next_mark = step
        conns = [await Conn.open(route) for _ in range(c)]
        t0 = time.perf_counter()
        errors = 0

        async def worker(conn: Conn) -> None:
            nonlocal sent, next_mark, errors
            while sent < total:
                sent += 1
                try:
                    if sent % 10 == 0:
                        await conn.sse_call(0)
                    else:
                        await conn.json_call()
                except (OSError, BadResponse, asyncio.IncompleteReadError):
                    errors += 1
                    return
                if sent >= next_mark:
                    next_mark += step
                    checkpoints.append({"calls": sent, **{k: procs.rss_kb(p) for k, p in pids.items()}})

        await asyncio.gather(*(worker(conn) for conn in conns))
        elapsed = time.perf_counter() - t0
        for conn in conns:
            await conn.aclose()
        unmetered = self._account(path, conns)
        rows = await self.settle_rows(path, f"growth {total}", unmetered)
        first = checkpoints[1] if len(checkpoints) > 1 else checkpoints[0]
        last = checkpoints[-1]
        return {
            "path": path, "calls": sent, "errors": errors, "seconds": elapsed, "checkpoints": checkpoints, "rows": rows,
            "unmetered_calls": unmetered,
            "growth_kb": {k: last[k] - first[k] for k in pids},
            "baseline_calls": first["calls"],
        }

    def cold_start(self) -> dict[str, float]:
        exe = Path(sys.executable).parent / "halton-meter"
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "halton_meter"]
        env = {**os.environ, "HALTON_METER_HOME": str(self.workdir / "cold-home"), "NO_COLOR": "1"}

        def timed(cmd: list[str]) -> float:
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            return time.perf_counter() - t0

        timed([*argv, "--help"])  # page cache warm, .pyc written
        helps = [timed([*argv, "--help"]) for _ in range(self.plan.help_runs)]
        bare = [timed([sys.executable, "-c", "pass"]) for _ in range(self.plan.help_runs)]
        return {"help_ms": statistics.median(helps) * 1000, "help_min_ms": min(helps) * 1000,
                "python_ms": statistics.median(bare) * 1000, "runs": len(helps)}


def report_month(n_calls: int) -> dict[str, Any] | None:
    """`report --month` over `n_calls` synthetic calls, from bench/report_bench.py when it exists."""
    try:
        from bench import report_bench  # type: ignore[attr-defined]
    except ImportError:
        return None
    result = report_bench.run(n_calls=n_calls)
    out = dict(result) if isinstance(result, dict) else {"result": result}
    out.setdefault("n_calls", n_calls)
    return out


# --------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------


async def _main_async(bench: Bench, plan: Plan, skip: set[str]) -> dict[str, Any]:
    log = bench.log
    out: dict[str, Any] = {}
    await bench.warm()
    await asyncio.sleep(plan.pause_after_warmup)
    out["rss_idle_start_kb"] = bench.rss_now()
    log(f"  idle RSS after start (MB): {_mb(out['rss_idle_start_kb'])}")
    run_peak = procs.PeakWatch(bench.all_proxy_pids())
    run_peak.start()
    await bench.rounds()
    out["rss_peak_run_kb"] = run_peak.peaks()
    run_peak.stop()
    await asyncio.sleep(plan.pause_after_rounds)  # tunnels the edge keeps for late bytes close
    out["rss_idle_after_kb"] = bench.rss_now()
    log(f"  idle RSS after the rounds (MB): {_mb(out['rss_idle_after_kb'])}")
    if "idle" not in skip:
        log(f"  idle CPU over {plan.idle_seconds:.0f} s ...")
        out["idle_cpu_pct"] = await bench.idle_cpu()
        out["idle_seconds"] = plan.idle_seconds
    meters = bench.meter_paths()
    if "growth" not in skip and meters:
        log(f"  RSS growth over {plan.growth_calls} calls through {meters[0]} ...")
        out["growth"] = await bench.growth(meters[0])
    if meters:
        from halton_meter.serve.stats import CORE_STATS, EDGE_STATS, read_stats

        out["stats"] = {}
        asked = time.time()
        for path in meters:
            run_dir = Path(str(bench.children[path].extra["home"])) / "run"
            for _ in range(60):  # both publish every 2 s: wait for a fresh copy of each
                edge, core = read_stats(run_dir / EDGE_STATS) or {}, read_stats(run_dir / CORE_STATS) or {}
                if min(edge.get("updated_at", 0), core.get("updated_at", 0)) > asked:
                    break
                await asyncio.sleep(0.05)
            out["stats"][path] = {"edge": edge, "core": core}
        # the first meter path's, under the names earlier results used
        out["edge_stats"], out["core_stats"] = out["stats"][meters[0]]["edge"], out["stats"][meters[0]]["core"]
    return out


def run(plan: Plan, *, skip: set[str] = frozenset(), log: Any = print, workdir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns everything measured (`records` per measurement plus summaries)."""
    started = datetime.datetime.now()
    results: dict[str, Any] = {"started": started.isoformat(timespec="seconds"), "plan": asdict(plan),
                               "machine": procs.machine()}
    tmp = None
    if workdir is None:
        tmp = procs.workdir()
        workdir = Path(tmp.name)
    bench = Bench(plan, workdir, log)
    try:
        log(f"starting fake provider and paths: {', '.join(plan.paths)}")
        bench.start()
        for path, cores in bench.info.get("cores", {}).items():
            log(f"  {path}: {cores} core process{'es' if cores != 1 else ''} "
                f"({', '.join(f'{r} {pid}' for r, pid in bench.pids[path].items())})")
        results.update(asyncio.run(_main_async(bench, plan, set(skip))))
    finally:
        bench.stop()
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.cleanup()
    results["records"] = bench.records
    results["rows_checks"] = bench.rows_checks
    results["meter_calls"] = {path: rows.calls for path, rows in bench.rows.items()}
    results["unmetered_calls"] = {path: rows.unmetered for path, rows in bench.rows.items()}
    results["workers_env"] = os.environ.get("HALTON_METER_WORKERS")  # the `meter` path's, unless plan.meter_workers
    results["cores"] = dict(bench.info.get("cores", {}))  # core processes per meter path (runtime.json)
    results["roles"] = dict(bench.info.get("roles", {}))  # per meter path: edge, core, worker1 …, serve
    if "cold" not in skip:
        log("  `halton-meter --help` cold start ...")
        results["cold_start"] = bench.cold_start()
    if "report" in skip:
        results["report_month"] = {"skipped": True}
    else:
        log(f"  `report --month` over {plan.report_calls:,} calls (bench/report_bench.py) ...")
        try:
            results["report_month"] = report_month(plan.report_calls)
        except Exception as exc:  # the other benchmark failing must not lose this one's numbers
            results["report_month"] = {"error": f"{type(exc).__name__}: {exc}"}
    if "dashboard" in skip or plan.report_calls <= 0:
        results["dashboard"] = {"skipped": True}
    else:
        log(f"  dashboard endpoints over {plan.report_calls:,} calls (bench/dashboard_bench.py) ...")
        try:
            from bench import dashboard_bench

            results["dashboard"] = dashboard_bench.run(plan.report_calls)
        except Exception as exc:  # the other benchmarks' numbers are kept
            results["dashboard"] = {"error": f"{type(exc).__name__}: {exc}"}
    results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    results["seconds"] = (datetime.datetime.now() - started).total_seconds()
    return results


def _mb(kb: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / 1024:.1f}" for k, v in kb.items())


def main(argv: list[str] | None = None) -> int:
    from bench import table

    parser = argparse.ArgumentParser(prog="python -m bench", description="Halton Meter benchmark (issue 7).")
    parser.add_argument("--quick", action="store_true", help="short smoke run (about 5 minutes)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5; quick 2)")
    parser.add_argument("--seconds", type=float, help="measured window per keep-alive JSON measurement")
    parser.add_argument("--paths", help=f"comma-separated subset of {','.join(PATHS)} (direct is always run)")
    parser.add_argument("--concurrency", help="comma-separated concurrencies (default 1,8,64)")
    parser.add_argument("--workers", help="HALTON_METER_WORKERS for the `meter` path: an integer or auto (default: "
                                          "the meter's own default, auto unless the environment sets it); "
                                          "`meter1` always runs one core")
    parser.add_argument("--idle-seconds", type=float)
    parser.add_argument("--growth-calls", type=int)
    parser.add_argument("--report-calls", type=int, help="synthetic calls for `report --month` and the dashboard "
                                                         "endpoints (default 1,000,000)")
    parser.add_argument("--skip", default="", help="comma-separated: idle, growth, cold, report, dashboard")
    parser.add_argument("--out", type=Path, help="markdown output file (default bench/results/DATE-HOST.md)")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    plan = Plan(**{**asdict(plan)})
    if args.rounds:
        plan.rounds = args.rounds
    if args.seconds:
        plan.json_seconds = args.seconds
    if args.paths:
        chosen = [p.strip() for p in args.paths.split(",") if p.strip()]
        unknown = set(chosen) - set(PATHS)
        if unknown:
            parser.error(f"unknown path(s): {', '.join(sorted(unknown))}")
        plan.paths = tuple(p for p in PATHS if p in chosen or p == "direct")
    if args.concurrency:
        plan.concurrencies = tuple(int(c) for c in args.concurrency.split(","))
    if args.workers:
        plan.meter_workers = args.workers.strip()
    if args.idle_seconds is not None:
        plan.idle_seconds = args.idle_seconds
    if args.growth_calls is not None:
        plan.growth_calls = args.growth_calls
    if args.report_calls is not None:
        plan.report_calls = args.report_calls
    plan.sse_streams = {int(k): {int(c): n for c, n in v.items()} for k, v in plan.sse_streams.items()}
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    print(f"Halton Meter benchmark ({'quick' if plan.quick else 'full'}): {plan.rounds} rounds, paths "
          f"{', '.join(plan.paths)}, concurrency {', '.join(map(str, plan.concurrencies))}", flush=True)
    results = run(plan, skip=skip, log=lambda text: print(text, flush=True))
    markdown = table.render(results)
    stamp = datetime.date.today().isoformat()
    host = socket.gethostname().split(".")[0] or "host"
    out = args.out or RESULTS / f"{stamp}-{host}{'-quick' if plan.quick else ''}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print()
    print(markdown)
    print(f"written: {out} (and {out.with_suffix('.json').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
