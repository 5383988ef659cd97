"""`halton-meter statusline`: golden lines for each kind of input, run as Claude Code runs it (a cold process,
JSON on standard input), with the clock and zone fixed: `TZ` and `HALTON_METER_STATUSLINE_NOW` (the
statusline's test-only clock; docs/statusline.md). Every run must exit 0 with nothing on stderr.

The fixture database (`home`), in Asia/Kolkata (UTC+5:30, so local midnight is 18:30 UTC), "now" being
2026-11-22 10:07:30 UTC (15:37:30 local, Sunday):

* session `sess-1` (project acme, account fpA): $0.30 at 09:00 (a whole rollup bucket) and $0.12 at 10:05
  (after the last whole bucket: read from `calls`), plus an in-flight row of $8 that never counts;
* today also: $2.68 of beta at 19:00 UTC yesterday (00:30 local today; subscription-billed), a $0 call of
  gamma; not today: acme's $1.00 at 18:29:59.999999 UTC (23:59:59 local yesterday), a $7 self-test, a $9
  call after "now";
* acme this month also: $37.78 at 2026-10-31 18:45 UTC (1 November local); not: $5 at 18:29 (31 October);
* plan snapshots: fpA (the session's account) 5h 62%, 7d 31%, 7d_opus 80% (an older 5h row at 10%);
  fpB, seen later: 5h 95%, 7d rejected at 50%, 7d_sonnet past its reset; fpC only an API-key window.

So: session $0.42, today $3.10, acme month $39.20.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reportkit import call, local_zone, write

from halton_meter import statusline
from halton_meter.store.schema import MIGRATIONS, migrate

ZONE = "Asia/Kolkata"
NOW = "2026-11-22T10:07:30Z"
SESSION = {"session_id": "sess-1", "cwd": "/work/acme", "workspace": {"current_dir": "/work/acme",
           "project_dir": "/work/acme"}, "model": {"id": "claude-opus-4-5", "display_name": "Opus 4.5"},
           "transcript_path": "/tmp/t.jsonl", "version": "2.1.90", "cost": {"total_cost_usd": 0.41}}
LINE = "$0.42 session · $3.10 today · acme $39.20 month · 5h 62% ↻18:05 · 7d 31% · 7d_opus 80% ↻Thu 09:00"
FALLBACK_PLAN = "5h 95% ↻17:30 · 7d 50% ↻Tue 05:30 · 7d_sonnet 0%"
POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal and SIGINT to a child are POSIX")
HEAVY = ("mitmproxy", "rich", "pluggy", "click", "sqlalchemy", "structlog")
Y, R, OFF = "\033[33m", "\033[31m", "\033[0m"


def snap(account: str, window: str, seen_at: str, kind: str = "plan", **fields: object) -> dict[str, object]:
    return {"seen_at": seen_at, "provider": "anthropic", "account": account, "kind": kind, "window": window,
            **fields}


def fixture_calls() -> list:
    fa = dict(project="acme", key_fingerprint="fpA")
    return [
        call("2026-11-22T09:00:00.000000Z", cost_nanos=300_000_000, session_id="sess-1", **fa,
             plan=[snap("fpA", "5h", "2026-11-22T09:00:01.000000Z", utilization=0.10,
                        resets_at="2026-11-22T12:35:00.000000Z", status="allowed")]),
        call("2026-11-22T10:05:00.000000Z", cost_nanos=120_000_000, session_id="sess-1", **fa, plan=[
            snap("fpA", "5h", "2026-11-22T10:05:01.000000Z", utilization=0.62,
                 resets_at="2026-11-22T12:35:00.000000Z", status="allowed"),
            snap("fpA", "7d", "2026-11-22T10:05:01.000000Z", utilization=0.31,
                 resets_at="2026-11-26T03:30:00.000000Z", status="allowed"),
            snap("fpA", "7d_opus", "2026-11-22T10:05:01.000000Z", utilization=0.80,
                 resets_at="2026-11-26T03:30:00.000000Z", status="allowed_warning"),
            snap("fpA", "unified", "2026-11-22T10:05:01.000000Z", status="allowed")]),
        call("2026-11-22T08:30:00.000000Z", cost_nanos=8_000_000_000, session_id="sess-1",
             incomplete_reason="in_progress", complete=False, **fa),
        call("2026-11-21T19:00:00.000000Z", cost_nanos=2_680_000_000, project="beta", key_fingerprint="fpB",
             billing="subscription", plan=[
                 snap("fpB", "5h", "2026-11-22T10:06:00.000000Z", utilization=0.95,
                      resets_at="2026-11-22T12:00:00.000000Z", status="allowed_warning"),
                 snap("fpB", "7d", "2026-11-22T10:06:00.000000Z", utilization=0.5,
                      resets_at="2026-11-24T00:00:00.000000Z", status="rejected"),
                 snap("fpB", "7d_sonnet", "2026-11-22T10:06:00.000000Z", utilization=0.99,
                      resets_at="2026-11-22T09:00:00.000000Z", status="rejected"),
                 snap("fpB", "unified", "2026-11-22T10:06:00.000000Z", status="rejected")]),
        call("2026-11-22T10:07:00.000000Z", cost_nanos=0, project="gamma", key_fingerprint="fpC",
             plan=[snap("fpC", "requests", "2026-11-22T10:07:00.000000Z", kind="api", utilization=0.99)]),
        call("2026-11-21T18:29:59.999999Z", cost_nanos=1_000_000_000, **fa),
        call("2026-11-22T08:00:00.000000Z", cost_nanos=7_000_000_000, endpoint_kind="self_test", **fa),
        call("2026-11-22T10:08:00.000000Z", cost_nanos=9_000_000_000, **fa),
        call("2026-10-31T18:29:00.000000Z", cost_nanos=5_000_000_000, **fa),
        call("2026-10-31T18:45:00.000000Z", cost_nanos=37_780_000_000, **fa),
    ]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("statusline-home")
    write(directory / "db.sqlite", fixture_calls())
    return directory


def run(home: Path, stdin: bytes | str | dict | None = None, *args: str, colour: bool = False,
        timeout: float = 30, **env: str) -> str:
    """`python -m halton_meter statusline ARGS` with `stdin` (a dict is sent as JSON; None: /dev/null);
    asserts exit 0 and a silent stderr, returns stdout."""
    data = json.dumps(stdin) if isinstance(stdin, dict) else stdin
    result = subprocess.run([sys.executable, "-m", "halton_meter", "statusline", *args],
                            input=data.encode() if isinstance(data, str) else data,
                            stdin=subprocess.DEVNULL if data is None else None, capture_output=True,
                            env=child_env(home, colour, **env), timeout=timeout)
    assert result.returncode == 0, result
    assert result.stderr == b"", result.stderr.decode()
    return result.stdout.decode()


def child_env(home: Path, colour: bool = False, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "HALTON_METER_HOME")}
    env.update(HALTON_METER_HOME=str(home), TZ=ZONE, HALTON_METER_STATUSLINE_NOW=NOW, **extra)
    if not colour:
        env["NO_COLOR"] = "1"
    return env


# ---- golden lines ------------------------------------------------------------------------------------------


def test_full_input_gives_session_today_month_and_the_sessions_plan(home: Path) -> None:
    assert run(home, SESSION) == LINE + "\n"


def test_colours_mark_hot_windows_unless_no_color(home: Path) -> None:
    coloured = LINE.replace("7d_opus 80% ↻Thu 09:00", f"{Y}7d_opus 80% ↻Thu 09:00{OFF}")
    assert run(home, SESSION, colour=True) == coloured + "\n"
    plan = f"{R}5h 95% ↻17:30{OFF} · {R}7d 50% ↻Tue 05:30{OFF} · 7d_sonnet 0%"
    assert run(home, {"session_id": "new"}, colour=True) == f"$0.00 session · $3.10 today · {plan}\n"
    assert run(home, SESSION, colour=True, NO_COLOR="") == LINE + "\n"  # set, even empty: no escape codes


def test_a_session_without_calls_yet_shows_the_last_seen_plan_and_no_month(home: Path) -> None:
    assert run(home, {"session_id": "brand-new"}) == f"$0.00 session · $3.10 today · {FALLBACK_PLAN}\n"


@pytest.mark.parametrize("stdin", [None, b"", b"   \n", b"\x00\xff\xfe not json", b"[1, 2]", b'"just a string"',
                                   b'{"session_id": 42, "model": "x"}', b"{" * 100_000],
                         ids=["devnull", "empty", "blank", "garbage", "array", "string", "wrong-types", "deep"])
def test_without_usable_input_it_prints_what_it_can(home: Path, stdin: bytes | None) -> None:
    assert run(home, stdin) == f"$3.10 today · {FALLBACK_PLAN}\n"


def test_truncated_json_still_gives_the_session(home: Path) -> None:
    text = json.dumps(SESSION)
    assert run(home, text[: text.index('"cwd"') + 3]) == LINE + "\n"


@POSIX_ONLY
def test_a_terminal_on_stdin_is_not_read(home: Path) -> None:
    import pty

    controller, terminal = pty.openpty()
    os.write(controller, json.dumps(SESSION).encode() + b"\n")  # typed at the terminal: must not be taken
    try:
        result = subprocess.run([sys.executable, "-m", "halton_meter", "statusline"], stdin=terminal,
                                capture_output=True, env=child_env(home), timeout=30)
    finally:
        os.close(controller)
        os.close(terminal)
    assert (result.returncode, result.stdout.decode(), result.stderr) == (0, f"$3.10 today · {FALLBACK_PLAN}\n", b"")


def test_a_pipe_never_closed_does_not_hang_it(home: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "halton_meter", "statusline"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(home))
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(json.dumps(SESSION).encode())
        proc.stdin.flush()  # and never closed: it gives up waiting after a second, with what it read
        began = time.monotonic()
        out, err = proc.stdout.read(), proc.stderr.read()
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - began < 10
    finally:
        proc.kill()
        proc.stdin.close()
    assert (out.decode(), err) == (LINE + "\n", b"")


def waiting_on_stdin(pid: int, timeout: float = 20) -> None:
    """Until the process sleeps in select/poll (Linux: /proc/PID/wchan), i.e. it is past its imports."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if "poll" in Path(f"/proc/{pid}/wchan").read_text() or "select" in Path(f"/proc/{pid}/wchan").read_text():
                return
        except OSError:
            break
        time.sleep(0.01)
    time.sleep(0.5)  # no /proc: give it the time a cold start takes


@POSIX_ONLY
def test_ctrl_c_exits_quietly(home: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "halton_meter", "statusline"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(home))
    try:
        waiting_on_stdin(proc.pid)  # it waits up to a second for the pipe, never closed here
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert (proc.returncode, out, err) == (0, b"", b"")


# ---- --format ----------------------------------------------------------------------------------------------


def test_format_fills_every_placeholder(home: Path) -> None:
    template = "{model} | {session} | {today} today | {project}: {month} | 5h {5h} | 7d {7d} | opus {7d_opus} | {{x}}"
    expected = "Opus 4.5 | $0.42 | $3.10 today | acme: $39.20 | 5h 62% ↻18:05 | 7d 31% | opus 80% ↻Thu 09:00 | {x}"
    assert run(home, SESSION, "--format", template) == expected + "\n"
    assert run(home, SESSION, f"--format={template}") == expected + "\n"


def test_format_drops_pieces_whose_placeholders_are_all_empty(home: Path) -> None:
    template = "{session} s · {7d_sonnet} sonnet · {today} · {project}/{month} · [{plan}]"
    assert run(home, SESSION, "--format", template) == \
        "$0.42 s · $3.10 · acme/$39.20 · [5h 62% ↻18:05 · 7d 31% · 7d_opus 80% ↻Thu 09:00]\n"
    assert run(home, {"model": {"id": "m"}}, "--format", "{session} s · {month} m · {model}") == "m\n"


@pytest.mark.parametrize(("args", "expected"), [
    (["--format", "{today} {cost}"], "halton-meter statusline: unknown placeholder {cost} in --format"),
    (["--format", "{today"], "halton-meter statusline: unmatched '{' in --format"),
    (["--format", "today}"], "halton-meter statusline: unmatched '}' in --format"),
    (["--format"], "halton-meter statusline: --format needs a TEMPLATE"),
    (["--json"], "halton-meter statusline: unknown argument '--json'"),
])
def test_a_bad_command_line_is_one_line_and_exit_0(home: Path, args: list[str], expected: str) -> None:
    out = run(home, SESSION, *args)
    assert out.startswith(expected) and out.count("\n") == 1, out


# ---- databases ---------------------------------------------------------------------------------------------


def test_no_database_yet(tmp_path: Path) -> None:
    home = tmp_path / "not-yet"
    assert run(home, SESSION) == "halton-meter: no calls yet (no database)\n"
    assert not home.exists()  # nothing created


def test_no_calls_yet(tmp_path: Path) -> None:
    migrate(tmp_path / "db.sqlite")
    assert run(tmp_path, SESSION) == "halton-meter: no calls yet\n"
    (tmp_path / "db.sqlite").unlink()
    (tmp_path / "db.sqlite").write_bytes(b"")  # the meter's first start, before the schema
    assert run(tmp_path, SESSION) == "halton-meter: no calls yet\n"


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "db.sqlite").write_bytes(b"this is not SQLite " * 100)
    assert run(tmp_path, SESSION) == f"halton-meter: cannot read {tmp_path / 'db.sqlite'} (file is not a database)\n"


def older(source: Path, target: Path, version: int) -> None:
    """A database at schema `version` holding `source`'s calls (the columns that version has)."""
    conn = sqlite3.connect(target, isolation_level=None)
    for v in range(1, version + 1):
        for statement in MIGRATIONS[v]:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    columns = ", ".join(row[1] for row in conn.execute("PRAGMA table_info(calls)"))
    conn.execute("ATTACH DATABASE ? AS new", (str(source),))
    conn.execute(f"INSERT INTO calls ({columns}) SELECT {columns} FROM new.calls")
    conn.execute("DETACH DATABASE new")
    conn.close()


@pytest.mark.parametrize(("version", "expected"), [
    (12, "$3.10 today"),  # no session_id, no plan_snapshots: no session, month or plan
    (6, "$3.10 today"),  # no rollup either: the same sums from `calls`
])
def test_an_older_schema_degrades(home: Path, tmp_path: Path, version: int, expected: str) -> None:
    older(home / "db.sqlite", tmp_path / "db.sqlite", version)
    assert run(tmp_path, SESSION) == expected + "\n"
    assert run(tmp_path, SESSION, "--format", "{today} · {session} s · {plan}") == expected.split()[0] + "\n"


def test_without_the_rollup_the_sums_are_the_same(home: Path, tmp_path: Path) -> None:
    """Schema 12 with the session column and plan table added by hand, the rollup tables dropped."""
    db = tmp_path / "db.sqlite"
    older(home / "db.sqlite", db, 12)
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in MIGRATIONS[13]:
        conn.execute(statement)
    conn.execute("ATTACH DATABASE ? AS new", (str(home / "db.sqlite"),))
    conn.execute("UPDATE calls SET session_id = (SELECT n.session_id FROM new.calls AS n WHERE n.id = calls.id)")
    conn.execute("INSERT INTO plan_snapshots SELECT * FROM new.plan_snapshots")
    conn.execute("DETACH DATABASE new")
    for name in [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]:
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE rollup")
    conn.close()
    assert run(tmp_path, SESSION) == LINE + "\n"


def test_a_locked_database_is_one_line_quickly(home: Path, tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    db.write_bytes((home / "db.sqlite").read_bytes())
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        began = time.monotonic()
        assert run(tmp_path, SESSION) == "halton-meter: database busy, shown next time\n"
        assert time.monotonic() - began < 10
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert run(tmp_path, SESSION) == LINE + "\n"


def test_it_reads_the_database_directly_with_the_meter_stopped_and_writes_nothing(home: Path, tmp_path: Path) -> None:
    """No meter runs in these tests; a stale runtime.json (a meter that was stopped) changes nothing, and
    the database file is left byte for byte as it was."""
    db = tmp_path / "db.sqlite"
    db.write_bytes((home / "db.sqlite").read_bytes())
    (tmp_path / "runtime.json").write_text(json.dumps({"api_port": 9, "edge_port": 9, "pid": 999999}))
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    assert run(tmp_path, SESSION) == LINE + "\n"
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


# ---- the same sums as the report -----------------------------------------------------------------------------


def test_today_and_month_equal_the_report_including_subscription_list_price(home: Path) -> None:
    from halton_meter import report
    from halton_meter.store.aggregate import Filters
    from halton_meter.timewindow import resolve_window

    now = datetime.datetime.fromisoformat(NOW)
    with local_zone(ZONE):
        today = report.build(home / "db.sqlite", resolve_window(today=True, now=now)).totals.metrics
        month = report.build(home / "db.sqlite", resolve_window(month=True, now=now),
                             filters=Filters(project=("acme",))).totals.metrics
        conn = statusline.open_read_only(str(home / "db.sqlite"))
        schema = statusline.Schema(conn)
        stamp = now.timestamp()
        mine_today = statusline.window_cost(conn, schema, statusline.local_midnight(stamp), stamp)
        mine_month = statusline.window_cost(conn, schema, statusline.month_start(stamp), stamp, "acme")
        conn.close()
    assert today.subscription_cost_nanos > 0 and today.cost_nanos > 0  # the fixture has both kinds
    assert mine_today == today.cost_nanos + today.subscription_cost_nanos
    assert mine_month == month.cost_nanos + month.subscription_cost_nanos
    assert f"{statusline.dollars(mine_today)} today" in LINE and f"acme {statusline.dollars(mine_month)} month" in LINE


def test_the_exclusion_rule_is_the_rollups() -> None:
    from halton_meter.store import rollup

    assert statusline.CONTRIBUTES == rollup.CONTRIBUTES


@pytest.mark.parametrize("env", [{"HALTON_METER_HOME": "/srv/meter"}, {"HALTON_METER_HOME": "~/m"},
                                 {"HOME": "/home/someone"}, {"HOME": ""}])
def test_the_home_is_found_as_paths_finds_it(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    from halton_meter.paths import Paths

    monkeypatch.delenv("HALTON_METER_HOME", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert statusline.database_path() == str(Paths.from_env().db)


@pytest.mark.parametrize(("nanos", "text"), [(0, "$0.00"), (4_999_999, "$0.00"), (5_000_000, "$0.01"),
                                             (1_234_565_000_000, "$1,234.57"), (-20_000_000, "-$0.02")])
def test_dollars_round_half_up_to_the_cent(nanos: int, text: str) -> None:
    assert statusline.dollars(nanos) == text


# ---- a cold start that imports nothing heavy -------------------------------------------------------------------


def imported(home: Path, *command: str) -> set[str]:
    """The modules a run imports, from `-X importtime` (every import, in the order made)."""
    result = subprocess.run([sys.executable, "-X", "importtime", *command], input=json.dumps(SESSION).encode(),
                            capture_output=True, env=child_env(home), timeout=30)
    assert result.returncode == 0
    lines = [line for line in result.stderr.decode().splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}


@pytest.mark.parametrize("command", [
    ("-m", "halton_meter", "statusline"),
    ("-c", "import sys; sys.argv = ['halton-meter', 'statusline']; from halton_meter.entry import main; main()"),
], ids=["python-m", "console-script"])
def test_the_fast_path_imports_nothing_heavy(home: Path, command: tuple[str, ...]) -> None:
    modules = imported(home, *command)
    assert "halton_meter.statusline" in modules and "sqlite3" in modules  # the list is read
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, heavy
    baseline = imported(home, "-c", "pass")
    assert not {"json", "re", "typing", "pathlib"} & (modules - baseline)  # what the module is built to avoid


def test_other_commands_still_go_through_the_cli(home: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "halton_meter", "statusline", "--help"], capture_output=True,
                            env=child_env(home), timeout=30)
    assert result.returncode == 0 and result.stdout.decode().startswith("Usage: halton-meter statusline")
    assert "--format TEMPLATE" in result.stdout.decode()
