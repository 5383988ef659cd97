"""`halton-meter demo`, run as a user runs it: a subprocess with its own HOME, HALTON_METER_HOME and TMPDIR.

What it must show (the calls table, and a report whose totals equal a hand calculation from the demo's fixed
token counts and the list prices), what it must leave behind (nothing, or with --keep its home), and what it
must never touch (the user's home, byte for byte, and a meter already running for the user). Ctrl-C is exit
130 with one line, no traceback, no temporary home and no process left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
import pytest
from reportkit import call, write

from halton_meter import terminal
from halton_meter.config import Config
from halton_meter.paths import Paths
from halton_meter.pricing import Pricer
from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import Reply
from halton_meter.testing.meter import MeterProcess

pytestmark = pytest.mark.e2e

DEMO_TIMEOUT = 60.0
MUST_FINISH_WITHIN = 30.0

# Prices per million tokens: claude-sonnet-4-5 from Anthropic's price list, gpt-4o as genai-prices has it
# (checked below, so a change in the bundled data fails here by name rather than as a wrong total).
SONNET = {"input": Decimal("3"), "output": Decimal("15"), "cache_read": Decimal("0.30"), "cache_write": Decimal("3.75")}
GPT_4O = {"input": Decimal("2.50"), "output": Decimal("10"), "cache_read": Decimal("1.25")}

# The demo's calls as a user would read them off its source: (project, model, prices, uncached input,
# cache read, cache write, output). OpenAI's prompt_tokens include the cached ones: 3,400 with 3,072 cached
# is 328 uncached.
CALLS = [
    ("demo-api", "claude-sonnet-4-5-20250929", SONNET, 1850, 0, 0, 420),
    ("demo-api", "claude-sonnet-4-5-20250929", SONNET, 45, 0, 12000, 610),
    ("demo-api", "claude-sonnet-4-5-20250929", SONNET, 80, 12000, 0, 530),
    ("demo-api", "claude-sonnet-4-5-20250929", SONNET, 60, 12000, 2400, 380),
    ("demo-web", "gpt-4o-2024-08-06", GPT_4O, 3200, 0, 0, 450),
    ("demo-web", "gpt-4o-2024-08-06", GPT_4O, 3400 - 3072, 3072, 0, 290),
    ("demo-web", "gpt-4o-2024-08-06", GPT_4O, 3000 - 2304, 2304, 0, 250),
    ("demo-web", "claude-sonnet-4-5-20250929", SONNET, 900, 0, 0, 240),
]
MILLION = Decimal(1_000_000)


def cost(prices: dict[str, Decimal], uncached: int, read: int, written: int, out: int) -> Decimal:
    return (uncached * prices["input"] + read * prices["cache_read"] + written * prices.get("cache_write", 0)
            + out * prices["output"]) / MILLION


def saved(prices: dict[str, Decimal], read: int) -> Decimal:
    """What cache reads saved: the same tokens at the plain input price, minus what they cost."""
    return read * (prices["input"] - prices["cache_read"]) / MILLION


def totals(calls: list[tuple[Any, ...]]) -> dict[str, Any]:
    return {
        "calls": len(calls),
        "input_tokens": sum(c[3] for c in calls),
        "cache_read_tokens": sum(c[4] for c in calls),
        "cache_write_tokens": sum(c[5] for c in calls),
        "output_tokens": sum(c[6] for c in calls),
        "cost": sum((cost(c[2], *c[3:]) for c in calls), Decimal(0)),
        "saved": sum((saved(c[2], c[4]) for c in calls), Decimal(0)),
    }


EXPECTED = totals(CALLS)


def nanos(usd: Decimal) -> int:
    return int(usd * 1_000_000_000)


def test_the_hand_calculation_uses_the_prices_the_meter_has() -> None:
    pricer = Pricer(Config(paths=Paths(Path("/nonexistent"))))
    for provider, model, prices in (("anthropic", "claude-sonnet-4-5-20250929", SONNET),
                                    ("openai", "gpt-4o-2024-08-06", GPT_4O)):
        sheet = pricer.sheet(provider, provider, model)
        assert sheet is not None, model
        for key, price in prices.items():
            assert getattr(getattr(sheet, key), "base", getattr(sheet, key)) == price, (model, key, sheet.source)
    assert EXPECTED["cost"] == Decimal("0.129885") and EXPECTED["saved"] == Decimal("0.07152")


# --------------------------------------------------------------------------------------------------
# Running the demo as a user would
# --------------------------------------------------------------------------------------------------


def user_world(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """An environment whose HOME holds a user's own meter home (a config and a database with a call), and
    whose TMPDIR starts empty; returns (env, HALTON_METER_HOME, TMPDIR)."""
    home = tmp_path / "user"
    meter_home = home / ".halton-meter"
    meter_home.mkdir(parents=True, mode=0o700)
    (meter_home / "config.toml").write_text("[edge]\nport = 18081\n\n[api]\nport = 18765\n")
    write(meter_home / "db.sqlite", [call(project="my-own-project")])
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy")}
    env.update(HOME=str(home), HALTON_METER_HOME=str(meter_home), TMPDIR=str(tmpdir), NO_COLOR="1",
               COLUMNS="160", PYTHONUNBUFFERED="1")
    return env, meter_home, tmpdir


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every file and directory under `root`: mode, modification time and (for files) content."""
    found: dict[str, tuple[int, int, bytes | None]] = {}
    for path in sorted([root, *root.rglob("*")]):
        stat = path.lstat()
        found[str(path.relative_to(root))] = (stat.st_mode, stat.st_mtime_ns,
                                              path.read_bytes() if path.is_file() else None)
    return found


def run_demo(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "halton_meter", "demo", *args], env=env, capture_output=True,
                            text=True, timeout=DEMO_TIMEOUT, stdin=subprocess.DEVNULL)
    return result, time.monotonic() - began


def demo_root(stdout: str) -> Path:
    """The temporary directory the demo announced (its home is `home` inside it)."""
    match = re.search(r"^→ temporary home (\S+)$", stdout, re.MULTILINE)
    assert match, stdout
    home = Path(match.group(1))
    assert home.name == "home" and home.parent.name.startswith("halton-meter-demo-")
    return home.parent


def section(stdout: str, command: str) -> str:
    """What the demo printed under `$ halton-meter COMMAND`: up to the next command or its explanation."""
    start = stdout.index(f"$ halton-meter {command}\n") + len(f"$ halton-meter {command}\n")
    end = min(i for i in (stdout.find("\n$ halton-meter ", start), stdout.find("\nWhat you are looking at", start))
              if i >= 0)
    return stdout[start:end].strip("\n")


def test_demo_shows_calls_and_a_report_that_adds_up_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env, meter_home, tmpdir = user_world(tmp_path)
    before = snapshot(Path(env["HOME"]))

    result, took = run_demo(env)

    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stderr == ""
    assert took < MUST_FINISH_WITHIN, f"the demo took {took:.1f}s"
    out = result.stdout

    # The calls table: its header and one row per call, each with the hand-calculated cost.
    table = section(out, "calls").splitlines()
    assert re.match(r"time\s+provider\s+model\s+in\s+cache r/w\s+out\s+cost\s+project\s+status$", table[0].strip())
    rows = table[1:]
    assert len(rows) == len(CALLS)
    for row, (project, model, prices, uncached, read, written, output) in zip(rows, CALLS, strict=True):
        provider = "anthropic" if model.startswith("claude") else "openai"
        assert row.split()[2:] == [  # after the date and the time
            provider, model, terminal.tokens(uncached), f"{terminal.tokens(read)}/{terminal.tokens(written)}",
            terminal.tokens(output), terminal.money(nanos(cost(prices, uncached, read, written, output))), project,
            "200",
        ], row

    # The report: totals, tokens and the per-project subtotals, as the hand calculation says.
    report = section(out, "report --by project,model")
    assert (f"{EXPECTED['calls']} calls · cost {terminal.usd_short(str(EXPECTED['cost']))} · "
            f"cache saved {terminal.usd_short(str(EXPECTED['saved']))}") in report
    assert (f"tokens   {terminal.compact(EXPECTED['input_tokens'])} in · {terminal.compact(EXPECTED['output_tokens'])} "
            f"out · {terminal.compact(EXPECTED['cache_read_tokens'])} cache read · "
            f"{terminal.compact(EXPECTED['cache_write_tokens'])} cache write") in report
    for label, calls in (("demo-api", [c for c in CALLS if c[0] == "demo-api"]),
                         ("demo-web", [c for c in CALLS if c[0] == "demo-web"]), ("total", CALLS)):
        sums = totals(calls)
        expected = [label, str(sums["calls"]), terminal.compact(sums["input_tokens"]),
                    terminal.compact(sums["output_tokens"]), terminal.compact(sums["cache_read_tokens"]),
                    terminal.usd_short(str(sums["cost"])), terminal.usd_short(str(sums["saved"]))]
        line = next(line for line in report.splitlines() if line.startswith(label + " "))
        assert line.split()[:7] == expected, line
    assert "  claude-sonnet-4-5-20250929 " in report and "  gpt-4o-2024-08-06 " in report

    # What it is, and what to do next.
    assert "What you are looking at" in out and "halton-meter init" in out and "halton-meter run -- claude" in out

    # Nothing left behind, and the user's own home is exactly as it was.
    assert not demo_root(out).exists()
    assert list(tmpdir.iterdir()) == []
    assert snapshot(Path(env["HOME"])) == before
    assert not (meter_home / "runtime.json").exists()


def test_demo_keep_leaves_its_home_and_a_meter_running_for_the_user_keeps_running(
    tmp_path: Path, fake_provider: Any
) -> None:
    env, meter_home, tmpdir = user_world(tmp_path)
    with MeterProcess.start(meter_home, fake_provider) as users_meter:
        runtime_before = (meter_home / "runtime.json").read_bytes()

        result, _ = run_demo(env, "--keep")

        assert result.returncode == 0, result.stderr + result.stdout
        root = demo_root(result.stdout)
        assert f"Kept the demo's home: {root / 'home'}" in result.stdout

        # The user's meter is the same process, on the same ports, and still meters (into its own database).
        assert users_meter.proc.poll() is None
        assert (meter_home / "runtime.json").read_bytes() == runtime_before
        fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=7, output_tokens=3)))
        with users_meter.client(extra_ca=fake_provider.ca_pem) as client:
            assert client.post("https://api.anthropic.com/v1/messages", json={"model": "claude-sonnet-4-5"}).status_code == 200
        seeded, new = users_meter.wait_for_calls(2)
        assert seeded["project"] == "my-own-project" and (new["input_tokens"], new["output_tokens"]) == (7, 3)
    # The user's database has the user's calls only: none of the demo's eight.
    assert [r["project"] for r in users_meter.rows()] == ["my-own-project", new["project"]]
    assert not new["project"].startswith("demo-")

    try:
        home = root / "home"
        assert home.stat().st_mode & 0o777 == 0o700 and root.stat().st_mode & 0o777 == 0o700
        assert not (home / "runtime.json").exists()  # its meter is stopped
        # The kept home answers `report --json` with exactly the hand-calculated totals.
        report = json.loads(subprocess.run(
            [sys.executable, "-m", "halton_meter", "report", "--json", "--by", "project"],
            env={**env, "HALTON_METER_HOME": str(home)}, capture_output=True, text=True, timeout=60, check=True,
        ).stdout)
        got = report["totals"]
        assert {k: got[k] for k in ("calls", "input_tokens", "cache_read_tokens", "cache_write_tokens",
                                    "output_tokens")} == {k: v for k, v in EXPECTED.items() if k not in ("cost", "saved")}
        assert Decimal(got["cost_usd"]) == EXPECTED["cost"] and Decimal(got["cache_savings_usd"]) == EXPECTED["saved"]
        assert got["unpriced_calls"] == 0 and got["incomplete_calls"] == 0 and got["error_calls"] == 0
        by_project = {group["project"]: group for group in report["groups"]}
        assert set(by_project) == {"demo-api", "demo-web"}
        for project, group in by_project.items():
            sums = totals([c for c in CALLS if c[0] == project])
            assert (group["calls"], Decimal(group["cost_usd"]), Decimal(group["cache_savings_usd"])) == (
                sums["calls"], sums["cost"], sums["saved"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert list(tmpdir.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------------------------------


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    ("stage", "how"),
    [
        ("starting a real meter", "ctrl-c"),   # serve started, not ready yet
        ("demo-api  anthropic messages", "ctrl-c"),  # mid-calls
        ("demo-api  anthropic messages", "sigterm"),
    ],
)
def test_interrupted_demo_is_one_line_exit_130_and_leaves_nothing(tmp_path: Path, stage: str, how: str) -> None:
    env, meter_home, tmpdir = user_world(tmp_path)
    before = snapshot(Path(env["HOME"]))
    # Its own session, so a Ctrl-C can go to the whole process group as a terminal sends it.
    demo = subprocess.Popen([sys.executable, "-m", "halton_meter", "demo"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        seen = []
        assert demo.stdout is not None
        for line in demo.stdout:
            seen.append(line)
            if stage in line:
                break
        else:
            pytest.fail(f"the demo ended before {stage!r}:\n{''.join(seen)}")
        deadline = time.monotonic() + 10
        while not _descendants(demo.pid) and time.monotonic() < deadline:  # serve is (being) started
            time.sleep(0.02)
        children = _descendants(demo.pid)
        assert children, "the demo started no meter"
        if how == "ctrl-c":
            os.killpg(demo.pid, signal.SIGINT)
        else:
            demo.send_signal(signal.SIGTERM)
        rest, err = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()

    assert demo.returncode == 130, err
    assert "Traceback" not in err and "Traceback" not in rest
    assert err.splitlines() == ["halton-meter: warning: demo interrupted: its meter is stopped and its temporary "
                                "home removed"]
    assert not demo_root("".join(seen)).exists()
    assert list(tmpdir.iterdir()) == []
    time.sleep(0.2)
    assert [(p.pid, p.cmdline()) for p in children if _alive(p)] == []
    assert snapshot(Path(env["HOME"])) == before


def test_demo_help(cli) -> None:
    result = cli("demo", "--help")
    assert result.exit_code == 0 and result.stdout.startswith("Usage: halton-meter demo")
    assert "--keep" in result.stdout
    assert "demo " in cli("--help").stdout
