"""`halton-meter calls`: filters (project, model, provider, client, status, since/until) and --follow, the
live tail (a real subprocess, bounded in time, ended with Ctrl-C: exit 0)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from reportkit import call, write

from halton_meter.errors import ExitCode


def seed(db: Path) -> None:
    write(db, [
        call("2026-11-20T10:00:00.000000Z", id="c-ok", project="alpha", status=200),
        call("2026-11-20T11:00:00.000000Z", id="c-429", project="alpha", model="gpt-5", provider="openai",
             status=429, error_type="http_429", complete=False, client="cursor"),
        call("2026-11-21T09:00:00.000000Z", id="c-500", project="beta", status=500, error_type="http_500"),
        call("2026-11-21T10:00:00.000000Z", id="c-cut", project="beta", status=200, complete=False,
             incomplete_reason="upstream_truncated"),
        call("2026-11-21T11:00:00.000000Z", id="c-live", project="beta", status=None, complete=False,
             incomplete_reason="in_progress"),
    ])


@pytest.mark.parametrize(("args", "ids"), [
    ([], ["c-ok", "c-429", "c-500", "c-cut", "c-live"]),
    (["--project", "alpha"], ["c-ok", "c-429"]),
    (["--project", "alpha", "--project", "beta", "--limit", "2"], ["c-cut", "c-live"]),
    (["--model", "gpt-*"], ["c-429"]),
    (["--provider", "openai"], ["c-429"]),
    (["--client", "cursor"], ["c-429"]),
    (["--status", "ok"], ["c-ok"]),
    (["--status", "error"], ["c-429", "c-500"]),
    (["--status", "incomplete"], ["c-cut"]),
    (["--status", "in-progress"], ["c-live"]),
    (["--status", "429"], ["c-429"]),
    (["--status", "5xx", "--status", "ok"], ["c-ok", "c-500"]),
    (["--since", "2026-11-21T00:00:00Z"], ["c-500", "c-cut", "c-live"]),
    (["--since", "2026-11-20T00:00:00Z", "--until", "2026-11-21T00:00:00Z", "--project", "beta"], []),
])
def test_filters(cli, paths, args: list[str], ids: list[str]) -> None:
    seed(paths.db)
    result = cli("calls", "--json", *args)
    assert result.exit_code == 0, result
    assert [c["id"] for c in json.loads(result.stdout)] == ids


def test_table_says_when_nothing_matches_and_shows_status(cli, paths) -> None:
    seed(paths.db)
    assert "No calls match." in cli("calls", "--project", "nobody").stdout
    table = cli("calls", "--status", "error").stdout
    assert "429 http_429" in table and "500 http_500" in table
    assert "in progress" in cli("calls", "--status", "in-progress").stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--status", "fine"], "--status 'fine' is not a status; use ok, error, incomplete, in-progress"),
    (["--status", "6xx"], "--status '6xx' is not a status"),
    (["--follow", "--until", "1d"], "--follow shows calls as they end: it cannot be combined with --until"),
    (["--follow", "--status", "in-progress"], "drop --status in-progress"),
    (["--since", "soon"], "--since 'soon' is not a time"),
    (["--follow", "--interval", "0"], "Invalid value for '--interval'"),
])
def test_bad_options_are_one_line_usage_errors(cli, args: list[str], message: str) -> None:
    result = cli("calls", *args)
    assert result.exit_code == ExitCode.USAGE and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


class Follower:
    """`halton-meter calls --follow --json` in a subprocess; stdout lines arrive on a queue."""

    def __init__(self, home: Path, *args: str) -> None:
        env = {**os.environ, "HALTON_METER_HOME": str(home), "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "halton_meter", "calls", "--follow", "--json",
                                      "--interval", "0.1", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def next_ids(self, count: int, timeout: float = 15.0) -> list[str]:
        deadline, ids = time.monotonic() + timeout, []
        while len(ids) < count:
            try:
                ids.append(json.loads(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))["id"])
            except queue.Empty:
                raise AssertionError(f"expected {count} calls within {timeout}s, got {ids}") from None
        return ids

    def quiet_for(self, seconds: float) -> bool:
        try:
            self.lines.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_follow_prints_each_call_once_when_it_ends_and_ctrl_c_exits_0(paths) -> None:
    write(paths.db, [call("2026-11-20T10:00:00.000000Z", id="before"),
                     call("2026-11-20T10:00:01.000000Z", id="running", incomplete_reason="in_progress")])
    follower = Follower(paths.home, "--project", "alpha")
    try:
        assert follower.next_ids(1) == ["before"]  # the recent past, then live
        write(paths.db, [call("2026-11-20T10:00:02.000000Z", id="late", incomplete_reason="in_progress")])
        write(paths.db, [call("2026-11-20T10:00:03.000000Z", id="elsewhere", project="beta")])
        assert follower.quiet_for(0.6)  # in progress: not yet; another project: never
        write(paths.db, [call("2026-11-20T10:00:02.000000Z", id="late"),
                         call("2026-11-20T10:00:01.000000Z", id="running")])
        assert sorted(follower.next_ids(2)) == ["late", "running"]
        write(paths.db, [call("2026-11-20T10:00:05.000000Z", id="direct")])
        assert follower.next_ids(1) == ["direct"]
        assert follower.quiet_for(0.4)  # nothing twice
    finally:
        code, err = follower.interrupt()
    assert code == 0 and err == ""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_follow_waits_for_the_database_to_appear(paths) -> None:
    follower = Follower(paths.home)
    try:
        assert follower.quiet_for(0.5)
        write(paths.db, [call(id="first")])
        assert follower.next_ids(1) == ["first"]
    finally:
        code, err = follower.interrupt()
    assert code == 0 and err == ""
