"""Bad inputs (docs/testing.md, "Bad inputs", B1–B10) and the UX-of-failure items U2–U4 ("UX of failure").

The contract: one clear line, the documented exit code, never a traceback, never silently weaker privacy,
and nothing the user owns moved or deleted.

Most checks run the CLI in-process (the `cli` fixture) or start a short-lived child process. Checks that
need live traffic share one real `serve` (`bad`) whose home is prepared before it starts: a world-readable
(0755) home holding a schema-v1 database (B4 older schema, B5 loose modes). Two more meters are broken on
purpose (B3 at run time, B3 foreign WAL).

Covered elsewhere, on purpose not repeated here:
* B1: `calls`, `report`, `plugins`, `run`, `serve` on a syntax error: tests/test_config.py
  (`test_every_command_stops_on_a_bad_config_with_exit_2`); load_config's messages: tests/test_config.py
  (`test_syntax_errors_name_file_line_and_column`, `test_wrong_types_and_unknown_keys_are_errors`, B2).
* B3: a garbage file refused by `calls`, `report` and `serve` with exit 3, left in place: tests/test_store.py
  (`test_cli_reports_a_corrupt_database_with_exit_3`, `test_corrupt_file_is_refused_and_left_in_place`).
* B4 at the function level (backup then migrate; newer refused naming both versions): tests/test_store.py
  (`test_upgrade_from_v1_backs_up_then_migrates_keeping_rows`, `test_newer_schema_is_refused_naming_both_versions`).
* B5: a CA key others can read is refused by `ensure_ca`: tests/test_ca.py (`test_a_key_others_can_read_is_refused`).
* B7 on an in-process `Edge`: tests/test_edge_api.py (`test_refusals_answer_with_a_status_and_the_edge_keeps_serving`).
* B10 `report --since -1`, `--since` after `--until`, `calls --limit -3`, unknown command: tests/test_cli.py
  (`test_usage_errors_are_one_line_and_exit_2`).
* U2 (status of an unsupervised foreground `serve`: HEALTHY-ish, supervisor row "unsupervised"):
  tests/test_lifecycle.py::test_foreground_serve_is_healthy_and_unsupervised.
* U4 (`run CMD` with the core down and the edge up: the command runs, a warning says metering is paused):
  tests/test_lifecycle.py::test_run_warns_when_the_core_is_down_but_still_runs.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from halton_meter.errors import ExitCode
from halton_meter.paths import Paths
from halton_meter.store.schema import LATEST_VERSION, MIGRATIONS, migrate
from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess, meter_env, write_config

ANTHROPIC = "https://api.anthropic.com"
PLAIN_HOST = "plain.test"
CANARY_KEY = "sk-ant-api03-CANARYKEY-bad-inputs"


def utc_now() -> str:
    """Now, in the format of the rows' `started_at` (so string comparison orders them)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rows_since(meter: MeterProcess, since: str, include_in_progress: bool = False) -> list[dict[str, Any]]:
    return [r for r in meter.rows(include_in_progress=include_in_progress) if r["started_at"] >= since]


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one line, got {len(lines)}:\n{text}"
    return lines[0]


def digest(directory: Path) -> dict[str, str]:
    """Every file under `directory` (relative name → SHA-256), to prove nothing was moved, changed or deleted."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def run_module(home: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], env=meter_env(home, **env), capture_output=True,
                          text=True, timeout=timeout, cwd=home.parent)


def user_version(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def make_v1_database(db: Path, row_id: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO calls (id, started_at, recorded_at, provider, endpoint_kind, host, method, path, streamed,"
        " complete, billable, usage_reported, priced, project, project_source)"
        " VALUES (?, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', 'openai', 'chat.completions',"
        " 'api.openai.com', 'POST', '/v1/chat/completions', 0, 1, 1, 1, 1, 'p', 'cwd')", (row_id,))
    conn.close()


def make_database_with_gaps(db: Path, rows: int, prefix: str, keep_open: bool = False) -> sqlite3.Connection | None:
    """A current-schema database with `rows` gap rows; with `keep_open` the rows stay in the WAL (no checkpoint)."""
    migrate(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    for i in range(rows):
        conn.execute("INSERT INTO gaps (id, at, host, reason) VALUES (?, '2026-01-01T00:00:00Z', 'h', ?)",
                     (f"{prefix}-{i}", "x" * 100))
    # What the meter's writer does on every commit: so this WAL carries the database's identity page, as any
    # WAL a real meter wrote does (the protection cannot tell apart a WAL that never touched that page).
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'writes'")
    if keep_open:
        return conn
    conn.close()
    return None


# ==================================================================================================
# B1: config.toml syntax errors
# ==================================================================================================

SYNTAX_ERROR = "[edge]\nport = \n"


@pytest.fixture
def private_home(paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    """The meter's home, and a throwaway HOME so that no command can touch the real one."""
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.setenv("HOME", str(user))
    monkeypatch.setenv("SHELL", "/bin/bash")
    paths.home.mkdir(mode=0o700)
    return paths


@pytest.mark.parametrize("command", [["logs"], ["prices", "claude-sonnet-4-5"],
                                     ["reprice"], ["start"], ["stop"], ["restart"], ["init", "--non-interactive"],
                                     ["uninstall"], ["reset-proxy"], ["calls", "--json"], ["report", "--json"]])
def test_b1_every_other_command_stops_on_a_config_syntax_error(private_home: Paths, cli, command) -> None:
    private_home.config.write_text(SYNTAX_ERROR)
    before = digest(private_home.home.parent)
    result = cli(*command)
    assert result.exit_code == ExitCode.USAGE, result
    assert one_line(result.stderr) == f"halton-meter: error: {private_home.config}:2:8: invalid value"
    assert result.stdout == ""
    assert digest(private_home.home.parent) == before  # no silent defaults: no CA, no database, no rc edits


def test_b1_status_says_broken_and_names_the_config_error(private_home: Paths, cli) -> None:
    """C4's second half: `status` is what a user runs when things break, so it never stops at the config: it
    reports what runs and says BROKEN with the config line, changing nothing."""
    private_home.config.write_text(SYNTAX_ERROR)
    before = digest(private_home.home.parent)
    result = cli("status", "--json")
    assert result.exit_code == ExitCode.NOT_RUNNING, result
    data = json.loads(result.stdout)
    assert data["verdict"] == "BROKEN" and data["rows"][0]["id"] == "config"
    assert data["rows"][0]["status"] == "fail" and data["rows"][0]["summary"].startswith(
        f"{private_home.config}:2:8: invalid value: the meter cannot start or restart with it")
    assert "config.toml" in data["rows"][0]["fix"]
    text = cli("status")
    assert text.exit_code == ExitCode.NOT_RUNNING and text.stdout.startswith("BROKEN") and text.stderr == ""
    assert digest(private_home.home.parent) == before


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[edge]\nport = 1\nport = 2\n", ":3:"),  # duplicate key
        ("[capture\nprojects = []\n", ":1:9:"),
        ('[upstream]\nca_bundle = "C:\\qx"\n', ":2:"),  # invalid escape
        ("[edge]\nport 8081\n", ":2:"),
        ("[edge]\nport = 1 # ok\n[edge]\n", ":3:"),  # table defined twice
    ],
)
def test_b1_serve_refuses_to_start_on_any_syntax_error(private_home: Paths, cli, text: str, where: str) -> None:
    private_home.config.write_text(text)
    result = cli("serve", "--edge-port", "0", "--api-port", "0")
    assert result.exit_code == ExitCode.USAGE
    line = one_line(result.stderr)
    assert line.startswith(f"halton-meter: error: {private_home.config}{where}"), line
    assert sorted(p.name for p in private_home.home.iterdir()) == ["config.toml"]


def test_b1_the_core_refuses_a_bad_config_on_its_own(paths: Paths) -> None:
    """What a supervisor restart meets when config.toml broke while the meter ran: a line and exit 2."""
    paths.home.mkdir(mode=0o700)
    paths.config.write_text(SYNTAX_ERROR)
    result = run_module(paths.home, "halton_meter.core", timeout=60)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert one_line(result.stderr) == f"halton-meter core: {paths.config}:2:8: invalid value"
    assert "READY" not in result.stdout


def test_b1_the_edge_starts_on_a_bad_config_says_why_and_passes_traffic(paths: Paths) -> None:
    """C4's first half: an edge restarted after config.toml broke must not leave the proxy port dead (every
    client would hang on the supervisor's listening socket): it starts on the defaults, names the error,
    publishes it for `status`, and answers at once."""
    paths.home.mkdir(mode=0o700)
    paths.config.write_text(SYNTAX_ERROR)
    proc = subprocess.Popen([sys.executable, "-m", "halton_meter.edge", "--port", "0"], env=meter_env(paths.home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"READY"
        stats = wait_for_stats(paths.run_dir / "edge-stats.json", timeout=10)
        assert stats["config_error"] == f"{paths.config}:2:8: invalid value"
        port = listening_port(proc)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n")
            conn.settimeout(5)
            assert conn.recv(100).startswith(b"HTTP/1.1 403")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert err.decode().splitlines()[0] == (f"halton-meter edge: {paths.config}:2:8: invalid value; passing traffic "
                                            "through with the defaults until it is fixed")


def wait_for_stats(path: Path, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"{path} not published within {timeout} s")


def listening_port(proc: subprocess.Popen[bytes]) -> int:
    import psutil

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for conn in psutil.Process(proc.pid).net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                return int(conn.laddr.port)
        time.sleep(0.05)
    raise AssertionError("the edge does not listen")


def test_b1_doctor_shows_the_config_error_first(private_home: Paths, cli) -> None:
    private_home.config.write_text(SYNTAX_ERROR)
    result = cli("doctor", "--json")
    checks = json.loads(result.stdout)["checks"]
    assert checks[0]["id"] == "check.config" and checks[0]["status"] == "fail"


# ==================================================================================================
# B2: wrong types and unknown keys stop `serve` too (privacy and security settings above all)
# ==================================================================================================


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[api]\nport = "abc"\n', "api.port"),
        ("[bodys]\nenabled = true\n", "[bodys]"),
        ('[capture]\nproject = ["mine"]\n', "capture.project"),  # typo of `projects`
        ('[capture]\nprojects = ["*"]\n', "capture.projects"),  # capture is never on for everything
        ('[capture]\nprojects = "all"\n', "capture.projects"),
        ("[capture]\nmax_bytes = true\n", "capture.max_bytes"),
        ('[upstream]\nca_bundel = "corp.pem"\n', "upstream.ca_bundel"),
        ("[edge]\nidle_timeout_seconds = 5\n", "edge.idle_timeout_seconds"),
        ("[edge]\nmax_connections = 1e9\n", "edge.max_connections"),
        ('[prices.anthropic."claude-x"]\ninput = "free"\noutput = 1\n', 'prices.anthropic."claude-x".input'),
        ('[[compatible]]\nname = "gw"\nhosts = ["llm.test"]\nformat = "openai"\nbilling = "free"\n',
         "compatible[0].billing"),
        ("plugins = 1\n", "[plugins]"),
    ],
)
def test_b2_serve_refuses_wrong_types_and_unknown_keys_naming_the_key(private_home: Paths, cli, text, key) -> None:
    private_home.config.write_text(text)
    result = cli("serve", "--edge-port", "0", "--api-port", "0")
    assert result.exit_code == ExitCode.USAGE
    line = one_line(result.stderr)
    assert line.startswith("halton-meter: error: config.toml: ") and key in line, line
    assert sorted(p.name for p in private_home.home.iterdir()) == ["config.toml"]


# ==================================================================================================
# B3: corrupt databases
# ==================================================================================================


@pytest.mark.e2e
@pytest.mark.parametrize("keep", ["half", "first page", "header only", "random"])
def test_b3_serve_starts_the_proxy_on_a_corrupt_database_and_moves_nothing(private_home: Paths, keep) -> None:
    """C5: a database the core cannot use never keeps the proxy from listening (every proxied tool would
    get "connection refused"): the edge serves, the core says why in one line and is retried, `status`
    names it, and the file is left exactly as it was."""
    db = private_home.db
    make_database_with_gaps(db, 200, "t")
    data = db.read_bytes()
    assert len(data) > 4 * 4096
    cut = {"half": data[: len(data) // 2], "first page": data[:4096], "header only": data[:100],
           "random": os.urandom(len(data))}[keep]
    db.write_bytes(cut)
    before = digest(private_home.home)
    status: dict[str, Any] = {}

    def while_serving(home: Path) -> None:
        runtime = json.loads((home / "runtime.json").read_text())
        with socket.create_connection(("127.0.0.1", runtime["edge_port"]), timeout=5):
            pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (home / "run" / "core-error.json").exists():
            time.sleep(0.1)
        status.update(json.loads(run_module(home, "halton_meter", "status", "--json").stdout))

    code, output = _serve_until_ready_or_exit(private_home.home, while_serving=while_serving)
    assert code is None, output
    refusals = [line for line in output.splitlines() if line.startswith("halton-meter core: database")]
    # A cut of a good file is called what it is (its header says how long it should be); random bytes are
    # not a database at all. Either way: one line, the file named, nothing changed, what to do.
    problem, aside = ("is not a valid SQLite file", "corrupt") if keep == "random" else ("is truncated", "truncated")
    assert refusals and refusals[0].startswith(f"halton-meter core: database {db} {problem}"), output
    assert ("nothing was moved" in refusals[0] or "nothing was changed" in refusals[0])
    assert f"mv {db} {db}.{aside}" in refusals[0]
    assert "Traceback" not in output
    core_row = next(r for r in status["rows"] if r["id"] == "core")
    assert core_row["status"] == "fail" and problem in core_row["summary"], core_row
    after = digest(private_home.home)
    assert {k: v for k, v in after.items() if k in before} == before  # the database is exactly as it was
    assert not [k for k in after if "db.sqlite" in k and k not in before]


def test_b3_the_core_process_alone_refuses_a_corrupt_database(paths: Paths) -> None:
    """A core restarted by the supervisor after the file got corrupted: one line, exit 3."""
    paths.home.mkdir(mode=0o700)
    paths.db.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    before = paths.db.read_bytes()
    result = run_module(paths.home, "halton_meter.core")
    assert result.returncode == ExitCode.DATABASE, result.stderr
    assert one_line(result.stderr).startswith(f"halton-meter core: database {paths.db} is not a valid SQLite file")
    assert paths.db.read_bytes() == before and not list(paths.home.glob("db.sqlite?*"))


def _serve_until_ready_or_exit(home: Path, timeout: float = 40.0,
                               while_serving: Any = None) -> tuple[int | None, str]:
    """Start `serve`; (exit code, output) if it exits by itself, or (None, output) once it is serving (after
    `while_serving(home)`, if given, it is stopped)."""
    log = home.parent / f"{home.name}-serve-probe.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "halton_meter", "serve", "--edge-port", "0", "--api-port", "0"],
                                env=meter_env(home), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return proc.returncode, log.read_text(errors="replace")
            if (home / "runtime.json").exists():
                if while_serving is not None:
                    while_serving(home)
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
                return None, log.read_text(errors="replace")
            time.sleep(0.05)
        raise AssertionError(f"serve neither started nor exited within {timeout}s:\n{log.read_text()}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.mark.e2e
def test_b3_a_wal_from_another_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    make_database_with_gaps(home / "db.sqlite", 5, "ours")
    other = tmp_path / "other"
    other.mkdir()
    holder = make_database_with_gaps(other / "db.sqlite", 300, "theirs", keep_open=True)
    try:
        shutil.copy(other / "db.sqlite-wal", home / "db.sqlite-wal")
    finally:
        assert holder is not None
        holder.close()
    before = digest(home)

    def while_serving(home: Path) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (home / "run" / "core-error.json").exists():
            time.sleep(0.1)

    code, output = _serve_until_ready_or_exit(home, while_serving=while_serving)
    assert code is None, output  # the proxy serves; the core refuses the database and says why
    assert "write-ahead log (db.sqlite-wal) that belongs to another database" in output, output
    assert digest(home) == {**before, **{k: v for k, v in digest(home).items() if k not in before}}
    assert (home / "db.sqlite-wal").exists()


# ---- B3 at run time: the file breaks under a running meter --------------------------------------


@dataclass
class Broken:
    meter: MeterProcess
    fake: FakeProvider
    garbage: bytes
    restarts: list[float] = field(default_factory=list)


def _core_restart_delays(log: str) -> list[float]:
    return [float(m.group(1)) for line in log.splitlines()
            if "child exited; restarting" in line and "child='core'" in line
            for m in [re.search(r"restart_in_s=([\d.]+)", line)] if m]


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broken]:
    home = tmp_path_factory.mktemp("broken") / "home"
    with FakeProvider() as fake:
        fake.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=5, output_tokens=1)))
        meter = MeterProcess.start(home, fake)
        try:
            garbage = os.urandom(64 * 1024)
            replacement = home / "db.replacement"
            replacement.write_bytes(garbage)
            os.replace(replacement, home / "db.sqlite")
            for suffix in ("-wal", "-shm"):
                (home / f"db.sqlite{suffix}").unlink(missing_ok=True)
            core_pid = json.loads((home / "run" / "core.json").read_text())["pid"]
            os.kill(core_pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            delays: list[float] = []
            while time.monotonic() < deadline and len(delays) < 3:
                time.sleep(0.2)
                delays = _core_restart_delays(meter.log())
            yield Broken(meter, fake, garbage, delays)
        finally:
            meter.stop()


@pytest.mark.e2e
def test_b3_supervisor_backs_off_while_the_core_refuses_the_database(broken: Broken) -> None:
    meter = broken.meter
    assert meter.proc.poll() is None  # serve keeps running (and keeps the edge up)
    assert len(broken.restarts) >= 3, meter.log()[-3000:]
    first = broken.restarts[:3]
    assert first == sorted(first) and first[2] >= 2 * first[0], first  # exponential, not every second
    refusals = [line for line in meter.log().splitlines() if line.startswith("halton-meter core: database")]
    assert refusals and all("is not a valid SQLite file" in line for line in refusals)
    assert "Traceback" not in meter.log()
    assert (meter.home / "db.sqlite").read_bytes() == broken.garbage  # nothing moved, nothing rewritten
    assert not [p.name for p in meter.home.iterdir() if p.name.startswith("db.sqlite") and p.name != "db.sqlite"]


@pytest.mark.e2e
def test_b3_the_edge_passes_traffic_through_while_the_core_cannot_start(broken: Broken) -> None:
    with broken.meter.client(extra_ca=broken.fake.ca_pem, timeout=15) as client:
        started = time.monotonic()
        response = client.post(f"{ANTHROPIC}/v1/messages", headers={"x-api-key": CANARY_KEY},
                               json={"model": "claude-sonnet-4-5", "messages": []})
    assert response.status_code == 200 and response.json()["usage"]["input_tokens"] == 5
    assert time.monotonic() - started < 3.0
    assert broken.fake.requests[-1].tls_sni == "api.anthropic.com"


@pytest.mark.e2e
def test_b3_status_names_the_database_problem(broken: Broken) -> None:
    result = broken.meter.cli("status", "--json", check=False)
    data = json.loads(result.stdout)
    text = " ".join(f"{row['summary']} {row.get('fix') or ''}" for row in data["rows"])
    assert "not a valid SQLite file" in text or "corrupt" in text, text


# ==================================================================================================
# B4: schema versions through the real commands
# ==================================================================================================


@pytest.mark.e2e
def test_b4_a_newer_schema_is_refused_by_every_command_naming_both_versions(private_home: Paths, cli) -> None:
    db = private_home.db
    migrate(db)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 3}")
    conn.commit()
    conn.close()
    before = digest(private_home.home)
    for command in (["calls"], ["report"]):
        result = cli(*command)
        assert result.exit_code == ExitCode.DATABASE, (command, result)
        line = one_line(result.stderr)
        assert f"schema version {LATEST_VERSION + 3}, newer than this Halton Meter" in line, line
        assert f"({LATEST_VERSION})" in line and "upgrade halton-meter" in line

    def while_serving(home: Path) -> None:  # the proxy serves; the core refuses, naming both versions
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (home / "run" / "core-error.json").exists():
            time.sleep(0.1)

    code, output = _serve_until_ready_or_exit(private_home.home, while_serving=while_serving)
    assert code is None and f"schema version {LATEST_VERSION + 3}, newer than this Halton Meter" in output, output
    assert user_version(db) == LATEST_VERSION + 3  # never downgraded
    assert {k: v for k, v in digest(private_home.home).items() if k in before} == before


# ==================================================================================================
# The shared meter: B4 (older schema), B5 (loose modes), B7, B8, B9, U3
# ==================================================================================================


@dataclass
class Bad:
    meter: MeterProcess
    fake: FakeProvider
    plain: FakeProvider


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bad]:
    home = tmp_path_factory.mktemp("bad-inputs") / "home"
    home.mkdir()
    os.chmod(home, 0o755)  # B5: a home others can list
    make_v1_database(home / "db.sqlite", "row-from-v1")  # B4: an older schema, with a row to keep
    os.chmod(home / "db.sqlite", 0o644)
    with FakeProvider(extra_hosts=("tunnel.test",)) as fake, FakeProvider(tls=False) as plain:
        rules = [*fake.resolve_rules(), f"{PLAIN_HOST}:80:127.0.0.1:{plain.port}"]
        write_config(home, ca_bundle=fake.ca_pem, resolve=rules)
        meter = MeterProcess.start(home, None)
        try:
            yield Bad(meter, fake, plain)
        finally:
            meter.stop()


@pytest.mark.e2e
def test_b4_serve_backs_up_an_older_schema_then_migrates_keeping_the_rows(bad: Bad) -> None:
    home = bad.meter.home
    [backup] = home.glob("db.sqlite.v1-*.bak")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert user_version(backup) == 1 and user_version(home / "db.sqlite") == LATEST_VERSION
    for db in (backup, home / "db.sqlite"):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        assert conn.execute("SELECT id FROM calls").fetchall() == [("row-from-v1",)]
        conn.close()


@pytest.mark.e2e
def test_b5_serve_tightens_a_world_readable_home(bad: Bad) -> None:
    home = bad.meter.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700  # was 0755 before serve
    for sub in ("ca", "run", "spool"):
        if (home / sub).exists():
            assert stat.S_IMODE((home / sub).stat().st_mode) == 0o700, sub


def test_b5_a_world_readable_ca_key_stops_serve_with_the_fix(private_home: Paths, cli) -> None:
    from halton_meter.ca import ensure_ca

    ensure_ca(private_home)
    key = private_home.ca_key_and_cert
    key.chmod(0o644)
    private_home.ca_dir.chmod(0o755)
    result = cli("serve", "--edge-port", "0", "--api-port", "0")
    assert result.exit_code == ExitCode.FAILURE
    assert one_line(result.stderr) == (
        f"halton-meter: error: CA key {key} is readable by other users (mode 0644); refusing to use it; "
        f"fix: chmod 600 {key}")
    assert stat.S_IMODE(key.stat().st_mode) == 0o644  # refused, not silently "fixed"
    assert stat.S_IMODE(private_home.ca_dir.stat().st_mode) == 0o700  # the directory is ours to tighten
    assert not private_home.runtime.exists() and not private_home.db.exists()


# ==================================================================================================
# B6: HOME unset, read-only
# ==================================================================================================


def test_b6_home_unset_falls_back_to_the_account_home(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    from halton_meter.paths import default_home

    monkeypatch.delenv("HALTON_METER_HOME")
    monkeypatch.delenv("HOME", raising=False)
    assert default_home() == Path(pwd.getpwuid(os.getuid()).pw_dir) / ".halton-meter"


def test_b6_an_empty_home_is_treated_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    from halton_meter.paths import default_home

    monkeypatch.delenv("HALTON_METER_HOME")
    monkeypatch.setenv("HOME", "")
    assert default_home() == Path(pwd.getpwuid(os.getuid()).pw_dir) / ".halton-meter"


def _read_only_home_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `halton-meter ARGS` with HOME on a read-only tmpfs, in a private mount namespace (needs root)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a read-only mount")
    ro = tmp_path / "ro-home"
    ro.mkdir(exist_ok=True)
    script = f'mount -t tmpfs -o ro,size=1m tmpfs "{ro}" || exit 99; exec "$@"'
    env = {k: v for k, v in meter_env(ro).items() if k != "HALTON_METER_HOME"}
    env["HOME"] = str(ro)
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                             sys.executable, "-m", "halton_meter", *args], env=env, capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    if result.returncode == 99:
        pytest.skip(f"cannot mount a read-only tmpfs here: {result.stderr.strip()}")
    return result


def test_b6_read_only_home_gives_one_line_naming_the_path(tmp_path: Path) -> None:
    target = tmp_path / "ro-home" / ".halton-meter"
    serve = _read_only_home_run(tmp_path, "serve", "--edge-port", "0", "--api-port", "0")
    assert serve.returncode != 0 and "Traceback" not in serve.stderr + serve.stdout
    line = one_line(serve.stderr)
    assert str(target) in line and "read-only file system" in line and "HALTON_METER_HOME" in line, line
    # Read-only commands keep working (nothing to show yet), still without a traceback.
    for command, code in ((["calls"], 0), (["report"], 0), (["status"], ExitCode.NOT_RUNNING)):
        result = _read_only_home_run(tmp_path, *command)
        assert result.returncode == code and "Traceback" not in result.stderr, (command, result.stderr)


def test_b6_read_only_home_is_a_user_error_not_an_internal_one(tmp_path: Path) -> None:
    serve = _read_only_home_run(tmp_path, "serve", "--edge-port", "0", "--api-port", "0")
    assert serve.returncode == ExitCode.FAILURE
    assert one_line(serve.stderr).startswith("halton-meter: error: ")


# ==================================================================================================
# B7: garbage on the proxy port (the real edge process)
# ==================================================================================================


def exchange(port: int, payload: bytes, timeout: float = 3.0) -> tuple[bytes, float]:
    """Send raw bytes to the edge; return what came back until it closed (or the head of a 200) and the time."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.monotonic()
        try:
            sock.sendall(payload)
        except OSError:  # the edge may close while a huge header is still being sent
            pass
        data = b""
        try:
            while len(data) < 1 << 20:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if data.startswith(b"HTTP/1.1 200") and b"\r\n\r\n" in data:
                    break
        except TimeoutError:
            return data, float("inf")
        except ConnectionError:
            pass
        return data, time.monotonic() - started


GARBAGE = [
    b"CONNECT tunnel.test:0 HTTP/1.1\r\n\r\n",
    b"CONNECT tunnel.test:99999 HTTP/1.1\r\n\r\n",
    b"CONNECT tunnel.test:-1 HTTP/1.1\r\n\r\n",
    b"CONNECT tunnel.test HTTP/1.1\r\n\r\n",  # missing port
    b"CONNECT tunnel.test: HTTP/1.1\r\n\r\n",
    b"CONNECT :443 HTTP/1.1\r\n\r\n",
    b"CONNECT ::1 HTTP/1.1\r\n\r\n",  # bare IPv6 literals
    b"CONNECT 2001:db8::1:443 HTTP/1.1\r\n\r\n",
    b"CONNECT [2001:db8::1 HTTP/1.1\r\n\r\n",
    b"GET http://tunnel.test/ HTTP/1.1\r\nX-Big: " + b"a" * 100 * 1024 + b"\r\n\r\n",  # 100 KiB header
    b"GET http://tunnel.test/" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",  # over-long request line
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # HTTP/2 prior knowledge
    b"\x16\x03\x01\x00\x05hello\r\n\r\n",  # TLS record header
    b"\x00\x01\x02\xff garbage\r\n\r\n",
    b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: tunnel.test\r\n\r\n",  # origin-form to a proxy
    b"CONNECT tunnel.test:443 HTTP/9.9\r\n\r\n",
    b"CONNECT tunnel.test:443 HTTP/1.1 extra\r\n\r\n",
]


def _edge_pid(meter: MeterProcess) -> int:
    import psutil

    for child in psutil.Process(meter.proc.pid).children():
        if "halton_meter.edge" in " ".join(child.cmdline()):
            return child.pid
    raise AssertionError("no edge process")


@pytest.mark.e2e
def test_b7_garbage_on_the_proxy_port_gets_400_or_431_within_a_second_and_the_edge_keeps_serving(bad: Bad) -> None:
    meter, fake = bad.meter, bad.fake
    edge_pid = _edge_pid(meter)
    for payload in GARBAGE:
        reply, took = exchange(meter.edge_port, payload)
        status = reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/1.1 ") else None
        assert status in (b"400", b"431") or reply == b"", (payload[:60], reply[:120])
        assert took < 1.0, (payload[:60], took)
    # The same edge process (not a restarted one) still tunnels and meters.
    assert _edge_pid(meter) == edge_pid
    fake.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=2, output_tokens=1)))
    with meter.client(extra_ca=fake.ca_pem, timeout=15) as client:
        assert client.post(f"{ANTHROPIC}/v1/messages", headers={"x-api-key": CANARY_KEY},
                           json={"model": "claude-sonnet-4-5", "messages": []}).status_code == 200


def _client_hello(server_name: str) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.e2e
def test_b7_a_real_tls_client_hello_on_the_proxy_port_is_answered_within_a_second(bad: Bad) -> None:
    reply, took = exchange(bad.meter.edge_port, _client_hello("api.anthropic.com"), timeout=2.0)
    assert took < 1.0, f"no answer within 1 s (got {reply[:60]!r})"


@pytest.mark.e2e
@pytest.mark.parametrize("form", ["connect", "absolute"])
def test_b7_a_header_line_without_a_colon_gets_400_from_the_edge(bad: Bad, form: str) -> None:
    if form == "connect":
        payload = b"CONNECT tunnel.test:443 HTTP/1.1\r\nHost: tunnel.test:443\r\nthis line has no colon\r\n\r\n"
    else:
        payload = f"GET http://{PLAIN_HOST}/x HTTP/1.1\r\nHost: {PLAIN_HOST}\r\nthis line has no colon\r\n\r\n".encode()
    reply, took = exchange(bad.meter.edge_port, payload)
    assert reply.startswith(b"HTTP/1.1 400") and b"halton-meter edge:" in reply, reply[:200]
    assert took < 1.0


# ==================================================================================================
# B8: request smuggling through the core
# ==================================================================================================

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n"
BODY = b'{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[]}'
HEAD = b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\ncontent-type: application/json\r\n"

PROBES = {
    "CL+TE": HEAD + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(SMUGGLED)) + SMUGGLED,
    "TE+CL": HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    + SMUGGLED,
    "duplicate CL": HEAD + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(BODY), len(BODY) + len(SMUGGLED))
    + BODY + SMUGGLED,
    "CL list": HEAD + b"Content-Length: %d, %d\r\n\r\n" % (len(BODY), len(BODY) + len(SMUGGLED)) + BODY + SMUGGLED,
    "obs-fold TE": HEAD + b"Transfer-Encoding:\r\n chunked\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY + SMUGGLED,
    "obs-fold other header": HEAD + b"X-Folded: a\r\n b\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY + SMUGGLED,
    "space before colon": HEAD + b"Transfer-Encoding : chunked\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
    + SMUGGLED,
    "TE xchunked": HEAD + b"Transfer-Encoding: xchunked\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY + SMUGGLED,
    "TE chunked twice": HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    + SMUGGLED,
    "negative chunk size": HEAD + b"Transfer-Encoding: chunked\r\n\r\n-1\r\n" + BODY + b"\r\n0\r\n\r\n" + SMUGGLED,
    "0x chunk size": HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY) + SMUGGLED,
    "huge chunk size": HEAD + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n" + BODY + b"\r\n0\r\n\r\n"
    + SMUGGLED,
    "bare LF in chunk line": HEAD + b"Transfer-Encoding: chunked\r\n\r\n%x;ext\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    + SMUGGLED,
    "negative CL": HEAD + b"Content-Length: -5\r\n\r\n" + BODY + SMUGGLED,
}


def tls_exchange(meter: MeterProcess, request: bytes, host: str = "api.anthropic.com", timeout: float = 5.0) -> bytes:
    """Raw bytes over TLS through the proxy to a provider host (the core terminates TLS with our CA)."""
    sock = socket.create_connection(("127.0.0.1", meter.edge_port), timeout=timeout)
    sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    with meter.ssl_context().wrap_socket(sock, server_hostname=host) as tls:
        tls.sendall(request)
        answer = b""
        try:
            while len(answer) < 1 << 20 and (chunk := tls.recv(65536)):
                answer += chunk
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass
    return answer


@pytest.mark.e2e
def test_b8_a_well_formed_pipelined_pair_reaches_the_provider(bad: Bad) -> None:
    """The control: the same path carries two honest pipelined requests, so the probes below mean something."""
    fake = bad.fake
    fake.clear()
    fake.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=1, output_tokens=1)))
    fake.add("GET", "/control", Reply(body=b'{"control": true}'))
    answer = tls_exchange(bad.meter, HEAD + b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
                          + b"GET /control HTTP/1.1\r\nHost: api.anthropic.com\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200") == 2 and answer.endswith(b'{"control": true}'), answer[-300:]
    assert [r.path for r in fake.requests] == ["/v1/messages", "/control"]


@pytest.mark.e2e
@pytest.mark.parametrize("probe", list(PROBES))
def test_b8_smuggling_probes_are_rejected_and_nothing_reaches_the_provider(bad: Bad, probe: str) -> None:
    meter, fake = bad.meter, bad.fake
    fake.clear()
    fake.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=1, output_tokens=1)))
    fake.add("GET", "/smuggled", Reply(body=b'{"smuggled": true}'))
    started = utc_now()
    answer = tls_exchange(meter, PROBES[probe], timeout=3.0)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"smuggled" not in answer
    time.sleep(0.3)
    assert fake.requests == [], [(r.method, r.path) for r in fake.requests]
    # A refused request may leave an error row, but never tokens or a cost.
    for row in rows_since(meter, started, include_in_progress=True):
        assert (row["billable"], row["input_tokens"], row["output_tokens"]) == (0, 0, 0), row
        assert not row["cost_nanos"]


# ==================================================================================================
# B9: project files
# ==================================================================================================


@pytest.mark.e2e
def test_b9_the_documented_project_file_names_the_project(bad: Bad, tmp_path: Path) -> None:
    fake, meter = bad.fake, bad.meter
    fake.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=3, output_tokens=1)))
    workdir = tmp_path / "some-checkout"
    workdir.mkdir()
    (workdir / ".halton-meter.toml").write_text('project = "from-project-file"\n')
    started = utc_now()
    code = textwrap.dedent(f"""
        import httpx
        r = httpx.post("{ANTHROPIC}/v1/messages", headers={{"x-api-key": "{CANARY_KEY}"}},
                       json={{"model": "claude-b9-project-file", "messages": []}}, timeout=20)
        assert r.status_code == 200, r.text
    """)
    result = meter.cli("run", "--", sys.executable, "-c", code, cwd=workdir, check=False)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not rows:
        rows = [r for r in rows_since(meter, started) if r["model_requested"] == "claude-b9-project-file"]
        time.sleep(0.05)
    [row] = rows
    assert (row["project"], row["project_source"]) == ("from-project-file", "file")


# ==================================================================================================
# B10: absurd CLI arguments
# ==================================================================================================

CLICK_USAGE_ERRORS = [
    (["report", "--bogus"], "No such option"),
    (["status", "--bogus"], "No such option"),
    (["calls", "--limit", "abc"], "--limit"),
    (["calls", "--limit"], "--limit"),
    (["serve", "--edge-port", "70000"], "--edge-port"),
    (["serve", "--api-port", "-1"], "--api-port"),
    (["report", "--since", "1d", "--until", "1d"], "must be before --until"),
    (["report", "--since", "2099-01-01"], "must be before --until"),
]
OUR_USAGE_ERRORS = [
    (["report", "--since", "99999999999d"], "too far back"),
    (["report", "--since", ""], "is not a time"),
    (["report", "--until", "tomorrow"], "is not a time"),
]


@pytest.mark.parametrize(("args", "message"), CLICK_USAGE_ERRORS + OUR_USAGE_ERRORS)
def test_b10_absurd_arguments_are_usage_errors(cli, args, message) -> None:
    result = cli(*args)
    assert result.exit_code == ExitCode.USAGE, result
    assert message in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


@pytest.mark.parametrize(("args", "message"), CLICK_USAGE_ERRORS)
def test_b10_click_usage_errors_are_one_line_too(cli, args, message) -> None:
    result = cli(*args)
    assert one_line(result.stderr).startswith("halton-meter: error: ")


@pytest.mark.parametrize("since", ["100000000h", "99999999999w", "9999999999999m"])
def test_b10_huge_relative_times_are_usage_errors_not_crashes(cli, since: str) -> None:
    result = cli("report", "--since", since)
    assert result.exit_code == ExitCode.USAGE, result
    assert "too far back" in one_line(result.stderr)


@pytest.mark.e2e
@pytest.mark.parametrize("since", ["-1", "yesterday", "100000000h"])
def test_b10_the_api_answers_a_bad_since_with_400(bad: Bad, since: str) -> None:
    response = bad.meter.api_get(f"/v1/report?since={since}")
    assert response.status_code == 400 and "since" in response.json()["error"], response.text


# ==================================================================================================
# U3: status while writes are failing (runs last: it locks the shared meter's database)
# ==================================================================================================


U3_MODEL = "claude-u3-while-locked"


@dataclass
class Locked:
    latencies: list[float]
    status_during: dict[str, Any]
    stats_during: dict[str, Any]
    rows: list[dict[str, Any]]
    status_after: dict[str, Any]
    stats_after: dict[str, Any]


def _writer_stats(meter: MeterProcess) -> dict[str, Any]:
    try:
        return json.loads((meter.home / "run" / "core-stats.json").read_text())["writer"]
    except (OSError, ValueError, KeyError):
        return {}


@pytest.fixture(scope="module")
def locked(bad: Bad) -> Locked:
    """Hold `BEGIN EXCLUSIVE` on the meter's database from this process, send 3 calls, read `status --json`,
    release, and let everything land."""
    meter, fake = bad.meter, bad.fake
    fake.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=7, output_tokens=2)))
    blocker = sqlite3.connect(meter.home / "db.sqlite", isolation_level=None, timeout=10, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    released = threading.Event()
    try:
        latencies = []
        with meter.client(extra_ca=fake.ca_pem, timeout=15) as client:
            for _ in range(3):
                started = time.monotonic()
                response = client.post(f"{ANTHROPIC}/v1/messages", headers={"x-api-key": CANARY_KEY},
                                       json={"model": U3_MODEL, "messages": []})
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _writer_stats(meter).get("last_error"):
            time.sleep(0.2)
        status_during = json.loads(meter.cli("status", "--json", check=False).stdout)
        stats_during = _writer_stats(meter)
    finally:
        blocker.execute("COMMIT")
        blocker.close()
        released.set()
    deadline = time.monotonic() + 30
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(rows) < 3:
        rows = [r for r in meter.rows() if r["model_requested"] == U3_MODEL]
        time.sleep(0.1)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _writer_stats(meter).get("pending"):
        time.sleep(0.2)
    time.sleep(2.5)  # one more publication of the counters
    status_after = json.loads(meter.cli("status", "--json", check=False).stdout)
    return Locked(latencies, status_during, stats_during, rows, status_after, _writer_stats(meter))


def _row(status: dict[str, Any], row_id: str) -> dict[str, Any]:
    return next(r for r in status["rows"] if r["id"] == row_id)


@pytest.mark.e2e
def test_u3_status_is_red_while_writes_fail_and_every_row_lands_after(locked: Locked) -> None:
    assert max(locked.latencies) < 2.0, locked.latencies  # clients never wait for the database
    writes = _row(locked.status_during, "writes")
    assert writes["status"] == "fail", writes
    assert re.fullmatch(r"last write failed \d+ s ago: database is locked; \d+ row\(s\) pending, all journaled / 0 lost",
                        writes["summary"]), writes["summary"]
    [pending] = map(int, re.findall(r"(\d+) row\(s\) pending", writes["summary"]))
    assert pending >= 3
    assert writes["fix"] and "lock" in writes["fix"]
    assert locked.status_during["verdict"] == "DEGRADED"
    # Accounting: 3 sent = 3 landed + 0 pending + 0 gaps, once the lock is gone.
    assert len(locked.rows) == 3
    assert all(r["complete"] and (r["input_tokens"], r["output_tokens"]) == (7, 2) for r in locked.rows)
    assert (locked.stats_after["pending"], locked.stats_after["unsaved"], locked.stats_after["dropped"]) == (0, 0, 0)


@pytest.mark.e2e
def test_u3_status_turns_green_once_writes_recover(locked: Locked) -> None:
    assert _row(locked.status_after, "writes")["status"] == "ok", _row(locked.status_after, "writes")
