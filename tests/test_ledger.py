"""The core's budget counters (halton_meter/budgets/ledger.py): fail open until the spend is known, exact
spend from the database, reservations per call in flight, thresholds that alert once per period (restarts
included), calendar periods that roll over in the local zone, overrides and their expiry, rolling spans."""

from __future__ import annotations

import datetime
from pathlib import Path

from reportkit import call, local_zone, write

from halton_meter.budget_config import Budget, parse_budgets
from halton_meter.budgets import spend
from halton_meter.budgets.ledger import Ledger, call_dims
from halton_meter.store.schema import connect
from halton_meter.timewindow import iso

UTC = datetime.UTC
COST = 4_500_000  # reportkit's default call: $0.0045


class Clock:
    def __init__(self, at: datetime.datetime) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at.timestamp()


def budget(**fields: object) -> Budget:
    body = {"name": "b", "period": "month", "limit_usd": "0.01", "action": "block", **fields}
    return parse_budgets([body], {})[0]


def make(db: Path, budgets: list[Budget], clock: Clock) -> tuple[Ledger, list[spend.Event]]:
    events: list[spend.Event] = []
    ledger = Ledger(budgets, db, alert=lambda b, e: events.append(e), clock=clock)
    ledger.load()
    return ledger, events


def dims(project: str = "alpha", model: str = "claude-sonnet-4-5-20250929") -> dict[str, str | None]:
    return {"project": project, "key": None, "branch": "main", "client": "claude-code", "provider": "anthropic",
            "model": model}


def test_calls_pass_until_the_spend_is_known_and_when_it_cannot_be(tmp_path: Path) -> None:
    clock = Clock(datetime.datetime(2026, 11, 20, 12, tzinfo=UTC))
    ledger = Ledger([budget(limit_usd="0.000000001")], tmp_path / "missing.sqlite", clock=clock)
    assert ledger.admit("c1", dims(), 10**9) is None  # not loaded yet
    events: list[spend.Event] = []
    ledger.alert = lambda b, e: events.append(e)
    ledger.load()
    assert not ledger.loaded and ledger.problem and ledger.admit("c2", dims(), 10**9) is None
    assert [e.kind for e in events] == ["spend_unknown"] and events[0].detail == ledger.problem


def test_spend_is_read_exactly_and_only_in_scope_and_per_token(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    now = datetime.datetime(2026, 11, 20, 12, tzinfo=UTC)
    write(db, [call(started_at=iso(now - datetime.timedelta(days=d)), project=p, billing=b)
               for d, p, b in [(1, "alpha", "api"), (2, "alpha", "api"), (3, "beta", "api"),
                               (4, "alpha", "subscription"), (25, "alpha", "api")]])  # the 25th-day one: October
    ledger, _ = make(db, [budget(scope={"project": "alpha"}, limit_usd="1")], Clock(now))
    [state] = ledger.status()
    assert state["spent_nanos"] == 2 * COST and state["period_start"] == "2026-11-01T00:00:00.000000Z"


def test_a_block_budget_refuses_once_spent_and_reserved_reach_the_limit(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    now = datetime.datetime(2026, 11, 20, 12, tzinfo=UTC)
    write(db, [call(started_at=iso(now - datetime.timedelta(hours=1)))])
    ledger, _ = make(db, [budget(limit_usd="0.01")], Clock(now))  # spent 0.0045 of 0.01
    assert ledger.admit("a", dims(), 3_000_000) is None  # 4.5 + 3 reserved < 10
    assert ledger.admit("b", dims(), 3_000_000) is None  # 7.5 + 3 ≥ 10 after it: admitted before
    refusal = ledger.admit("c", dims(), 1)
    assert refusal is not None and (refusal.spent, refusal.reserved) == (COST, 6_000_000)
    assert refusal.period_end == datetime.datetime(2026, 12, 1, tzinfo=UTC)
    ledger.forget("b")
    assert ledger.admit("d", dims(), 1) is None  # b's reservation went: 4.5 + 3 + 1 < 10
    # A row landing releases its call's reservation and adds its real cost.
    ledger.committed(call(id="a", started_at=iso(now), cost_nanos=1_000_000))
    [state] = ledger.status()
    assert (state["spent_nanos"], state["reserved_nanos"]) == (COST + 1_000_000, 1)
    # Out of scope, or a warn budget: never refused.
    other = Ledger([budget(scope={"project": "beta"}), budget(name="w", action="warn", limit_usd="0.000000001")],
                   db, clock=Clock(now))
    other.load()
    assert other.admit("e", dims(), 10**12) is None


def test_thresholds_alert_once_per_period_even_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    write(db, [])
    now = datetime.datetime(2026, 11, 20, 12, tzinfo=UTC)
    b = budget(limit_usd="0.01", warn_at=[0.5, 0.8])
    ledger, events = make(db, [b], Clock(now))
    for i in range(4):  # 4.5, 9, 13.5, 18 of 10
        ledger.committed(call(id=f"c{i}", started_at=iso(now)))
    assert [(e.kind, e.threshold) for e in events] == [("warn", 0.5), ("warn", 0.8), ("limit", 1.0)]
    assert events[-1].spent_nanos == 3 * COST and events[-1].period_start == "2026-11-01T00:00:00.000000Z"
    conn = connect(db)
    for event in events:
        assert spend.record(conn, event)
    conn.commit()
    conn.close()
    again, more = make(db, [b], Clock(now))  # a restarted core
    again.committed(call(id="c9", started_at=iso(now)))
    assert more == []


def test_a_month_rolls_over_at_local_midnight_of_the_first(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    with local_zone("Asia/Kolkata"):  # UTC+05:30: December starts at 2026-11-30T18:30Z
        before_midnight = datetime.datetime(2026, 11, 30, 18, 29, tzinfo=UTC)
        write(db, [call(started_at=iso(before_midnight - datetime.timedelta(minutes=5)))])
        clock = Clock(before_midnight)
        ledger, events = make(db, [budget(limit_usd="0.006", warn_at=[0.5])], clock)
        assert ledger.status()[0]["spent_nanos"] == COST
        assert ledger.admit("x", dims(), 1) is None
        clock.at = datetime.datetime(2026, 11, 30, 18, 31, tzinfo=UTC)  # 00:01 on 1 December in Kolkata
        ledger.committed(call(id="late", started_at=iso(before_midnight)))  # November's, committed in December
        [state] = ledger.status()
        assert state["period_start"] == "2026-11-30T18:30:00.000000Z" and state["spent_nanos"] == 0
        ledger.committed(call(id="dec", started_at=iso(clock.at)))
        assert ledger.status()[0]["spent_nanos"] == COST
        assert [(e.kind, e.period_start) for e in events] == [("warn", "2026-11-30T18:30:00.000000Z")]


def test_an_override_lets_calls_through_until_it_ends(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    now = datetime.datetime(2026, 11, 20, 12, tzinfo=UTC)
    write(db, [call(started_at=iso(now - datetime.timedelta(hours=1)), cost_nanos=10**9)])
    clock = Clock(now)
    ledger, _ = make(db, [budget()], clock)
    assert ledger.admit("a", dims(), 0) is not None
    conn = connect(db)
    spend.record(conn, spend.Event(at=iso(now), budget="b", period_start="", kind="override",
                                   until=iso(now + datetime.timedelta(hours=1))))
    conn.commit()
    ledger.refresh()
    assert ledger.admit("b", dims(), 0) is None
    clock.at = now + datetime.timedelta(hours=1, seconds=1)
    assert ledger.admit("c", dims(), 0) is not None  # the override ended
    spend.record(conn, spend.Event(at=iso(now), budget="b", period_start="", kind="override",
                                   until=iso(now + datetime.timedelta(hours=5))))
    spend.record(conn, spend.Event(at=iso(now), budget="b", period_start="", kind="override_cleared"))
    conn.commit()
    conn.close()
    ledger.refresh()
    assert ledger.admit("d", dims(), 0) is not None  # cleared


def test_a_rolling_budget_forgets_calls_that_leave_its_span(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    now = datetime.datetime(2026, 11, 20, 12, tzinfo=UTC)
    write(db, [call(started_at=iso(now - datetime.timedelta(hours=h))) for h in (1, 4, 6)])
    clock = Clock(now)
    ledger, _ = make(db, [budget(period="5h", limit_usd="1")], clock)
    assert ledger.status()[0]["spent_nanos"] == 2 * COST
    clock.at = now + datetime.timedelta(hours=1, minutes=30)  # the 4-hour-old call is now 5.5 hours old
    ledger._last_rolling = float("-inf")
    ledger.refresh()
    assert ledger.status()[0]["spent_nanos"] == COST


def test_a_new_config_keeps_unchanged_budgets_and_reads_changed_ones(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    now = datetime.datetime(2026, 11, 20, 12, tzinfo=UTC)
    write(db, [call(started_at=iso(now - datetime.timedelta(hours=1)))])
    ledger, _ = make(db, [budget(name="keep"), budget(name="change")], Clock(now))
    assert ledger.admit("r", dims(), 7) is None
    ledger.set_budgets([budget(name="keep"), budget(name="change", limit_usd="5"), budget(name="new")])
    status = {s["name"]: s for s in ledger.status()}
    assert status["keep"]["reserved_nanos"] == 7 and status["change"]["limit_nanos"] == 5 * 10**9
    assert all(s["spent_nanos"] == COST for s in status.values())


def test_call_dims_are_the_scope_dimensions() -> None:
    record = call(key_fingerprint="3f9a1c2e", model=None, model_requested="gpt-4o")
    assert call_dims(record) == {"project": "alpha", "key": "3f9a1c2e", "branch": "main", "client": "claude-code",
                                 "provider": "anthropic", "model": "gpt-4o"}


def snapshot(window: str, utilization: float, resets: datetime.datetime, account: str = "ac01ac01") -> dict:
    return {"seen_at": iso(resets - datetime.timedelta(hours=1)), "provider": "anthropic", "account": account,
            "kind": "plan", "window": window, "utilization": utilization, "resets_at": iso(resets)}


def test_a_plan_budget_refuses_at_its_share_of_the_window_until_the_window_resets(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    now = datetime.datetime(2026, 11, 20, 12, tzinfo=UTC)
    resets = now + datetime.timedelta(hours=2)
    write(db, [call(started_at=iso(now - datetime.timedelta(minutes=5)), key_fingerprint="ac01ac01",
                    billing="subscription", plan=[snapshot("5h", 0.5, resets)])])
    plan = parse_budgets([{"name": "max-5h", "plan_window": "5h", "limit_plan": 0.9, "warn_at": [0.5],
                           "scope": {"key": "ac01ac01"}, "action": "block"}], {})[0]
    clock = Clock(now)
    ledger, events = make(db, [plan], clock)
    mine = {**dims(), "key": "ac01ac01"}
    assert ledger.admit("a", mine, 0, money=False) is None  # 50 % of the window, limit 90 %
    ledger.committed(call(id="a", started_at=iso(now), key_fingerprint="ac01ac01", billing="subscription",
                          plan=[snapshot("5h", 0.93, resets)]))
    refusal = ledger.admit("b", mine, 0, money=False)
    assert refusal is not None and refusal.utilization == 0.93 and refusal.period_end == resets
    assert ledger.admit("c", {**mine, "key": "ac02ac02"}, 0, money=False) is None  # another account
    # Crossing 45 % (warn at 0.5 of 0.9) happened before the meter started; crossing 90 % alerts once.
    assert [(e.kind, e.threshold, e.period_start) for e in events] == [("limit", 1.0, iso(resets))]
    ledger.committed(call(id="d", started_at=iso(now), key_fingerprint="ac01ac01", plan=[snapshot("5h", 0.95, resets)]))
    assert len(events) == 1
    clock.at = resets + datetime.timedelta(seconds=1)
    assert ledger.admit("e", mine, 0, money=False) is None  # the window has reset


def test_plan_budgets_are_validated() -> None:
    from halton_meter.errors import ConfigError

    ok = parse_budgets([{"name": "p", "plan_window": "7d_opus", "limit_plan": 1}], {})[0]
    assert ok.is_plan and ok.period_label == "plan 7d_opus" and ok.limit_plan == 1.0
    for body, words in [({"plan_window": "5h", "limit_plan": 0.9, "period": "day"}, "either period"),
                        ({"plan_window": "5h", "limit_plan": 1.5}, "limit_plan must be"),
                        ({"plan_window": "5 hours", "limit_plan": 0.5}, "plan_window must"),
                        ({"plan_window": "5h", "limit_plan": 0.5, "scope": {"project": "x"}}, "only key and provider")]:
        try:
            parse_budgets([{"name": "p", **body}], {})
        except ConfigError as exc:
            assert words in exc.message, exc.message
        else:
            raise AssertionError(f"accepted {body}")


def test_with_no_budgets_the_refresh_reads_nothing(tmp_path: Path, monkeypatch) -> None:
    from halton_meter.budgets import ledger as ledger_module

    db = tmp_path / "db.sqlite"
    write(db, [call()])
    ledger, _ = make(db, [], Clock(datetime.datetime(2026, 11, 22, 12, tzinfo=UTC)))

    def no_reads(_db: Path) -> None:
        raise AssertionError("the refresh opened the database with no budget to refresh")

    monkeypatch.setattr(ledger_module, "_reader", no_reads)
    ledger.refresh()
    monkeypatch.undo()
    ledger.set_budgets((budget(),))  # a budget configured later is read, and refreshed from then on
    assert ledger.status()[0]["spent_nanos"] == COST
