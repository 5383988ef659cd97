"""Turns the runner's measurements into the markdown report: medians over rounds, differences and ratios
against `direct` and against bare `mitmdump` (per round, then the median), and pass/fail against the
targets.

Halton Meter runs on two paths: `meter` (the default number of core processes) and `meter1` (forced to one
core). Its processes, by role: `edge`, `core` (the first core, which owns the database), `worker1` …
(`halton_meter.core --worker K`) and `serve`; each record lists the roles it measured."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from bench.procs import WORKER_ROLE, is_core_role, proc_key

METER_PATHS = ("meter", "meter1")
PROXY_ROLES = {"direct": (), "tunnel": ("tunnel",), "mitmdump": ("mitmdump",), "meter": ("edge", "core", "serve"),
               "meter1": ("edge", "core", "serve")}
"""The roles every run has (a meter with several cores adds `worker1` …: see `record_roles`)."""
LABEL = {"direct": "direct", "tunnel": "plain tunnel", "mitmdump": "bare mitmdump", "meter": "Halton Meter",
         "meter1": "Halton Meter, 1 core"}
GROWTH_TOLERANCE_MB = 5.0
CORE_RSS_MB = 90.0
EDGE_RSS_MB = 30.0
IDLE_CPU_PCT = 0.2
METERING_CPU_MS = 0.2
ADDED_P50_MS = 0.3
SSE_FIRST_MS = 0.5
THROUGHPUT_C1 = 1.0
THROUGHPUT_MANY = 1.5


def record_roles(rec: dict[str, Any]) -> tuple[str, ...]:
    """The proxy processes a measurement covered (every core of a meter), by role."""
    return tuple(rec.get("roles") or PROXY_ROLES[rec["path"]])


def path_roles(results: dict[str, Any], path: str) -> tuple[str, ...]:
    """The proxy processes of a path in this run, by role."""
    return tuple((results.get("roles") or {}).get(path) or PROXY_ROLES[path])


def is_worker(role: str) -> bool:
    return WORKER_ROLE.match(role) is not None


def role_label(role: str) -> str:
    """`worker2` → `core worker 2`; other roles as they are."""
    match = WORKER_ROLE.match(role)
    return f"core worker {match.group(1)}" if match else role


def cores(results: dict[str, Any], path: str) -> int:
    return int((results.get("cores") or {}).get(path) or sum(1 for r in path_roles(results, path) if is_core_role(r)))


def _per_path(value: Any, path: str) -> int:
    """A per-meter-path count (older results: one int, for `meter`)."""
    if isinstance(value, dict):
        return int(value.get(path, 0))
    return int(value or 0) if path == "meter" else 0


def _pct(ratio: float) -> str:
    return "–" if math.isnan(ratio) else f"{ratio * 100:.0f}%"


def med(values: list[float]) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else math.nan


def f(value: float, digits: int = 2, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


class Summary:
    """Per (path, scenario, concurrency): medians over rounds, and per-round comparisons."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.by_key: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
        self.by_round: dict[tuple[str, str, int, int], dict[str, Any]] = {}
        self.excluded: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
        """Halton Meter measurements in which calls went through unmetered (gaps): they did not measure the
        meter, so they are left out of every figure (and the zero-lost-rows target fails)."""
        for rec in records:
            if rec.get("gaps") or rec.get("unmetered_calls"):
                self.excluded[(rec["path"], rec["scenario"], rec["c"])].append(rec)
                continue
            self.by_key[(rec["path"], rec["scenario"], rec["c"])].append(rec)
            self.by_round[(rec["path"], rec["scenario"], rec["c"], rec["round"])] = rec

    def has(self, path: str, scenario: str, c: int) -> bool:
        return bool(self.by_key.get((path, scenario, c)))

    def value(self, path: str, scenario: str, c: int, metric: str) -> float:
        return med([r.get(metric, math.nan) * (1000 if _seconds(metric) else 1)
                    for r in self.by_key.get((path, scenario, c), [])])

    def _paired(self, path: str, other: str, scenario: str, c: int, fn: Any) -> float:
        out = []
        for rec in self.by_key.get((path, scenario, c), []):
            base = self.by_round.get((other, scenario, c, rec["round"]))
            if base is not None:
                out.append(fn(rec, base))
        return med(out)

    def added(self, path: str, scenario: str, c: int, metric: str, other: str = "direct") -> float:
        """Median over rounds of (path − other) in the same round, in ms for times."""
        scale = 1000 if _seconds(metric) else 1
        return self._paired(path, other, scenario, c,
                            lambda a, b: (a.get(metric, math.nan) - b.get(metric, math.nan)) * scale)

    def ratio(self, path: str, scenario: str, c: int, metric: str, other: str) -> float:
        def fn(a: dict[str, Any], b: dict[str, Any]) -> float:
            return a[metric] / b[metric] if b.get(metric) else math.nan

        return self._paired(path, other, scenario, c, fn)

    def cpu(self, path: str, scenario: str, c: int, roles: tuple[str, ...] | None = None) -> float:
        """Proxy CPU ms per call (sum over `roles`, default all the path's proxy processes: every core)."""
        if not (PROXY_ROLES[path] if roles is None else roles):
            return math.nan
        return med([sum(r["cpu_ms"].get(role, math.nan) for role in (record_roles(r) if roles is None else roles))
                    for r in self.by_key.get((path, scenario, c), [])])

    def cpu_workers(self, path: str, scenario: str, c: int) -> float:
        """CPU ms per call of a meter's core workers together (NaN when it runs one core)."""
        return med([sum(r["cpu_ms"].get(role, math.nan) for role in record_roles(r) if is_worker(role))
                    if any(is_worker(role) for role in record_roles(r)) else math.nan
                    for r in self.by_key.get((path, scenario, c), [])])

    def cpu_added(self, path: str, other: str, scenario: str, c: int) -> float:
        def fn(a: dict[str, Any], b: dict[str, Any]) -> float:
            return (sum(a["cpu_ms"].get(k, math.nan) for k in record_roles(a))
                    - sum(b["cpu_ms"].get(k, math.nan) for k in record_roles(b)))

        return self._paired(path, other, scenario, c, fn)

    def errors(self, path: str, scenario: str, c: int) -> str:
        recs = self.by_key.get((path, scenario, c), []) + self.excluded.get((path, scenario, c), [])
        text = str(sum(r["errors"] for r in recs))
        unmetered = sum(r.get("unmetered_calls", 0) for r in recs)
        gaps = sum(r.get("gaps", 0) for r in recs)
        if unmetered or gaps:
            dropped = len(self.excluded.get((path, scenario, c), []))
            text += (f" (**{unmetered} calls unmetered** on {gaps} gap tunnels: {dropped} of {len(recs)} "
                     "rounds left out)")
        return text

    def peak_kb(self, path: str, role: str, c: int | None = None) -> float:
        values = [r["rss_peak_kb"].get(role, 0) for (p, _, cc), recs in self.by_key.items() for r in recs
                  if p == path and (c is None or cc == c)]
        return max(values) if values else math.nan


def _seconds(metric: str) -> bool:
    return metric in ("p50", "p99", "first_p50", "first_p99", "last_p50", "last_p99", "spread_p50")


EVENTS = 50


def unbuffered(s: Summary, path: str, spacing: int, c: int) -> bool | None:
    """Events still spread out in time after the proxy: the median gap between the first and the last event
    is at least half of what the fake put between them ((EVENTS − 1) × spacing). A proxy that buffered the
    stream would deliver them all at once."""
    spread = s.value(path, f"sse{spacing}", c, "spread_p50")
    if spacing == 0 or math.isnan(spread):
        return None
    return spread >= 0.5 * (EVENTS - 1) * spacing


def _paths(results: dict[str, Any]) -> list[str]:
    return list(results["plan"]["paths"])


def render(results: dict[str, Any]) -> str:
    s = Summary(results.get("records", []))
    plan = results["plan"]
    paths = _paths(results)
    cs = list(plan["concurrencies"])
    m = results["machine"]
    lines: list[str] = []
    add = lines.append
    kind = "quick smoke run" if plan.get("quick") else "full run"
    add(f"# Halton Meter benchmark — {results['started'][:10]} ({kind})")
    add("")
    add(f"* **Machine:** {m['host']}: {m['cores']} cores, {m['cpu']}, {m['memory']} RAM, {m['os']}; "
        f"load average at start {m['loadavg_at_start']}.")
    add(f"* **Software:** Python {m['python']}, mitmproxy {m['mitmproxy']}, Halton Meter {m['halton_meter']}.")
    meters = [p for p in METER_PATHS if p in paths]
    if meters:
        text = ""
        if "meter" in meters:
            n = cores(results, "meter")
            workers = plan.get("meter_workers")
            env = results.get("workers_env")
            how = (f"`HALTON_METER_WORKERS={workers}`" if workers else
                   f"`HALTON_METER_WORKERS={env}` from the environment" if env else "the default: one per CPU, up to 4")
            text = (f"Halton Meter runs {n} core{'s' if n != 1 else ''} ({how}; the first core owns the database, "
                    "each worker hands it its records)")
        if "meter1" in meters:
            text += ("; " if text else "") + ("“Halton Meter, 1 core” is the same meter forced to one core "
                                               "(`HALTON_METER_WORKERS=1`), the baseline of the scaling figures")
        add(f"* **Cores:** {text}.")
    add(f"* **Run:** {plan['rounds']} interleaved rounds (each scenario on every path in turn, path order "
        f"rotating by round); keep-alive JSON windows of {plan['json_seconds']:g} s; "
        f"{results.get('seconds', 0) / 60:.1f} min in all. Figures are medians over rounds; `+` figures "
        f"are medians of per-round differences against `direct` in the same round.")
    add("* Wall-time figures (req/s, latency) share the machine's cores with the load client and the fake "
        "provider; CPU figures are each proxy process's own utime+stime from /proc and are the robust ones.")
    add("")

    # ---- keep-alive JSON
    add("## Keep-alive JSON calls (~1 KB response)")
    add("")
    add("| conc. | path | req/s | × direct | × mitmdump | p50 ms | +p50 ms | p99 ms | +p99 ms | proxy CPU ms/call | errors |")
    add("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in cs:
        for path in paths:
            if not s.has(path, "json", c):
                continue
            add(f"| {c} | {LABEL[path]} | {f(s.value(path, 'json', c, 'rps'), 0)} | "
                f"{f(s.ratio(path, 'json', c, 'rps', 'direct'))} | "
                f"{f(s.ratio(path, 'json', c, 'rps', 'mitmdump')) if 'mitmdump' in paths else '–'} | "
                f"{f(s.value(path, 'json', c, 'p50'))} | {f(s.added(path, 'json', c, 'p50'), signed=True)} | "
                f"{f(s.value(path, 'json', c, 'p99'))} | {f(s.added(path, 'json', c, 'p99'), signed=True)} | "
                f"{f(s.cpu(path, 'json', c), 3)} | {s.errors(path, 'json', c)} |")
    add("")

    # ---- SSE
    add("## SSE streams (50 events)")
    add("")
    add("Time to first and to last event, from the request being written. With 20 ms spacing the fake sends "
        "the last event 980 ms after the first; `spread` is what arrives between them at the client (a proxy "
        "that buffered would deliver all events at once: spread ≈ 0). Unbuffered = spread ≥ half the source's.")
    add("")
    add("| spacing | conc. | path | first p50 ms | +first p50 | +first p99 | last p50 ms | +last p50 | spread p50 ms | proxy CPU ms/stream | unbuffered | errors |")
    add("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for spacing in plan["sse_spacings"]:
        sc = f"sse{spacing}"
        for c in plan.get("sse_concurrencies") or cs:
            for path in paths:
                if not s.has(path, sc, c):
                    continue
                first, last = s.value(path, sc, c, "first_p50"), s.value(path, sc, c, "last_p50")
                ok = unbuffered(s, path, spacing, c)
                verdict = "–" if ok is None else ("yes" if ok else "**NO**")
                add(f"| {spacing} ms | {c} | {LABEL[path]} | {f(first)} | "
                    f"{f(s.added(path, sc, c, 'first_p50'), signed=True)} | "
                    f"{f(s.added(path, sc, c, 'first_p99'), signed=True)} | {f(last)} | "
                    f"{f(s.added(path, sc, c, 'last_p50'), signed=True)} | {f(s.value(path, sc, c, 'spread_p50'), 0)} | "
                    f"{f(s.cpu(path, sc, c), 3)} | {verdict} | {s.errors(path, sc, c)} |")
    add("")

    # ---- new connections
    add("## New connection per call")
    add("")
    add(f"{plan['newconn_calls']} sequential calls per round, each on a fresh connection (TCP connect, CONNECT, "
        "TLS handshake(s), call, `Connection: close`).")
    add("")
    add("| path | p50 ms | +p50 ms | p99 ms | +p99 ms | proxy CPU ms/call | errors |")
    add("|---|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        if s.has(path, "newconn", 1):
            add(f"| {LABEL[path]} | {f(s.value(path, 'newconn', 1, 'p50'))} | "
                f"{f(s.added(path, 'newconn', 1, 'p50'), signed=True)} | {f(s.value(path, 'newconn', 1, 'p99'))} | "
                f"{f(s.added(path, 'newconn', 1, 'p99'), signed=True)} | {f(s.cpu(path, 'newconn', 1), 3)} | "
                f"{s.errors(path, 'newconn', 1)} |")
    add("")

    # ---- CPU breakdown
    if meters:
        add("## Proxy CPU per call, by process (ms of CPU per call, keep-alive JSON)")
        add("")
        add("`core loop` is the first core's main thread (mitmproxy and the meter addon), `core threads` its "
            "others (SQLite writer with pricing, attribution, stats); `workers` the core workers together (each "
            "its own mitmproxy and addon; their rows go to the first core's writer). `all` = edge + every core "
            "+ serve. `metering` = Halton Meter (all) − bare mitmdump; `edge − tunnel` = what the edge costs "
            "beyond a minimal asyncio tunnel. Load client and fake provider shown for context.")
        add("")
        add("| scenario | conc. | path | edge | core loop | core threads | workers | serve | all | bare mitmdump | metering | plain tunnel | edge − tunnel | client | fake |")
        add("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        scen = ([("json", c) for c in cs] + [(f"sse{sp}", c) for sp in plan["sse_spacings"]
                                            for c in plan.get("sse_concurrencies") or cs] + [("newconn", 1)])
        for sc, c in scen:
            for mp in meters:
                if not s.has(mp, sc, c):
                    continue
                edge_minus_tunnel = math.nan
                if "tunnel" in paths:
                    edge_minus_tunnel = s.cpu(mp, sc, c, ("edge",)) - s.cpu("tunnel", sc, c)
                loop = s.cpu(mp, sc, c, ("core:main",))
                add(f"| {sc} | {c} | {LABEL[mp]} | {f(s.cpu(mp, sc, c, ('edge',)), 3)} | {f(loop, 3)} | "
                    f"{f(s.cpu(mp, sc, c, ('core',)) - loop, 3)} | {f(s.cpu_workers(mp, sc, c), 3)} | "
                    f"{f(s.cpu(mp, sc, c, ('serve',)), 3)} | {f(s.cpu(mp, sc, c), 3)} | "
                    f"{f(s.cpu('mitmdump', sc, c), 3) if 'mitmdump' in paths else '–'} | "
                    f"{f(s.cpu_added(mp, 'mitmdump', sc, c), 3, True) if 'mitmdump' in paths else '–'} | "
                    f"{f(s.cpu('tunnel', sc, c), 3) if 'tunnel' in paths else '–'} | {f(edge_minus_tunnel, 3, True)} | "
                    f"{f(s.cpu(mp, sc, c, ('client',)), 3)} | {f(s.cpu(mp, sc, c, ('fake',)), 3)} |")
        add("")

    # ---- footprint
    add("## Footprint")
    add("")
    idle0 = results.get("rss_idle_start_kb", {})
    idle1 = results.get("rss_idle_after_kb", {})
    peak = results.get("rss_peak_run_kb", {})
    idle_cpu = results.get("idle_cpu_pct", {})
    growth = results.get("growth") or {}
    text = "RSS in MB (peaks: the kernel's high-water mark, reset before each measurement)."
    if idle_cpu:
        text += f" Idle CPU: % of one core over {results.get('idle_seconds', 0):g} s with no traffic."
    growth_path = growth.get("path", "meter")
    if growth:
        text += (f" Growth: RSS change from call {growth.get('baseline_calls', 0):,} to call "
                 f"{growth.get('calls', 0):,} through {LABEL[growth_path]} (1 in 10 a stream).")
    add(text)
    add("")
    add(f"| process | RSS idle after start | RSS peak at conc. {max(cs)} | RSS peak, whole run | RSS idle after load | idle CPU % | growth MB |")
    add("|---|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        for role in path_roles(results, path):
            name = f"{LABEL[path]}: {role_label(role)}" if path in METER_PATHS else LABEL[path]
            key = proc_key(path, role)
            c64 = s.peak_kb(path, role, max(cs)) / 1024
            g = growth.get("growth_kb", {}).get(role) if path == growth_path else None
            add(f"| {name} | {f(idle0.get(key, math.nan) / 1024, 1)} | {f(c64, 1)} | "
                f"{f(peak.get(key, math.nan) / 1024, 1)} | {f(idle1.get(key, math.nan) / 1024, 1)} | "
                f"{f(idle_cpu.get(key, math.nan), 3)} | {f(g / 1024, 1, True) if g is not None else '–'} |")
    add("")

    # ---- rows
    checks = results.get("rows_checks", [])
    if checks:
        add("## Rows = calls (Halton Meter)")
        add("")
        for mp in meters:
            mine = [c for c in checks if c.get("path", "meter") == mp]
            if not mine:
                continue
            last = mine[-1]
            bad = [c for c in mine if not c["ok"]]
            lost = last["calls"] - last["rows"]
            add(f"**{LABEL[mp]}** ({cores(results, mp)} core{'s' if cores(results, mp) != 1 else ''}): checked "
                f"after every measurement ({len(mine)} checks): {len(bad)} failed. In all: "
                f"{last['calls']:,} calls sent through it, {last['rows']:,} final rows "
                f"({last['complete']:,} complete), {last['in_progress']} still in progress, **{lost:,} lost** — of "
                f"which {_per_path(results.get('unmetered_calls'), mp):,} passed through unmetered by the edge on "
                f"{last['gaps']} gap tunnels (the client got the provider's own certificate). Slowest settle "
                f"{max(c['settle_s'] for c in mine) * 1000:.0f} ms.")
            stats = (results.get("stats") or {}).get(mp) or {}
            edge = stats.get("edge") if stats else (results.get("edge_stats") if mp == meters[0] else None)
            edge = edge or {}
            if edge.get("passthrough"):
                add(f"The edge passed {edge['passthrough']} connections or requests through unmetered; last reason: "
                    f"“{edge.get('last_gap_reason')}”. Measurements with gaps did not measure the meter and are left "
                    "out of the figures above.")
            for c in bad[:8]:
                add(f"* failed at {c['label']}: {c.get('unmetered', 0)} calls unmetered on {c.get('new_gaps', 0)} new "
                    f"gap tunnels; rows {c['rows']:,} for {c.get('metered_calls', c['calls']):,} metered calls, "
                    f"{c['in_progress']} in progress")
            add("")

    # ---- other figures
    add("## Start-up and reports")
    add("")
    cold = results.get("cold_start")
    if cold:
        add(f"* `halton-meter --help`: median {cold['help_ms']:.0f} ms over {cold['runs']} runs (min "
            f"{cold['help_min_ms']:.0f} ms); bare `python -c pass` {cold['python_ms']:.0f} ms.")
    rep = results.get("report_month")
    if rep is None:
        add("* `report --month`: not measured (bench/report_bench.py not present).")
    elif rep.get("skipped"):
        add("* `report --month`: skipped (`--skip report`).")
    elif "error" in rep:
        add(f"* `report --month`: bench/report_bench.py failed: {rep['error']}")
    else:
        ms = report_ms(rep)
        add(f"* `report --month` over {int(rep.get('calls', rep.get('n_calls', 0))):,} synthetic calls: "
            f"{f(ms, 0)} ms ({', '.join(f'{k}={v}' for k, v in rep.items() if not isinstance(v, (dict, list)))}).")
    dash = results.get("dashboard")
    if dash and dash.get("skipped"):
        add("* dashboard endpoints: skipped.")
    elif dash and "error" in dash:
        add(f"* dashboard endpoints: bench/dashboard_bench.py failed: {dash['error']}")
    elif dash:
        from bench import dashboard_bench

        add("")
        add(dashboard_bench.markdown(dash))
    add("")

    # ---- targets
    add("## Targets")
    add("")
    add("Same run, medians of interleaved rounds; differences against bare mitmdump are medians of per-round "
        "differences. Halton Meter figures are the default path's (all its cores); `n/a`: not measured, or a "
        "quick run shorter than the target assumes.")
    add("")
    add("| target | limit | measured | result |")
    add("|---|---|---|---|")
    for name, limit, measured, ok in targets(results, s):
        result = "n/a" if ok is None else ("PASS" if ok else "**FAIL**")
        add(f"| {name} | {limit} | {measured} | {result} |")
    add("")
    if plan.get("quick"):
        add("_Quick run: fewer rounds, shorter windows, shorter idle and growth phases and a smaller `report` "
            "database than the targets assume; use the full run for the README._")
        add("")
    return "\n".join(lines)


def report_ms(rep: dict[str, Any]) -> float:
    for key in ("report_month_ms", "median_ms", "ms", "p50_ms"):
        if isinstance(rep.get(key), (int, float)):
            return float(rep[key])
    for key, value in rep.items():
        if "median" in key and key.endswith("ms") and isinstance(value, (int, float)):
            return float(value)
    for key, value in rep.items():
        if key.endswith("_ms") and isinstance(value, (int, float)):
            return float(value)
    for key in ("median_s", "seconds", "median_seconds"):
        if isinstance(rep.get(key), (int, float)):
            return float(rep[key]) * 1000
    return math.nan


def _worst(values: list[float], highest: bool = True) -> float:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan
    return max(values) if highest else min(values)


def _ok(value: float, limit: float, below: bool = True) -> bool | None:
    if math.isnan(value):
        return None
    return value <= limit if below else value >= limit


def targets(results: dict[str, Any], s: Summary) -> list[tuple[str, str, str, bool | None]]:
    """(target, limit, measured, verdict) rows; verdict None: not measured, or a run too short for it."""
    plan = results["plan"]
    paths = _paths(results)
    cs = list(plan["concurrencies"])
    out: list[tuple[str, str, str, bool | None]] = []
    meters = [p for p in METER_PATHS if p in paths]
    if not meters:
        return out
    mp = meters[0]  # the default meter (all its cores) when it ran, else the one-core meter
    name = LABEL[mp]
    sse_cs = list(plan.get("sse_concurrencies") or cs)
    low = [c for c in sse_cs if c <= 8]
    high = [c for c in sse_cs if c > 8]
    spacings = plan["sse_spacings"]
    mitm = "mitmdump" in paths

    def each(fn: Any, cset: list[int], digits: int = 2, signed: bool = False) -> str:
        return ", ".join(f"c{c}: {f(fn(c), digits, signed)}" for c in cset)

    def conc(cset: list[int]) -> str:
        return ", ".join(map(str, cset[:-1])) + (" and " if len(cset) > 1 else "") + str(cset[-1])

    # per call, against bare mitmdump in the same rounds
    if mitm:
        metering = {c: s.cpu_added(mp, "mitmdump", "json", c) for c in cs}
        out.append((f"Metering CPU per call ({name} − bare mitmdump, all processes), keep-alive JSON",
                    f"≤ {METERING_CPU_MS:g} ms at conc. {conc(cs)}", each(lambda c: metering[c], cs, 3, True) + " ms",
                    _ok(_worst(list(metering.values())), METERING_CPU_MS)))
        if 1 in cs:
            over = s.added(mp, "json", 1, "p50", "mitmdump")
            out.append(("Added p50 latency, keep-alive JSON, conc. 1", f"≤ bare mitmdump's + {ADDED_P50_MS:g} ms",
                        f"{f(over, signed=True)} ms over bare mitmdump (over direct: {name} "
                        f"{f(s.added(mp, 'json', 1, 'p50'), signed=True)} ms, bare mitmdump "
                        f"{f(s.added('mitmdump', 'json', 1, 'p50'), signed=True)} ms)", _ok(over, ADDED_P50_MS)))
        firsts = {(sp, c): s.added(mp, f"sse{sp}", c, "first_p50", "mitmdump") for sp in spacings for c in sse_cs}
        if low:
            v = _worst([firsts[(sp, c)] for sp in spacings for c in low])
            out.append((f"SSE first event p50, conc. {conc(low)}", f"≤ bare mitmdump's + {SSE_FIRST_MS:g} ms "
                        "(each spacing)", "; ".join(f"{sp} ms: " + each(lambda c, sp=sp: firsts[(sp, c)], low,
                                                                           signed=True) for sp in spacings)
                        + " ms over bare mitmdump", _ok(v, SSE_FIRST_MS)))
        if high and 0 in spacings:
            v = _worst([firsts[(0, c)] for c in high])
            out.append((f"SSE first event p50, {max(high)}-stream burst (0 ms spacing)", "≤ bare mitmdump's",
                        each(lambda c: firsts[(0, c)], high, signed=True) + " ms over bare mitmdump ("
                        + ", ".join(f"c{c}: {name} {f(s.value(mp, 'sse0', c, 'first_p50'))} ms, bare mitmdump "
                                    f"{f(s.value('mitmdump', 'sse0', c, 'first_p50'))} ms" for c in high) + ")",
                        _ok(v, 0.0)))
    paced = [sp for sp in spacings if sp > 0]
    if paced:
        sp = paced[0]
        spreads = {c: s.value(mp, f"sse{sp}", c, "spread_p50") for c in sse_cs}
        verdicts = [unbuffered(s, mp, sp, c) for c in sse_cs]
        known = [v for v in verdicts if v is not None]
        out.append(("SSE never buffered", f"events stay spread out: first→last ≥ {0.5 * (EVENTS - 1) * sp:.0f} ms "
                    f"({sp} ms spacing)", ", ".join(f"c{c}: {f(spreads[c], 0)} ms" for c in sse_cs),
                    all(known) if known else None))
    # throughput, against bare mitmdump in the same rounds
    if mitm:
        thr = {c: s.ratio(mp, "json", c, "rps", "mitmdump") for c in cs}
        if 1 in cs:
            out.append(("Throughput vs bare mitmdump, keep-alive JSON, conc. 1", f"≥ {THROUGHPUT_C1:.0%}",
                        f"c1: {_pct(thr[1])}", _ok(thr[1], THROUGHPUT_C1, below=False)))
        many = [c for c in cs if c > 1]
        if many and mp == "meter":
            n = cores(results, mp)
            out.append((f"Throughput vs bare mitmdump, keep-alive JSON, conc. {conc(many)} ({n} core"
                        f"{'s' if n != 1 else ''})", f"≥ {THROUGHPUT_MANY:.0%}",
                        ", ".join(f"c{c}: {_pct(thr[c])}" for c in many),
                        _ok(_worst([thr[c] for c in many], highest=False), THROUGHPUT_MANY, below=False)))
        if mp != "meter1" and "meter1" in meters:
            one = {c: s.ratio("meter1", "json", c, "rps", "mitmdump") for c in cs}
            out.append((f"Throughput vs bare mitmdump, keep-alive JSON: {LABEL['meter1']} (for context)", "no target",
                        ", ".join(f"c{c}: {_pct(one[c])}" for c in cs), None))
    # footprint
    idle_after = results.get("rss_idle_after_kb", {})
    idle_start = results.get("rss_idle_start_kb", {})
    peak = results.get("rss_peak_run_kb", {})

    def idle_mb(path: str, role: str) -> float:
        key = proc_key(path, role)
        return max(idle_after.get(key, 0), idle_start.get(key, 0)) / 1024

    core_rss = {p: {r: idle_mb(p, r) for r in path_roles(results, p) if is_core_role(r)} for p in meters}
    worst_core = _worst([mb for per in core_rss.values() for mb in per.values()] or [math.nan])
    out.append(("Core RSS idle, per core process", f"≤ {CORE_RSS_MB:g} MB each",
                "; ".join(f"{LABEL[p]}: " + ", ".join(f"{role_label(r)} {mb:.1f}" for r, mb in per.items())
                          for p, per in core_rss.items()) + " MB (the larger of after start and after load)",
                _ok(worst_core, CORE_RSS_MB)))
    edge_rss = {p: max(peak.get(proc_key(p, "edge"), 0), idle_after.get(proc_key(p, "edge"), 0)) / 1024
                for p in meters}
    out.append(("Edge RSS", f"≤ {EDGE_RSS_MB:g} MB", "; ".join(
        f"{LABEL[p]} {mb:.1f} MB peak (idle {idle_start.get(proc_key(p, 'edge'), 0) / 1024:.1f})"
        for p, mb in edge_rss.items()), _ok(max(edge_rss.values()), EDGE_RSS_MB)))
    growth = results.get("growth")
    if growth:
        g = {k: v / 1024 for k, v in growth["growth_kb"].items() if k == "edge" or is_core_role(k)}
        full = growth["calls"] >= 50_000
        out.append((f"No RSS growth over {growth['calls']:,} calls ({LABEL[growth.get('path', 'meter')]})",
                    f"≤ {GROWTH_TOLERANCE_MB:g} MB per process (50,000 calls)",
                    ", ".join(f"{role_label(k)} {v:+.1f} MB" for k, v in g.items()),
                    _ok(max(g.values()), GROWTH_TOLERANCE_MB) if full else None))
    idle_cpu = results.get("idle_cpu_pct")
    if idle_cpu:
        totals = {p: sum(idle_cpu.get(proc_key(p, r), 0) for r in path_roles(results, p)) for p in meters}
        full = results.get("idle_seconds", 0) >= 60
        out.append((f"Idle CPU (edge + every core + serve) over {results.get('idle_seconds', 0):g} s",
                    f"≤ {IDLE_CPU_PCT:g}% per meter", "; ".join(
                        f"{LABEL[p]} {total:.3f}% (" + ", ".join(f"{role_label(r)} {idle_cpu.get(proc_key(p, r), 0):.3f}"
                                                                  for r in path_roles(results, p)) + ")"
                        for p, total in totals.items()), _ok(max(totals.values()), IDLE_CPU_PCT) if full else None))
    cold = results.get("cold_start")
    if cold:
        out.append(("`halton-meter --help` cold start", "≤ 150 ms", f"{cold['help_ms']:.0f} ms median",
                    _ok(cold["help_ms"], 150)))
    rep = results.get("report_month")
    if rep and "error" not in rep and not rep.get("skipped"):
        n = int(rep.get("calls", rep.get("n_calls", 0)))
        ms = report_ms(rep)
        out.append((f"`report --month` over {n:,} calls", "≤ 250 ms (1,000,000 calls)", f"{f(ms, 0)} ms",
                    _ok(ms, 250) if n >= 1_000_000 else None))
    else:
        out.append(("`report --month` over 1,000,000 calls", "≤ 250 ms", "not measured", None))
    dash = results.get("dashboard")
    if dash and "charts_ms" in dash:
        n = int(dash["calls"])
        worst_chart = max(dash["charts_ms"].values())
        worst_page = max(dash["pages_ms"].values())
        out.append((f"Dashboard overview/chart request over {n:,} calls (slowest)", "≤ 100 ms (1,000,000 calls)",
                    f"{f(worst_chart, 0)} ms", _ok(worst_chart, 100) if n >= 1_000_000 else None))
        out.append((f"Explorer first page, any single filter, over {n:,} calls (slowest)", "≤ 50 ms (1,000,000 calls)",
                    f"{f(worst_page, 0)} ms", _ok(worst_page, 50) if n >= 1_000_000 else None))
    checks = results.get("rows_checks", [])
    top = max(cs)
    for p in meters:
        mine = [c for c in checks if c.get("path", "meter") == p]
        if not mine:
            out.append((f"Zero lost rows, {LABEL[p]}", "rows = calls, 0 gaps", "not checked", None))
            continue
        bad = [c for c in mine if not c["ok"]]
        out.append((f"Zero lost rows, {LABEL[p]} (every measurement, conc. up to {top})", "rows = calls, 0 gaps",
                    f"{mine[-1]['rows']:,} rows for {mine[-1]['calls']:,} calls; {len(bad)} of {len(mine)} "
                    "checks failed", not bad))
    return out
