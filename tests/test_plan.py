"""Plan limits read back (`halton_meter.plan`, `halton-meter plan`, `halton-meter blocks`, the status row):
the latest state per window, pace and projection at a fixed `now`, window instances (resets, Codex's jitter),
who used a window from utilization deltas (the shares add up exactly), past blocks, and the commands.

Every expectation is computed from the snapshots and calls the test wrote, never typed in."""

from __future__ import annotations

import datetime
import json
import random
import sqlite3
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from reportkit import call, write

from halton_meter import plan
from halton_meter.clock import utc_stamp
from halton_meter.paths import Paths
from halton_meter.store.schema import migrate
from halton_meter.terminal import compact
from halton_meter.types import CallRecord

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC).timestamp()
MIN = 60.0
HOUR = 3600.0


def snap_call(seen: float, utilization: float | None, resets: float | None, *, window: str = "5h",
              account: str = "fp1", provider: str = "anthropic", status: str | None = "allowed",
              project: str = "alpha", client: str = "claude-code", branch: str = "main", cost: int = 1_000_000,
              kind: str = "plan", minutes: int | None = 300, extra: Sequence[dict[str, Any]] = (),
              **fields: Any) -> CallRecord:
    """A call started 2 s before `seen`, whose response carried one snapshot of `window` (plus `extra`)."""
    snap = {"seen_at": utc_stamp(seen), "provider": provider, "account": account, "kind": kind, "window": window,
            "window_minutes": minutes, "utilization": utilization,
            "resets_at": utc_stamp(resets) if resets is not None else None, "status": status}
    extra_snaps = [{"seen_at": utc_stamp(seen), "provider": provider, "account": account, **e} for e in extra]
    return call(utc_stamp(seen - 2), provider=provider, key_fingerprint=account or None, project=project,
                client=client, branch=branch, cost_nanos=cost, plan=[snap, *extra_snaps], **fields)


def read(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def current(db: Path, now: float = NOW) -> list[plan.WindowState]:
    conn = read(db)
    try:
        return plan.current(conn, now)
    finally:
        conn.close()


def one(states: list[plan.WindowState], window: str = "5h", account: str = "fp1") -> plan.WindowState:
    found = [s for s in states if s.window == window and s.account == account]
    assert len(found) == 1, [(s.window, s.account) for s in states]
    return found[0]


def iso_epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---- current: latest state, pace, projection --------------------------------------------------------------

def test_current_reports_the_latest_snapshot_with_pace_and_projection(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    reset = NOW + 3 * HOUR
    history = [(NOW - 50 * MIN, 0.30), (NOW - 40 * MIN, 0.35), (NOW - 25 * MIN, 0.40), (NOW - 12 * MIN, 0.44),
               (NOW - 5 * MIN, 0.50)]
    write(db, [snap_call(t, u, reset, status="allowed" if u < 0.5 else "allowed_warning") for t, u in history])
    state = one(current(db))
    assert (state.utilization, state.resets_at, state.status) == (history[-1][1], utc_stamp(reset), "allowed_warning")
    assert not state.reset and state.kind == "plan" and not state.api and state.snapshots == len(history)
    recent = [(t, u) for t, u in history if NOW - plan.PACE_SPAN <= t <= NOW]
    pace = (recent[-1][1] - recent[0][1]) / ((recent[-1][0] - recent[0][0]) / HOUR)
    assert state.burn_per_hour == pytest.approx(pace)
    runs_out = NOW + (1 - history[-1][1]) / pace * HOUR  # projected from now: never a time in the past
    assert runs_out < reset
    assert iso_epoch(state.runs_out_at or "") == pytest.approx(runs_out, abs=1e-3)
    assert not state.outlasts_reset
    data = json.loads(json.dumps(state.to_json()))
    assert data["runs_out_at"] == state.runs_out_at and data["burn_per_hour"] == pytest.approx(pace)


def test_a_pace_that_would_outlast_the_reset_says_so(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    reset = NOW + 30 * MIN
    write(db, [snap_call(NOW - 20 * MIN, 0.40, reset), snap_call(NOW - 2 * MIN, 0.45, reset)])
    state = one(current(db))
    pace = 0.05 / (18 * MIN / HOUR)
    assert NOW + (1 - 0.45) / pace * HOUR > reset  # the data is what makes it outlast the reset
    assert state.burn_per_hour == pytest.approx(pace)
    assert state.runs_out_at is None and state.outlasts_reset


def test_pace_needs_two_snapshots_in_the_last_half_hour(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    reset = NOW + 3 * HOUR
    write(db, [snap_call(NOW - 90 * MIN, 0.10, reset), snap_call(NOW - 45 * MIN, 0.20, reset),
               snap_call(NOW - 10 * MIN, 0.30, reset)])
    state = one(current(db))
    assert state.burn_per_hour is None and state.runs_out_at is None and not state.outlasts_reset
    write(db, [snap_call(NOW - 25 * MIN, 0.26, reset)])  # a second snapshot within the half hour
    assert one(current(db)).burn_per_hour == pytest.approx((0.30 - 0.26) / (15 * MIN / HOUR))
    assert one(current(db, NOW + 16 * MIN)).burn_per_hour is None  # later, only one is recent again


def test_a_flat_pace_lasts_until_the_reset(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    reset = NOW + 2 * HOUR
    write(db, [snap_call(NOW - 20 * MIN, 0.61, reset), snap_call(NOW - 10 * MIN, 0.60, reset)])
    state = one(current(db))
    assert state.burn_per_hour is not None and state.burn_per_hour <= 0
    assert state.runs_out_at is None and state.outlasts_reset


def test_a_window_past_its_reset_shows_zero_and_reset(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    reset = NOW - 10 * MIN
    write(db, [snap_call(NOW - 40 * MIN, 0.80, reset), snap_call(NOW - 20 * MIN, 0.97, reset, status="rejected")])
    before = one(current(db, reset - 1))
    assert before.utilization == 0.97 and before.status == "rejected" and not before.reset
    after = one(current(db))
    assert after.reset and after.utilization == 0 and after.status is None
    assert after.runs_out_at is None and after.burn_per_hour is None and after.shares == {}


def test_unknown_windows_and_api_limits_are_kept_apart(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    write(db, [snap_call(NOW - 5 * MIN, 0.25, NOW + 20 * HOUR, window="30d_extra", minutes=None, extra=[
        {"kind": "api", "window": "requests", "limit_value": 50, "remaining": 10, "utilization": 0.8,
         "resets_at": utc_stamp(NOW + 30)},
        {"kind": "plan", "window": "unified", "status": "allowed", "resets_at": utc_stamp(NOW + 4 * HOUR),
         "claim": "five_hour"}])])
    states = current(db)
    unknown = one(states, "30d_extra")
    assert unknown.utilization == 0.25 and unknown.kind == "plan" and unknown.window_minutes == 30 * 1440
    api = one(states, "requests")
    assert api.api and (api.limit_value, api.remaining, api.utilization) == (50, 10, 0.8)
    assert api.shares == {} and api.burn_per_hour is None
    unified = one(states, "unified")
    assert unified.utilization is None and unified.claim == "five_hour" and unified.status == "allowed"
    assert [s.kind for s in states] == sorted((s.kind for s in states), key=lambda k: k != "plan")


# ---- who used it ---------------------------------------------------------------------------------------------

def reference_shares(history: Sequence[tuple[float, float, str, int]]) -> tuple[dict[str, int], dict[str, int]]:
    """Per project: units raised above the previous high (rounded like the module: millionths), and cost."""
    units: dict[str, int] = defaultdict(int)
    cost: dict[str, int] = defaultdict(int)
    high = None
    for _, u, project, nanos in history:
        value = round(u * plan.UNIT)
        if high is not None and value > high:
            units[project] += value - high
        high = value if high is None else max(high, value)
        cost[project] += nanos
    return dict(units), dict(cost)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shares_add_up_exactly_to_the_change_over_the_instance(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    db = tmp_path / "db.sqlite"
    reset = NOW + 2 * HOUR
    u, history = rng.uniform(0.05, 0.2), []
    for i in range(60):
        u = max(0.0, u + rng.choice([0.0, 0.003, 0.01, 0.0137, -0.004, 0.021]))  # small dips: rounding
        history.append((NOW - 3 * HOUR + i * 2 * MIN, round(u, 4), rng.choice(["alpha", "beta", "gamma"]),
                        rng.randrange(0, 5_000_000)))
    write(db, [snap_call(t, u, reset, project=p, cost=c, client=f"tool-{p[0]}", branch=f"b-{c % 2}")
               for t, u, p, c in history])
    state = one(current(db))
    assert state.snapshots == len(history)
    values = [round(u * plan.UNIT) for _, u, _, _ in history]
    change = max(values) - values[0]
    assert change > 0 and state.used_units == change
    for group in ("project", "client", "branch"):
        assert sum(s.units for s in state.shares[group]) == change, group
        assert sum(s.cost_nanos for s in state.shares[group]) == sum(c for *_, c in history)
        assert sum(s.calls for s in state.shares[group]) == len(history)
    units, cost = reference_shares(history)
    assert {s.name: s.units for s in state.shares["project"]} == {p: units.get(p, 0) for p in cost}
    assert {s.name: s.cost_nanos for s in state.shares["project"]} == cost
    assert state.baseline == history[0][1] and state.peak == max(u for _, u, _, _ in history)
    points = state.to_json()["by"]["project"]
    assert sum(p["points"] for p in points) == pytest.approx(state.to_json()["used_points"])


def test_a_reset_starts_a_new_instance_and_the_shares_restart(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    first_reset, second_reset = NOW - 60 * MIN, NOW + 4 * HOUR
    old = [(NOW - 3 * HOUR, 0.20, "alpha"), (NOW - 2 * HOUR, 0.60, "alpha"), (NOW - 70 * MIN, 0.85, "beta")]
    new = [(NOW - 50 * MIN, 0.03, "gamma"), (NOW - 30 * MIN, 0.08, "beta"), (NOW - 10 * MIN, 0.12, "gamma")]
    write(db, [snap_call(t, u, first_reset, project=p) for t, u, p in old]
          + [snap_call(t, u, second_reset, project=p) for t, u, p in new])
    state = one(current(db))
    assert state.snapshots == len(new) and state.instance_start == utc_stamp(new[0][0])
    assert state.utilization == new[-1][1] and state.baseline == new[0][1]
    units, cost = reference_shares([(t, u, p, 1_000_000) for t, u, p in new])
    assert {s.name: s.units for s in state.shares["project"]} == {p: units.get(p, 0) for p in cost}
    assert "alpha" not in {s.name for s in state.shares["project"]}  # the old instance's project is gone


def test_a_large_drop_with_the_same_reset_is_a_new_instance(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    reset = NOW + 2 * HOUR
    history = [(NOW - 60 * MIN, 0.70), (NOW - 40 * MIN, 0.75), (NOW - 20 * MIN, 0.10),
               (NOW - 10 * MIN, 0.30)]
    write(db, [snap_call(t, u, reset) for t, u in history])
    state = one(current(db))
    assert history[1][1] - history[2][1] > plan.RESET_DROP
    assert state.snapshots == 2 and state.baseline == history[2][1]
    assert state.used_units == round(history[3][1] * plan.UNIT) - round(history[2][1] * plan.UNIT)


def test_codex_jittering_resets_are_one_instance(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    rng = random.Random(7)
    base_reset = NOW + 2 * HOUR
    history = [(NOW - 100 * MIN + i * 5 * MIN, 0.10 + 0.03 * i) for i in range(20)]
    write(db, [snap_call(t, u, base_reset + rng.uniform(-40, 40), provider="codex", account="acct-x")
               for t, u in history])
    state = one(current(db), account="acct-x")
    assert state.provider == "codex" and state.snapshots == len(history)
    values = [round(u * plan.UNIT) for _, u in history]
    assert state.used_units == max(values) - values[0] == sum(s.units for s in state.shares["project"])
    conn = read(db)
    try:
        found = plan.blocks(conn, None, None, "5h", now=NOW)
    finally:
        conn.close()
    assert len(found) == 1 and found[0].snapshots == len(history) and found[0].active


# ---- blocks --------------------------------------------------------------------------------------------------

def test_blocks_from_a_synthetic_history(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    resets = [NOW - 8 * HOUR, NOW - 2 * HOUR, NOW + 4 * HOUR]  # a window starts after the previous reset
    records: list[CallRecord] = []
    expected: list[dict[str, Any]] = []
    rng = random.Random(3)
    for reset in resets:
        start = reset - 5 * HOUR
        ours, peak, last_status = [], 0.0, None
        for i in range(6):
            seen = start + 10 * MIN + i * 20 * MIN
            if seen >= min(reset, NOW):
                break
            u = round(0.2 * (i + 1), 2)
            last_status = "allowed" if u < 0.9 else "rejected"
            record = snap_call(seen, u, reset, status=last_status, cost=rng.randrange(1, 9_000_000),
                               input_tokens=rng.randrange(1, 5000), cache_read_tokens=rng.randrange(0, 9000))
            records.append(record)
            ours.append(record)
            peak = max(peak, u)
        # another key's call in the same hours is not this account's; a self-test is nobody's
        records.append(call(utc_stamp(start + 20 * MIN), key_fingerprint="fp-other", cost_nanos=123))
        records.append(call(utc_stamp(start + 21 * MIN), key_fingerprint="fp1", cost_nanos=456,
                            endpoint_kind="self_test"))
        expected.append({"start": utc_stamp(start), "end": utc_stamp(reset), "calls": len(ours),
                         "tokens": sum(r.input_tokens + r.output_tokens + r.cache_read_tokens + r.cache_write_tokens
                                       for r in ours),
                         "cost_nanos": sum(r.cost_nanos or 0 for r in ours), "peak": peak, "status": last_status,
                         "active": reset > NOW})
    records.append(call(utc_stamp(NOW - 14 * HOUR), key_fingerprint="fp1", cost_nanos=5))  # before every block
    write(db, records)
    conn = read(db)
    try:
        found = plan.blocks(conn, None, None, "5h", now=NOW)
        recent = plan.blocks(conn, utc_stamp(NOW - 6.5 * HOUR), utc_stamp(NOW), "5h", now=NOW)
        weekly = plan.blocks(conn, None, None, "7d", now=NOW)
    finally:
        conn.close()
    got = [{k: b.to_json()[k] for k in expected[0]} for b in found]
    assert got == expected
    assert all(b["calls"] > 0 for b in expected) and [b["active"] for b in expected] == [False, False, True]
    assert [b.start for b in recent] == [e["start"] for e in expected[1:]]  # the first ended before `since`
    assert weekly == []
    assert all(b.account == "fp1" and b.provider == "anthropic" for b in found)


# ---- the commands ----------------------------------------------------------------------------------------------

@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("halton_meter.cli._options.now",
                        lambda: datetime.datetime.fromtimestamp(NOW, datetime.UTC))


def seed_cli(db: Path) -> list[CallRecord]:
    reset = NOW + 2 * HOUR
    records = [snap_call(NOW - 28 * MIN, 0.50, reset, project="alpha", client="claude-code", branch="main"),
               snap_call(NOW - 20 * MIN, 0.62, reset, project="beta", client="codex-cli", branch="feature"),
               snap_call(NOW - 10 * MIN, 0.93, reset, project="alpha", client="claude-code", branch="main",
                         status="allowed_warning", extra=[
                             {"kind": "plan", "window": "7d", "window_minutes": 10080, "utilization": 0.31,
                              "resets_at": utc_stamp(NOW + 3 * 86400), "status": "allowed"},
                             {"kind": "api", "window": "tokens", "limit_value": 40000, "remaining": 30000,
                              "utilization": 0.25, "resets_at": utc_stamp(NOW + 40)}])]
    write(db, records)
    return records


def test_plan_json_is_current(cli, paths: Paths, pinned: None) -> None:
    seed_cli(paths.db)
    result = cli("plan", "--json")
    assert result.exit_code == 0, result
    data = json.loads(result.stdout)
    expected = current(paths.db)
    assert data["now"] == utc_stamp(NOW)
    assert [(w["window"], w["utilization"]) for w in data["windows"]] == \
        [(s.window, s.utilization) for s in expected if not s.api]
    assert [w["window"] for w in data["api"]] == [s.window for s in expected if s.api]
    five = next(w for w in data["windows"] if w["window"] == "5h")
    assert five == {**one(expected).to_json(), "account_label": "fp1"}


def test_plan_table_shows_windows_and_who_used_them(cli, paths: Paths, pinned: None) -> None:
    seed_cli(paths.db)
    result = cli("plan")
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    state = one(current(paths.db))
    five = next(line for line in lines if line.startswith("5h "))
    assert f"{state.utilization * 100:.0f}%" in five and "allowed_warning" in five
    assert f"{state.burn_per_hour * 100:+.1f}%/h" in five
    assert "(in 2h 00m)" in five
    assert "31%" in next(line for line in lines if line.startswith("7d "))
    api = next(line for line in lines if line.startswith("anthropic ") and "tokens" in line)
    assert f"{compact(30000)} of {compact(40000)}" in api and "25%" in api
    who = lines.index(next(line for line in lines if line.startswith("Who used 5h")))
    rows = {line.split()[0]: line.split() for line in lines[who + 2: who + 2 + len(state.shares["project"])]}
    for share in state.shares["project"]:
        assert rows[share.name][1] == f"{share.points:.1f}"
    by_client = cli("plan", "--by", "client").stdout
    assert "codex-cli" in by_client and "beta" not in by_client


def test_plan_without_data_says_where_limits_come_from(cli, paths: Paths) -> None:
    result = cli("plan")
    assert result.exit_code == 0 and "No plan limits seen yet" in result.stdout and "Claude" in result.stdout
    migrate(paths.db)  # a database with no snapshots yet says the same
    assert "No plan limits seen yet" in cli("plan").stdout
    assert json.loads(cli("plan", "--json").stdout)["windows"] == []
    assert cli("plan", "--by", "model").exit_code == 2


def test_blocks_command(cli, paths: Paths, pinned: None) -> None:
    seed_cli(paths.db)
    result = cli("blocks", "--json")
    assert result.exit_code == 0, result
    data = json.loads(result.stdout)
    conn = read(paths.db)
    try:
        expected = plan.blocks(conn, utc_stamp(NOW - 7 * 86400), utc_stamp(NOW), "5h", now=NOW)
    finally:
        conn.close()
    assert [{k: v for k, v in b.items() if k != "account_label"} for b in data["blocks"]] == \
        [b.to_json() for b in expected]
    assert data["blocks"][-1]["active"]
    table = cli("blocks").stdout
    assert "◀ active" in table and f"{expected[-1].peak * 100:.0f}%" in table
    assert cli("blocks", "--window", "nonsense").exit_code == 2
    assert "No 7d_opus plan windows" in cli("blocks", "--window", "7d_opus").stdout


# ---- the status row ----------------------------------------------------------------------------------------------

def plan_row(paths: Paths) -> Any:
    from halton_meter.plugin import CheckContext
    from halton_meter_checks.plan import check_plan

    return check_plan(CheckContext(paths=paths, config=None))


@pytest.mark.parametrize(("utilization", "status", "warns"), [
    (0.95, "allowed_warning", True), (0.90, "allowed", True), (0.89, "allowed", False), (0.42, "allowed", False),
    (0.40, "rejected", True),
])
def test_status_plan_row_warns_above_90_percent_or_rejected(paths: Paths, utilization: float, status: str,
                                                           warns: bool) -> None:
    now = time.time()
    write(paths.db, [snap_call(now - 60, utilization, now + HOUR, status=status)])
    row = plan_row(paths)
    assert (row.status == "warn") is warns, row
    if warns:
        assert row.fix and row.fix.startswith("wait until ") and "switch model" in row.fix
        assert "5h" in row.summary
    else:
        assert row.status == "ok" and f"{utilization * 100:.0f} %" in row.summary


def test_status_plan_row_ignores_a_window_that_has_reset(paths: Paths) -> None:
    now = time.time()
    write(paths.db, [snap_call(now - 3 * HOUR, 0.99, now - HOUR, status="rejected")])
    assert plan_row(paths).status != "warn"


def test_status_plan_row_never_fails_on_a_missing_or_old_database(paths: Paths, tmp_path: Path) -> None:
    assert plan_row(paths).status == "skip"
    fresh = Paths(tmp_path / "fresh")
    migrate(fresh.db)
    empty = plan_row(fresh)  # a healthy meter before any plan call: green, saying why there is nothing
    assert empty.status == "ok" and "no plan limits seen yet" in empty.summary
    paths.db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(paths.db)
    conn.execute("CREATE TABLE calls (id TEXT)")
    conn.execute("PRAGMA user_version = 12")
    conn.close()
    assert plan_row(paths).status == "skip"


def test_status_command_shows_the_plan_row(cli, paths: Paths) -> None:
    now = time.time()
    write(paths.db, [snap_call(now - 60, 0.97, now + HOUR, status="allowed_warning")])
    data = json.loads(cli("status", "--json").stdout)
    row = next(r for r in data["rows"] if r["id"] == "plan")
    assert row["status"] == "warn" and row["check"] == "check.plan" and data["verdict"] != "HEALTHY"
    assert "plan" in cli("status").stdout
