"""Budgets outside the core (docs/budgets.md): the Alerter (stored once, logged, a desktop notification with
the exact command per platform, `on_alert` with the exact JSON on stdin, never raising), `view.document`'s
states from real databases, periods in a non-UTC zone, the `budgets` command (table, --json, override,
history, exit codes) and the status row.

Mocks only at the OS edges: `shutil.which` and `sys.platform` choose the notification program, and a fake
runner records its command line instead of showing a notification. `on_alert` runs a real script.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
from reportkit import call, local_zone, write

from halton_meter.budget_config import Budget
from halton_meter.budgets import alerts, spend, view
from halton_meter.budgets.alerts import Alerter, notification_text
from halton_meter.clock import utc_stamp
from halton_meter.config import load_config
from halton_meter.paths import Paths
from halton_meter.store.schema import migrate

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)
CENT = 10_000_000  # nano-dollars


def at(moment: datetime.datetime) -> str:
    return utc_stamp(moment)


def ago(minutes: float) -> str:
    return utc_stamp(NOW - datetime.timedelta(minutes=minutes))


def configure(paths: Paths, *blocks: str) -> None:
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.config.write_text("".join(f"[[budgets]]\n{textwrap.dedent(b).strip()}\n\n" for b in blocks))


ACME = """
    name = "acme-monthly"
    scope = { project = "alpha" }
    period = "month"
    limit_usd = "0.10"
    warn_at = [0.5, 0.8]
    action = "block"
"""
DAILY = """
    name = "daily"
    period = "day"
    limit_usd = "1"
"""


def budget(**fields: Any) -> Budget:
    base: dict[str, Any] = dict(name="acme-monthly", scope=(("project", ("acme",)),), period="month",
                                limit_nanos=200_000_000_000, warn_at=(0.5, 0.8), action="block")
    base.update(fields)
    return Budget(**base)


def warn_event(threshold: float = 0.8, spent: int = 161_200_000_000, start: str = "2026-11-01T00:00:00.000000Z",
               limit: int = 200_000_000_000) -> spend.Event:
    return spend.Event(at="2026-11-22T12:00:00.000000Z", budget="acme-monthly", period_start=start, kind="warn",
                       threshold=threshold, spent_nanos=spent, limit_nanos=limit)


def events(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT budget, kind, threshold, until FROM budget_events ORDER BY id").fetchall()
    finally:
        conn.close()


class FakeRunner:
    """Records the command lines it is given (nothing is shown)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[list[str]] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, argv: Sequence[str], stdin: bytes | None) -> int:
        self.calls.append(list(argv))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        return 0


@pytest.fixture
def db(paths: Paths) -> Path:
    migrate(paths.db)
    return paths.db


def platform(monkeypatch: pytest.MonkeyPatch, name: str, programs: dict[str, str]) -> None:
    monkeypatch.setattr(sys, "platform", name)
    monkeypatch.setattr("shutil.which", lambda program, *a, **k: programs.get(program))


# ---- the Alerter ------------------------------------------------------------------------------------------

def test_notify_send_on_linux_with_the_exact_command(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform(monkeypatch, "linux", {"notify-send": "/usr/bin/notify-send"})
    runner = FakeRunner()
    alerter = Alerter(db, runner=runner)
    alerter(budget(), warn_event())
    alerter.close()
    assert runner.calls == [["/usr/bin/notify-send", "--app-name=Halton Meter", "--urgency=normal", "--",
                             "Halton Meter: acme-monthly at 80 %",
                             "$161.20 of $200.00 spent this month. Calls will be refused at the limit."]]
    assert events(db) == [("acme-monthly", "warn", 0.8, None)]


def test_the_limit_is_critical_on_linux(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform(monkeypatch, "linux", {"notify-send": "/usr/bin/notify-send"})
    runner = FakeRunner()
    alerter = Alerter(db, runner=runner)
    alerter(budget(action="warn"), spend.Event(at=ago(0), budget="acme-monthly", period_start="p", kind="limit",
                                               threshold=1.0, spent_nanos=201 * 10**9, limit_nanos=200 * 10**9))
    alerter.close()
    assert runner.calls == [["/usr/bin/notify-send", "--app-name=Halton Meter", "--urgency=critical", "--",
                             "Halton Meter: acme-monthly reached its limit", "$201.00 of $200.00 spent this month."]]


def test_osascript_on_macos_passes_title_and_body_as_arguments(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform(monkeypatch, "darwin", {"osascript": "/usr/bin/osascript", "notify-send": "/x/notify-send"})
    runner = FakeRunner()
    alerter = Alerter(db, runner=runner)
    alerter(budget(name='say "hi"'), warn_event(threshold=0.5, spent=100 * 10**9))
    alerter.close()
    assert runner.calls == [["/usr/bin/osascript", "-e", "on run argv", "-e",
                             "display notification (item 2 of argv) with title (item 1 of argv)", "-e", "end run",
                             'Halton Meter: say "hi" at 50 %',
                             "$100.00 of $200.00 spent this month. Calls will be refused at the limit."]]


def test_a_winrt_toast_through_powershell_on_windows(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform(monkeypatch, "win32", {"powershell": r"C:\WINDOWS\powershell.exe"})
    runner = FakeRunner()
    alerter = Alerter(db, runner=runner)
    alerter(budget(name="o'brien&co", action="warn", period="day"), warn_event(spent=170 * 10**9))
    alerter.close()
    xml = ('<toast><visual><binding template="ToastGeneric"><text>Halton Meter: o\'\'brien&amp;co at 80 %</text>'
           "<text>$170.00 of $200.00 spent today.</text></binding></visual></toast>")
    script = ("$ErrorActionPreference = 'Stop'; "
              "[Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, "
              "ContentType = WindowsRuntime] | Out-Null; "
              "[Windows.Data.Xml.Dom.XmlDocument, Windows.Data.Xml.Dom.XmlDocument, ContentType = WindowsRuntime] "
              "| Out-Null; $xml = New-Object Windows.Data.Xml.Dom.XmlDocument; "
              f"$xml.LoadXml('{xml}'); $toast = New-Object Windows.UI.Notifications.ToastNotification $xml; "
              "[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier("
              r"'{1AC14E77-02E7-4E5D-B744-2EB1AE5198B7}\WindowsPowerShell\v1.0\powershell.exe').Show($toast)")
    assert runner.calls == [[r"C:\WINDOWS\powershell.exe", "-NoProfile", "-NonInteractive", "-Command", script]]


def test_typographic_quotes_cannot_end_the_powershell_string() -> None:
    script = alerts.toast_script("it’s", "‘x’ ✓")
    inner = script.split("$xml.LoadXml('", 1)[1].split("'); $toast", 1)[0]
    assert "’" not in script and "‘" not in script and "&#8217;" in inner and "&#10003;" in inner


def test_no_notifier_is_skipped_silently_and_the_event_still_stored(db: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    platform(monkeypatch, "linux", {})
    runner = FakeRunner()
    with structlog.testing.capture_logs() as logs:
        alerter = Alerter(db, runner=runner)
        alerter(budget(), warn_event())
        alerter.close()
    assert runner.calls == []
    assert events(db) == [("acme-monthly", "warn", 0.8, None)]
    assert [entry["event"] for entry in logs] == [
        "budget acme-monthly reached 80 % of $200.00 ($161.20 spent this month)"]


def test_on_alert_receives_the_event_as_json_on_stdin(db: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    platform(monkeypatch, "linux", {})
    script, out = tmp_path / "hook.py", tmp_path / "stdin.json"
    script.write_text("import sys, pathlib\npathlib.Path(sys.argv[1]).write_bytes(sys.stdin.buffer.read())\n")
    alerter = Alerter(db, runner=FakeRunner())
    alerter(budget(on_alert=(sys.executable, str(script), str(out))), warn_event())
    alerter.close(timeout=20)
    raw = out.read_bytes()
    assert raw.endswith(b"}\n") and raw.count(b"\n") == 1
    assert json.loads(raw) == {"budget": "acme-monthly", "kind": "warn", "threshold": 0.8, "spent_usd": "161.20",
                               "limit_usd": "200.00", "period": "month",
                               "period_start": "2026-11-01T00:00:00.000000Z", "at": "2026-11-22T12:00:00.000000Z",
                               "scope": {"project": ["acme"]}}


def test_a_duplicate_event_is_stored_and_shown_once_even_after_a_restart(db: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    platform(monkeypatch, "linux", {"notify-send": "/usr/bin/notify-send"})
    runner = FakeRunner()
    first = Alerter(db, runner=runner)
    first(budget(), warn_event())
    first(budget(), warn_event())
    first.close()
    restarted = Alerter(db, runner=runner)
    restarted(budget(), warn_event(spent=170 * 10**9))
    restarted(budget(), warn_event(start="2026-12-01T00:00:00.000000Z"))  # next period: alerts again
    restarted.close()
    assert len(runner.calls) == 2
    assert events(db) == [("acme-monthly", "warn", 0.8, None)] * 2


def test_spend_unknown_is_shown_once_per_reason(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform(monkeypatch, "linux", {"notify-send": "/usr/bin/notify-send"})
    runner = FakeRunner()
    alerter = Alerter(db, runner=runner)
    unknown = spend.Event(at=ago(0), budget="acme-monthly", period_start="p", kind="spend_unknown",
                          limit_nanos=200 * 10**9, detail="OperationalError: disk I/O error")
    for _ in range(3):
        alerter(budget(), unknown)
    alerter.close()
    assert [c[4] for c in runner.calls] == ["Halton Meter: acme-monthly spend unknown"]
    assert [e[1] for e in events(db)] == ["spend_unknown"]


@pytest.mark.parametrize("command", [["{python}", "-c", "import sys; sys.stdin.read(); sys.exit(3)"],
                                     ["/nonexistent/halton-hook"]])
def test_a_failing_on_alert_command_is_logged_not_raised(db: Path, monkeypatch: pytest.MonkeyPatch,
                                                         command: list[str]) -> None:
    platform(monkeypatch, "linux", {})
    command = [sys.executable if part == "{python}" else part for part in command]
    with structlog.testing.capture_logs() as logs:
        alerter = Alerter(db, runner=FakeRunner())
        alerter(budget(on_alert=tuple(command)), warn_event())
        alerter.close(timeout=20)
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["event"].startswith("budget on_alert command ")
    assert warnings[0]["command"] == command
    assert alerter.handled == 1 and events(db) == [("acme-monthly", "warn", 0.8, None)]


def test_an_on_alert_timeout_is_logged(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform(monkeypatch, "linux", {})

    def slow(argv: Sequence[str], stdin: bytes | None) -> int:
        raise subprocess.TimeoutExpired(list(argv), alerts.TIMEOUT_SECONDS)

    with structlog.testing.capture_logs() as logs:
        alerter = Alerter(db, runner=FakeRunner(), hook_runner=slow)
        alerter(budget(on_alert=("/bin/hook",)), warn_event())
        alerter.close()
    assert [(e["event"], e["timeout_s"]) for e in logs if e["log_level"] == "warning"] == [
        ("budget on_alert command timed out", 10.0)]


def test_a_full_queue_drops_with_a_count_and_never_blocks(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform(monkeypatch, "linux", {"notify-send": "/usr/bin/notify-send"})
    gate = threading.Event()
    runner = FakeRunner(gate)
    with structlog.testing.capture_logs() as logs:
        alerter = Alerter(db, runner=runner, maxsize=1)
        alerter(budget(), warn_event(0.5))
        assert runner.entered.wait(10)  # the worker holds the first event
        alerter(budget(), warn_event(0.8))  # queued
        alerter(budget(), warn_event(0.9))  # dropped
        alerter(budget(), warn_event(0.95))  # dropped
        gate.set()
        alerter.close(timeout=10)
    assert alerter.dropped == 2
    assert [e["dropped"] for e in logs if e["event"] == "budget alert queue full: alert dropped"] == [1, 2]
    assert len(runner.calls) == 2 and [e[2] for e in events(db)] == [0.5, 0.8]


def test_no_database_is_never_created_by_an_alert(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    platform(monkeypatch, "linux", {"notify-send": "/usr/bin/notify-send"})
    runner = FakeRunner()
    alerter = Alerter(paths.db, runner=runner)
    alerter(budget(), warn_event())
    alerter.close()
    assert not paths.db.exists() and len(runner.calls) == 1


def test_notification_text_for_each_kind() -> None:
    rolling = budget(period="rolling", rolling_seconds=5 * 3600, action="warn")
    assert notification_text(rolling, warn_event()) == ("Halton Meter: acme-monthly at 80 %",
                                                        "$161.20 of $200.00 spent in the last 5h.")
    limit = spend.Event(at=ago(0), budget="acme-monthly", period_start="p", kind="limit", threshold=1.0,
                        spent_nanos=200 * 10**9, limit_nanos=200 * 10**9)
    assert notification_text(budget(), limit) == (
        "Halton Meter: acme-monthly reached its limit",
        "$200.00 of $200.00 spent this month. New calls are refused; `halton-meter budgets override acme-monthly "
        "--for 1h` lets them through.")


# ---- view.document ------------------------------------------------------------------------------------------

def doc(paths: Paths, now: datetime.datetime = NOW) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in view.document(load_config(paths), now)["budgets"]}


def cents(n: float) -> int:
    return int(n * CENT)


@pytest.mark.parametrize(("spent_cents", "action", "state"), [
    (4, "block", "ok"), (5, "block", "warned"), (9, "block", "warned"), (10, "block", "blocked"),
    (12, "warn", "warned"), (0, "block", "ok"),
])
def test_document_states_from_the_spend(paths: Paths, spent_cents: int, action: str, state: str) -> None:
    configure(paths, ACME.replace('"block"', f'"{action}"'))
    write(paths.db, [call(started_at=ago(30), cost_nanos=cents(spent_cents)),
                     call(started_at=ago(20), cost_nanos=cents(50), project="beta"),  # out of scope
                     call(started_at=ago(10), cost_nanos=cents(50), billing="subscription"),  # not per token
                     call(started_at=ago(5), cost_nanos=cents(50), endpoint_kind="self_test"),
                     call(started_at=ago(4), cost_nanos=cents(50), incomplete_reason="in_progress", complete=False),
                     call(started_at=ago(60 * 24 * 30), cost_nanos=cents(50))])  # October
    row = doc(paths)["acme-monthly"]
    assert (row["state"], row["spent_nanos"], row["spent_usd"]) == (state, cents(spent_cents),
                                                                    f"{spent_cents / 100:.2f}")
    assert row["share"] == pytest.approx(spent_cents / 10)
    assert row["period_start"] == "2026-11-01T00:00:00.000000Z" or row["period_start"].startswith("2026-10-31")


def test_document_shape(paths: Paths) -> None:
    configure(paths, ACME, DAILY)
    write(paths.db, [call(started_at=ago(30), cost_nanos=cents(6)),
                     call(started_at=ago(20), cost_nanos=0, error_type="budget_exceeded", status=429,
                          extra={"budget": "acme-monthly"}),
                     call(started_at=ago(19), cost_nanos=0, error_type="budget_exceeded", status=429,
                          extra={"budget": "daily"}),
                     call(started_at=ago(60 * 24 * 30), cost_nanos=0, error_type="budget_exceeded", status=429,
                          extra={"budget": "acme-monthly"})])  # a refusal last month
    conn = sqlite3.connect(paths.db)
    spend.record(conn, spend.Event(at=ago(25), budget="acme-monthly",
                                   period_start=spend.period_start(load_config(paths).budgets[0], NOW), kind="warn",
                                   threshold=0.5, spent_nanos=cents(6), limit_nanos=cents(10)))
    conn.commit()
    conn.close()
    with local_zone("UTC"):
        data = view.document(load_config(paths), NOW)
    assert data["now"] == "2026-11-22T12:00:00.000000Z" and data["database"]["problem"] is None
    acme = data["budgets"][0]
    assert acme == {
        "name": "acme-monthly", "scope": {"project": ["alpha"]}, "period": "month", "action": "block",
        "warn_at": [0.5, 0.8], "limit_usd": "0.10", "limit_nanos": cents(10), "period_start":
        "2026-11-01T00:00:00.000000Z", "period_end": "2026-12-01T00:00:00.000000Z",
        "resets_in_seconds": 8 * 86400 + 12 * 3600, "spent_usd": "0.06", "spent_nanos": cents(6),
        "share": pytest.approx(0.6), "state": "warned", "override_until": None, "thresholds_alerted": [0.5],
        "blocked_calls": 1, "last_events": [{
            "at": ago(25), "budget": "acme-monthly", "period_start": "2026-11-01T00:00:00.000000Z", "kind": "warn",
            "threshold": 0.5, "spent_nanos": cents(6), "limit_nanos": cents(10), "until": None, "detail": None}]}
    assert data["budgets"][1]["blocked_calls"] == 1 and data["budgets"][1]["thresholds_alerted"] == []


def record_event(paths: Paths, **fields: Any) -> None:
    base: dict[str, Any] = dict(at=ago(1), budget="acme-monthly", period_start="", kind="override")
    base.update(fields)
    conn = sqlite3.connect(paths.db)
    spend.record(conn, spend.Event(**base))
    conn.commit()
    conn.close()


def test_overridden_until_the_override_expires_or_is_cleared(paths: Paths) -> None:
    configure(paths, ACME)
    write(paths.db, [call(started_at=ago(30), cost_nanos=cents(11))])
    assert doc(paths)["acme-monthly"]["state"] == "blocked"
    until = utc_stamp(NOW + datetime.timedelta(hours=1))
    record_event(paths, until=until)
    row = doc(paths)["acme-monthly"]
    assert (row["state"], row["override_until"]) == ("overridden", until)
    later = NOW + datetime.timedelta(hours=1, seconds=1)  # the override has run out
    assert doc(paths, later)["acme-monthly"]["state"] == "blocked"
    record_event(paths, kind="override_cleared", at=ago(0))
    assert doc(paths)["acme-monthly"]["state"] == "blocked"


def test_unknown_when_the_database_is_missing_or_unreadable(paths: Paths) -> None:
    configure(paths, ACME, DAILY)
    data = view.document(load_config(paths), NOW)
    assert [b["state"] for b in data["budgets"]] == ["unknown", "unknown"]
    assert "no database" in data["database"]["problem"] and data["budgets"][0]["spent_usd"] is None
    paths.db.write_bytes(b"this is not a database" * 100)
    data = view.document(load_config(paths), NOW)
    assert [b["state"] for b in data["budgets"]] == ["unknown", "unknown"] and data["database"]["problem"]


def test_a_call_just_before_local_midnight_counts_for_the_old_month_only(paths: Paths) -> None:
    configure(paths, ACME)
    with local_zone("Asia/Kolkata"):  # UTC+5:30: local midnight of Dec 1 is 2026-11-30T18:30Z
        write(paths.db, [call(started_at="2026-11-30T18:25:00.000000Z", cost_nanos=cents(1)),  # 23:55 IST
                         call(started_at="2026-11-30T18:35:00.000000Z", cost_nanos=cents(2)),  # 00:05 IST
                         call(started_at="2026-11-30T10:00:00.000000Z", cost_nanos=cents(4))])
        december = doc(paths, datetime.datetime(2026, 11, 30, 20, 30, tzinfo=datetime.UTC))["acme-monthly"]
        november = doc(paths, datetime.datetime(2026, 11, 30, 18, 29, tzinfo=datetime.UTC))["acme-monthly"]
    assert (december["period_start"], december["period_end"]) == ("2026-11-30T18:30:00.000000Z",
                                                                   "2026-12-31T18:30:00.000000Z")
    assert december["spent_nanos"] == cents(2)
    assert november["period_start"] == "2026-10-31T18:30:00.000000Z" and november["spent_nanos"] == cents(5)
    assert november["resets_in_seconds"] == 60


def test_a_rolling_budget_counts_its_span_only(paths: Paths) -> None:
    configure(paths, 'name = "roll"\nperiod = "5h"\nlimit_usd = "0.10"')
    write(paths.db, [call(started_at=ago(5 * 60 + 1), cost_nanos=cents(4)), call(started_at=ago(299),
                                                                                 cost_nanos=cents(3))])
    row = doc(paths)["roll"]
    assert (row["spent_nanos"], row["period"], row["period_end"], row["resets_in_seconds"]) == (
        cents(3), "rolling 5h", None, None)


# ---- the command --------------------------------------------------------------------------------------------

@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("halton_meter.cli._options.now", lambda: NOW)


def test_budgets_json_equals_the_document(cli: Any, paths: Paths, pinned: None) -> None:
    configure(paths, ACME, DAILY)
    write(paths.db, [call(started_at=ago(30), cost_nanos=cents(11))])
    result = cli("budgets", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == json.loads(json.dumps(view.document(load_config(paths), NOW)))
    assert [(b["name"], b["state"]) for b in data["budgets"]] == [("acme-monthly", "blocked"), ("daily", "ok")]


def test_budgets_table(cli: Any, paths: Paths, pinned: None) -> None:
    configure(paths, ACME, DAILY)
    write(paths.db, [call(started_at=ago(30), cost_nanos=cents(11))])
    result = cli("budgets")
    assert result.exit_code == 0, result.stderr
    acme = next(line for line in result.stdout.splitlines() if line.startswith("acme-monthly"))
    assert "project=alpha" in acme and "$0.11 / $0.10" in acme and "110%" in acme and "blocked" in acme
    assert "(in 8d 12h)" in acme
    assert "override NAME --for 1h" in result.stdout


def test_no_budgets_points_at_the_docs(cli: Any, paths: Paths) -> None:
    result = cli("budgets")
    assert (result.exit_code, result.stdout.strip()) == (0, no_budgets_line())


def no_budgets_line() -> str:
    return "No budgets configured: add [[budgets]] to config.toml to cap spend (see docs/budgets.md)."


def test_override_for_and_clear(cli: Any, paths: Paths, pinned: None) -> None:
    configure(paths, ACME)
    write(paths.db, [call(started_at=ago(30), cost_nanos=cents(11))])
    result = cli("budgets", "override", "acme-monthly", "--for", "90m")
    assert result.exit_code == 0, result.stderr
    assert "overridden until" in result.stdout and "(in 1h 30m)" in result.stdout
    assert events(paths.db) == [("acme-monthly", "override", None, "2026-11-22T13:30:00.000000Z")]
    assert json.loads(cli("budgets", "--json").stdout)["budgets"][0]["state"] == "overridden"
    result = cli("budgets", "override", "acme-monthly", "--clear")
    assert result.exit_code == 0 and "cleared" in result.stdout
    assert events(paths.db)[-1] == ("acme-monthly", "override_cleared", None, None)
    assert json.loads(cli("budgets", "--json").stdout)["budgets"][0]["state"] == "blocked"


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("2h", 7200), ("1d", 86400)])
def test_override_durations(cli: Any, paths: Paths, pinned: None, text: str, seconds: int) -> None:
    configure(paths, ACME)
    migrate(paths.db)
    assert cli("budgets", "override", "acme-monthly", "--for", text).exit_code == 0
    assert events(paths.db)[0][3] == utc_stamp(NOW + datetime.timedelta(seconds=seconds))


@pytest.mark.parametrize("args", [["--for", "1w"], ["--for", "0h"], ["--for", "soon"], [],
                                  ["--for", "1h", "--clear"]])
def test_override_usage_errors(cli: Any, paths: Paths, args: list[str]) -> None:
    configure(paths, ACME)
    migrate(paths.db)
    result = cli("budgets", "override", "acme-monthly", *args)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert events(paths.db) == []


def test_override_of_an_unknown_budget_lists_the_names(cli: Any, paths: Paths) -> None:
    configure(paths, ACME, DAILY)
    migrate(paths.db)
    result = cli("budgets", "override", "acme", "--for", "1h")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("halton-meter: error: no budget named 'acme' in config.toml; the budgets are: "
                                     "acme-monthly, daily")


def test_override_without_a_database_exits_3(cli: Any, paths: Paths) -> None:
    configure(paths, ACME)
    result = cli("budgets", "override", "acme-monthly", "--for", "1h")
    assert result.exit_code == 3 and not paths.db.exists()
    assert result.stderr.strip().startswith("halton-meter: error: no database at ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_history(cli: Any, paths: Paths, pinned: None) -> None:
    configure(paths, ACME, DAILY)
    migrate(paths.db)
    record_event(paths, kind="warn", threshold=0.8, spent_nanos=cents(8), limit_nanos=cents(10), at=ago(10),
                 period_start="2026-11-01T00:00:00.000000Z")
    record_event(paths, budget="daily", kind="limit", threshold=1.0, spent_nanos=cents(100), at=ago(5),
                 period_start="2026-11-22T00:00:00.000000Z")
    data = json.loads(cli("budgets", "history", "--json").stdout)
    assert [(e["budget"], e["kind"]) for e in data["events"]] == [("daily", "limit"), ("acme-monthly", "warn")]
    only = json.loads(cli("budgets", "history", "acme-monthly", "--json").stdout)
    assert [(e["budget"], e["kind"], e["threshold"]) for e in only["events"]] == [("acme-monthly", "warn", 0.8)]
    text = cli("budgets", "history").stdout
    assert "warn 80 %" in text and "limit" in text and "$0.08" in text
    assert "No events for budget nope yet" in cli("budgets", "history", "nope").stdout


@pytest.mark.parametrize("block,words", [
    ('name = "x"\nperiod = "fortnight"\nlimit_usd = "1"', "period must be day, week, month"),
    ('name = "x"\nperiod = "day"\nlimit_usd = "-1"', "limit_usd must be more than 0"),
    ('name = "x"\nperiod = "day"\nlimit_usd = "1"\ncolour = "red"', "unknown key 'colour'"),
])
def test_a_broken_budget_config_is_one_line_exit_2(cli: Any, paths: Paths, block: str, words: str) -> None:
    configure(paths, block)
    result = cli("budgets")
    assert result.exit_code == 2 and words in result.stderr and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_duplicate_budget_names_are_exit_2(cli: Any, paths: Paths) -> None:
    configure(paths, DAILY, DAILY)
    result = cli("budgets", "--json")
    assert result.exit_code == 2 and "two [[budgets]] are named 'daily'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---- the status row ---------------------------------------------------------------------------------------

def status_row(paths: Paths) -> Any:
    from halton_meter.types import CheckContext
    from halton_meter_checks.budgets import check_budgets

    return check_budgets(CheckContext(paths=paths, config=load_config(paths)), now=NOW)


@pytest.mark.parametrize("spent,status", [(8 * CENT, "warn"), (8 * CENT - 1, "ok"), (11 * CENT, "warn")])
def test_status_row_warns_from_the_first_threshold(paths: Paths, spent: int, status: str) -> None:
    configure(paths, ACME.replace("[0.5, 0.8]", "[0.8]"), DAILY)
    write(paths.db, [call(started_at=ago(30), cost_nanos=spent - 1), call(started_at=ago(0.5), cost_nanos=1),
                     call(started_at=ago(60 * 24 * 30), cost_nanos=cents(50))])
    row = status_row(paths)
    assert row.status == status, row
    if status == "warn":
        assert row.fix == ("`halton-meter budgets` shows them; `halton-meter budgets override NAME --for 1h` lets "
                           "calls through")
        assert row.summary.startswith(f"acme-monthly at {spent / cents(10) * 100:.0f} % of $0.10")
        assert ("blocked" in row.summary) is (spent >= cents(10))
    else:
        assert row.summary == "2 budgets below their warn thresholds (highest: acme-monthly 80 %)"


def test_status_row_without_budgets_or_database(paths: Paths) -> None:
    assert (status_row(paths).status, status_row(paths).summary) == ("ok", "no budgets")
    configure(paths, DAILY)
    assert status_row(paths).status == "ok"
    paths.db.write_bytes(b"garbage" * 1000)
    row = status_row(paths)
    assert row.status == "warn" and "spend unknown" in row.summary


def test_status_row_spend_equals_the_budgets_view(paths: Paths) -> None:
    """The row, `halton-meter budgets` and the core read one spend (rolling edges, scopes, calls after now)."""
    from halton_meter.types import CheckContext
    from halton_meter_checks.budgets import check_budgets

    configure(paths, ACME, DAILY, 'name = "roll"\nperiod = "90m"\nlimit_usd = "1"',
              'name = "k"\nscope = { model = "claude-*", client = ["codex", "claude-code"] }\nperiod = "week"\n'
              'limit_usd = "1"')
    now = NOW + datetime.timedelta(minutes=7, seconds=13)  # not on a bucket edge
    write(paths.db, [call(started_at=utc_stamp(now - datetime.timedelta(seconds=s)), cost_nanos=1000 + s,
                          project="alpha" if s % 2 else "beta", client="codex" if s % 3 else "aider")
                     for s in (7, 181, 433, 841, 960, 1741, 5280, 5393, 5461, 5700, 24001, 120000, 540000)]
                    + [call(started_at=utc_stamp(now + datetime.timedelta(minutes=1)), cost_nanos=10**6)])
    config = load_config(paths)
    row = check_budgets(CheckContext(paths=paths, config=config), now=now)
    shown = {b["name"]: b["spent_nanos"] for b in row.details["budgets"]}
    viewed = {b["name"]: b for b in view.document(config, now)["budgets"]}
    conn = sqlite3.connect(paths.db)
    try:
        for b in config.budgets:
            assert shown[b.name] == spend.spent(conn, b, now) > 0, b.name
            assert viewed[b.name]["spent_nanos"] == shown[b.name], b.name
    finally:
        conn.close()
