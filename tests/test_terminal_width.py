"""Output at 60, 80, 100 and 160 columns: `calls` never cuts a cost, a token count or a time (names give way,
then low-value columns, as `calls_layout` says), `report` and `doctor` wrap within the width and
cut nothing. Golden files for `calls` at 80 columns are in tests/golden/calls/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from reportkit import call, local_zone, write
from rich.cells import cell_len

from halton_meter import terminal
from halton_meter.cli.calls import calls_layout
from halton_meter.paths import Paths

GOLDEN = Path(__file__).parent / "golden" / "calls"
UPDATE = os.environ.get("HALTON_METER_UPDATE_GOLDEN") == "1"
WIDTHS = (60, 80, 100, 160)
LONG_MODEL = "claude-sonnet-4-5-20250929-with-a-remarkably-long-suffix"
LONG_PROJECT = "a-project-with-a-remarkably-long-name-that-goes-on-and-on"


@pytest.fixture
def new_york():
    with local_zone("America/New_York"):
        yield


def long_calls() -> list:
    return [
        call("2026-11-20T15:00:00.000000Z", id="big", model=LONG_MODEL, project=LONG_PROJECT, status=200,
             input_tokens=1_234_567, output_tokens=7_654_321, cache_read_tokens=2_345_678,
             cache_write_tokens=3_456_789, cost_nanos=1_234_567_890_000_000),
        call("2026-11-20T16:05:00.000000Z", id="err", model="gpt-5", provider="openai", project="beta",
             status=429, error_type="http_429", complete=False, input_tokens=9_876_543, output_tokens=0,
             cost_nanos=4_500_000),
        call("2026-11-20T16:10:00.000000Z", id="live", model=LONG_MODEL, project=LONG_PROJECT, status=None,
             complete=False, incomplete_reason="in_progress", input_tokens=5_555_555, output_tokens=6_666_666,
             cost_nanos=None, priced=False),
    ]


def typical_calls() -> list:
    return [
        call("2026-11-20T15:00:00.000000Z", project="halton-meter", input_tokens=12_345, output_tokens=2_345,
             cache_read_tokens=45_678, cache_write_tokens=1_234, cost_nanos=45_600_000, status=200),
        call("2026-11-20T15:05:00.000000Z", project="acme-web", model="gpt-5-mini", provider="openai",
             input_tokens=3_456, output_tokens=120, cost_nanos=1_200_000, status=200, client="cursor"),
        call("2026-11-20T16:00:00.000000Z", project="data-pipeline", model="gpt-5", provider="openai", status=429,
             error_type="http_429", complete=False, client="cursor"),
        call("2026-11-20T16:10:00.000000Z", project="halton-meter", model="gemini-2.5-pro", provider="gemini",
             input_tokens=234_567, output_tokens=3_456, cost_nanos=312_000_000, status=200),
    ]


def figures(records: list) -> list[str]:
    """Every figure `calls` must show whole: token counts, costs, and the time of day."""
    out = []
    for r in records:
        out += [terminal.tokens(r.input_tokens), terminal.tokens(r.output_tokens),
                terminal.tokens(r.cache_read_tokens), terminal.tokens(r.cache_write_tokens),
                terminal.money(r.cost_nanos), terminal.local_time(r.started_at)[11:]]
    return out


def whole(figure: str, text: str) -> bool:
    """`figure` appears with no digit, comma or point glued to either side (so not as part of a cut one)."""
    return re.search(rf"(?<![\d,.]){re.escape(figure)}(?![\d,.]|…)", text) is not None


def widest(text: str) -> int:
    return max((cell_len(line) for line in text.splitlines()), default=0)


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


# ---- calls ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("data", [long_calls, typical_calls])
def test_calls_never_cut_a_figure(cli, paths, monkeypatch, new_york, width: int, data) -> None:
    records = data()
    write(paths.db, records)
    monkeypatch.setenv("COLUMNS", str(width))
    result = cli("calls")
    assert result.exit_code == 0, result
    assert widest(result.stdout) <= width, result.stdout
    for figure in figures(records):
        assert whole(figure, result.stdout), f"{figure} cut at {width} columns:\n{result.stdout}"
    assert "unpriced" in result.stdout or data is typical_calls


def test_calls_give_way_in_the_documented_order(new_york) -> None:
    records = typical_calls()

    def names(width: int) -> list[str]:
        columns, _ = calls_layout(records, width)
        return [c.name for c in columns]

    full = ["time", "provider", "model", "in", "cache r/w", "out", "cost", "project", "status"]
    assert names(160) == full
    time_column = calls_layout(records, 160)[0][0]
    assert time_column.cells[0] == "2026-11-20 10:00:00"  # all there is room for: the year too
    assert calls_layout(records, 80)[0][0].cells[0] == "11-20 10:00:00"
    assert names(80) == [n for n in full if n != "provider"]  # the provider goes before any name is cut
    narrow, _ = calls_layout(records, 60)
    assert [c.name for c in narrow] == ["time", "model", "in", "cache r/w", "out", "cost", "project"]
    assert narrow[0].cells[0] == "11-20\n10:00:00"
    at_80 = {c.name: c for c in calls_layout(records, 80)[0]}
    assert at_80["status"].width == 8 and at_80["model"].width > at_80["project"].width  # status gives way first
    only_figures, _ = calls_layout(long_calls(), 40)  # nothing fits: figures, never cut
    assert [c.name for c in only_figures] == ["time", "in", "cache r/w", "out", "cost"]


@pytest.mark.parametrize(("name", "data"), [("80.txt", typical_calls), ("80-long.txt", long_calls)])
def test_calls_golden_at_80_columns(cli, paths, monkeypatch, new_york, name: str, data) -> None:
    write(paths.db, data())
    monkeypatch.setenv("COLUMNS", "80")
    result = cli("calls")
    text = "".join(line.rstrip() + "\n" for line in result.stdout.splitlines())  # rich pads the last column
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing {path}: run with HALTON_METER_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} differs (HALTON_METER_UPDATE_GOLDEN=1 regenerates it)"


def test_calls_piped_without_columns_uses_80_and_cuts_no_figure(paths) -> None:
    records = long_calls()
    write(paths.db, records)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env.update(HALTON_METER_HOME=str(paths.home), TZ="America/New_York")
    result = subprocess.run([sys.executable, "-m", "halton_meter", "calls"], env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert widest(result.stdout) <= 80, result.stdout  # no terminal anywhere: rich's 80
    with local_zone("America/New_York"):
        expected = figures(records)
    for figure in expected:
        assert whole(figure, result.stdout), f"{figure} cut:\n{result.stdout}"


# ---- report --------------------------------------------------------------------------------------------


def report_calls() -> list:
    days = [call(f"2026-11-{day:02d}T15:00:00.000000Z", project=LONG_PROJECT if day % 2 else "beta",
                 model=LONG_MODEL, input_tokens=1_234_567 * day, output_tokens=7_654 * day,
                 cost_nanos=123_456_789_000 * day) for day in range(1, 31)]
    return days


@pytest.mark.parametrize("width", [60, 80])
def test_report_fits_the_width_and_keeps_every_total(cli, paths, monkeypatch, width: int) -> None:
    write(paths.db, report_calls())
    monkeypatch.setenv("COLUMNS", str(width))
    window = ["--since", "2026-11-01T00:00:00Z", "--until", "2026-12-01T00:00:00Z"]
    out = cli("report", *window, "--by", "project,model").stdout
    data = json.loads(cli("report", *window, "--json").stdout)
    assert widest(out) <= width, out
    total = terminal.usd_short(data["totals"]["cost_usd"])
    assert total in out and re.search(rf"^total .*{re.escape(total)}", out, re.M), out
    trend = [line for line in out.splitlines() if line.startswith("cost/day")]
    assert len(trend) == 1 and "· max $" in trend[0], out  # the trend line fits on one line
    totals = data["totals"]
    for figure in (terminal.compact(totals["input_tokens"]), terminal.compact(totals["output_tokens"])):
        assert whole(figure, out), out


# ---- doctor --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [60, 80])
def test_doctor_wraps_within_the_width_and_cuts_nothing(cli, paths: Paths, monkeypatch, tmp_path: Path,
                                                        width: int) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    data: dict[str, Any] = json.loads(cli("doctor", "--json").stdout)
    monkeypatch.setenv("COLUMNS", str(width))
    result = cli("doctor")
    assert result.exit_code == 6
    assert widest(result.stdout) <= width, result.stdout
    text = squeeze(result.stdout)
    for check in data["checks"]:
        assert squeeze(check["summary"]) in text, check
        if check["fix"] and check["status"] not in ("ok", "skip"):
            assert squeeze(check["fix"]) in text, check
    lines = result.stdout.splitlines()
    edge = next(i for i, line in enumerate(lines) if "proxy (edge)" in line)
    summary = {c["title"]: c for c in data["checks"]}["proxy (edge)"]["summary"]
    start = lines[edge].index(summary.split()[0])
    if not lines[edge + 1].lstrip().startswith("fix:"):  # wrapped: it goes on under where it started
        assert lines[edge + 1].startswith(" " * start) and lines[edge + 1][start] != " "


def test_a_dead_api_says_the_dashboard_depends_on_it(paths: Paths) -> None:
    """The dashboard is served by the API: the check that finds the API dead says so, and gives a command."""
    from halton_meter.config import Config
    from halton_meter.types import CheckContext
    from halton_meter_checks import meter as meter_checks

    paths.home.mkdir(parents=True)
    paths.runtime.write_text(json.dumps({"api_port": 9, "edge_port": 9, "pid": 1}))  # nothing answers on 9
    result = meter_checks.check_api(CheckContext(paths=paths, config=Config(paths=paths), environ={}))
    assert result.status == "fail" and result.fix.startswith("halton-meter ")
    assert "the dashboard" in result.summary and "metering goes on" in result.summary
