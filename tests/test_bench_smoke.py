"""The benchmark harness (bench/) on a tiny load: every path, every kind of figure, in well under 20 s.

It checks that the harness measures real things, not that the meter is fast: the numbers are positive and
finite, every call through Halton Meter landed as exactly one complete row, bare mitmdump and the plain
tunnel really carried the traffic (their own CPU moved), and streams arrive unbuffered on every path (the
first of 50 events 20 ms apart arrives long before the last). Halton Meter runs twice: with two cores
(`meter`: the first core and core worker 1, both measured) and forced to one (`meter1`).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ lives at the repository root, next to tests/
    sys.path.insert(0, str(ROOT))

from bench import table  # noqa: E402
from bench.run import PATHS, Plan, run  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

TINY = Plan(
    rounds=1,
    concurrencies=(1, 4),
    json_seconds=0.2,
    json_warmup=1,
    sse_spacings=(20,),
    sse_concurrencies=(2,),
    sse_streams={20: {2: 1}},
    newconn_calls=3,
    idle_seconds=0.3,
    growth_calls=40,
    growth_concurrency=2,
    help_runs=1,
    report_calls=0,
    quick=True,
    meter_workers="2",  # explicit: tests/conftest.py gives every other test's meter one core
    pause_after_warmup=0.2,
    pause_after_rounds=0.2,
)


def finite_positive(value: float) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run(TINY, skip={"cold", "report"}, log=lambda *_: None, workdir=tmp_path_factory.mktemp("bench"))


def test_every_path_and_scenario_was_measured_without_errors(results) -> None:
    seen = {(r["path"], r["scenario"], r["c"]) for r in results["records"]}
    expected = {(p, s, c) for p in PATHS for s, c in
                [("json", 1), ("json", 4), ("sse20", 2), ("newconn", 1)]}
    assert seen == expected
    for rec in results["records"]:
        assert rec["errors"] == 0, rec
        assert rec["completed"] == rec["calls"] > 0, rec
        assert finite_positive(rec["rps"]) and finite_positive(rec["p50"]) and finite_positive(rec["p99"]), rec
        assert rec["p50"] <= rec["p99"] < 30


def test_every_core_of_the_meter_is_found_and_measured(results) -> None:
    assert results["cores"] == {"meter": 2, "meter1": 1}
    assert results["roles"] == {"meter": ["edge", "core", "worker1", "serve"], "meter1": ["edge", "core", "serve"]}
    by_path = {path: [r for r in results["records"] if r["path"] == path] for path in ("meter", "meter1")}
    for rec in by_path["meter"]:
        assert table.record_roles(rec) == ("edge", "core", "worker1", "serve"), rec
    for rec in by_path["meter1"]:
        assert table.record_roles(rec) == ("edge", "core", "serve"), rec
    # the edge spreads connections over both cores: the worker carried some of the calls
    assert sum(r["cpu_ms"]["worker1"] for r in by_path["meter"]) > 0
    s = table.Summary(results["records"])
    for c in (1, 4):
        every = s.cpu("meter", "json", c)
        parts = sum(s.cpu("meter", "json", c, (role,)) for role in ("edge", "core", "worker1", "serve"))
        assert every == pytest.approx(parts)  # one round: the median of one sum is the sum of the parts
        assert math.isfinite(s.cpu_workers("meter", "json", c)) and math.isnan(s.cpu_workers("meter1", "json", c))


def test_proxy_cpu_and_memory_come_from_the_proxies_themselves(results) -> None:
    for rec in results["records"]:
        roles = table.record_roles(rec)
        for role in roles:
            assert math.isfinite(rec["cpu_ms"][role]) and rec["cpu_ms"][role] >= 0, rec
            assert rec["rss_peak_kb"][role] > 1024, rec  # a real Python process: more than 1 MB
        if rec["path"] in ("tunnel", "mitmdump"):
            assert rec["cpu_ms"][roles[0]] > 0, rec  # the traffic really went through it
        if rec["path"] in ("meter", "meter1"):
            assert rec["cpu_ms"]["core"] + rec["cpu_ms"].get("worker1", 0) > 0 and rec["cpu_ms"]["edge"] > 0, rec
            assert 0 <= rec["cpu_ms"]["core:main"] <= rec["cpu_ms"]["core"] + 1e-6, rec
    names = ("edge", "core", "worker1", "serve", "meter1.edge", "meter1.core", "meter1.serve", "tunnel", "mitmdump")
    assert set(results["rss_idle_start_kb"]) == set(names)
    for name in names:
        assert results["rss_idle_start_kb"][name] > 1024
        assert results["rss_peak_run_kb"][name] >= results["rss_idle_start_kb"][name] * 0.5
    assert set(results["idle_cpu_pct"]) >= {"edge", "core", "worker1", "serve", "meter1.edge", "meter1.core",
                                            "meter1.serve"}
    assert all(v >= 0 for v in results["idle_cpu_pct"].values())


def test_streams_arrive_unbuffered_on_every_path(results) -> None:
    for rec in results["records"]:
        if rec["scenario"] != "sse20":
            continue
        # 50 events 20 ms apart: the fake sends the last 980 ms after the first. A buffering proxy would
        # hand them over all at once, at the end.
        assert 0 < rec["first_p50"] < 0.2, rec
        assert 0.9 < rec["last_p50"] < 5, rec
        assert 0.8 < rec["spread_p50"] < 2, rec
        assert rec["first_p50"] < rec["last_p50"] / 4, rec
        assert table.unbuffered(table.Summary([rec]), rec["path"], 20, rec["c"]) is True


def test_every_metered_call_landed_as_one_complete_row(results) -> None:
    checks = results["rows_checks"]
    assert checks and all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]
    for path in ("meter", "meter1"):  # each meter its own database, each checked after every measurement
        mine = [c for c in checks if c["path"] == path]
        last = mine[-1]
        assert last["rows"] == last["calls"] == last["complete"] == results["meter_calls"][path] > 0
        assert last["gaps"] == 0 and last["in_progress"] == 0
        assert results["unmetered_calls"][path] == 0
        assert results["stats"][path]["edge"]["passthrough"] == 0 and results["stats"][path]["edge"]["metered"] > 0
        measured = [r for r in results["records"] if r["path"] == path]
        assert len(mine) == len(measured) + 1 + (path == "meter")  # + warm-up (+ growth)
        meter_calls = sum(r["calls"] for r in measured)
        assert results["meter_calls"][path] >= meter_calls + (results["growth"]["calls"] if path == "meter" else 0)
    assert all(r.get("gaps", 0) == 0 and r.get("unmetered_calls", 0) == 0 for r in results["records"])
    assert results["edge_stats"] == results["stats"]["meter"]["edge"]
    growth = results["growth"]
    assert growth["path"] == "meter" and growth["calls"] == TINY.growth_calls and growth["errors"] == 0
    assert len(growth["checkpoints"]) >= 2
    assert all(cp["core"] > 0 and cp["worker1"] > 0 for cp in growth["checkpoints"])
    assert set(growth["growth_kb"]) == {"edge", "core", "worker1", "serve"}


def test_the_report_has_every_section_and_a_verdict_per_target(results) -> None:
    text = table.render(results)
    for heading in ("Keep-alive JSON calls", "SSE streams", "New connection per call", "Proxy CPU per call",
                    "Footprint", "Rows = calls", "Targets"):
        assert f"## {heading}" in text
    assert "Halton Meter runs 2 cores" in text
    assert "| Halton Meter: core worker 1 |" in text and "| Halton Meter, 1 core: core |" in text
    assert "worker" not in " ".join(line for line in text.splitlines() if line.startswith("| Halton Meter, 1 core:"))
    assert "| workers |" in text and "| json | 4 | Halton Meter |" in text and "| json | 4 | Halton Meter, 1 core |" in text
    targets = table.targets(results, table.Summary(results["records"]))
    names = [t[0] for t in targets]
    for start in ("Metering CPU per call", "Added p50 latency", "SSE first event p50, conc. 2", "SSE never buffered",
                  "Throughput vs bare mitmdump, keep-alive JSON, conc. 1",
                  "Throughput vs bare mitmdump, keep-alive JSON, conc. 4 (2 cores)",
                  "Throughput vs bare mitmdump, keep-alive JSON: Halton Meter, 1 core (for context)", "Core RSS idle, per core process", "Edge RSS",
                  "No RSS growth", "Idle CPU (edge + every core + serve)"):
        assert any(n.startswith(start) for n in names), (start, names)
    core_rss = next(t for t in targets if t[0].startswith("Core RSS idle"))
    assert "core worker 1" in core_rss[2] and "Halton Meter, 1 core: core" in core_rss[2]
    zero_lost = [t for t in targets if t[0].startswith("Zero lost rows")]
    assert [t[0].split(" (")[0] for t in zero_lost] == ["Zero lost rows, Halton Meter",
                                                        "Zero lost rows, Halton Meter, 1 core"]
    assert all(t[3] is True for t in zero_lost)
    for name, _, measured, _ in targets:
        assert "nan" not in measured.lower(), (name, measured)


def test_writer_bench_measures_written_rows_and_the_sustained_rate() -> None:
    from bench import writer

    burst = writer.measure(40, 8)
    assert burst["rows"] == 40 and burst["batches"] >= 10  # every row written, provisional ones too
    assert 0 < burst["cpu_ms_per_row"] < 1000 and math.isfinite(burst["wall_ms_per_row"])
    sustained = writer.sustained(400)
    assert sustained["rows"] == 400 and sustained["rows_per_s"] > 0 and sustained["batches"] >= 1
    assert 0 < sustained["cpu_ms_per_row"] < 1000
    from halton_meter.store import writer as writer_module

    assert writer_module.PROVISIONAL_HOLD_SECONDS == 1.0  # measure() gives the hold back
