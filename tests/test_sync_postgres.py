"""Sync to a real PostgreSQL (started by the test from the machine's own binaries, never a mock): two meters'
rows in one team database add up to the two local reports by user and machine; a database that goes away
mid-sync and comes back gets every row exactly once; reprice-like and retag changes propagate as newer
versions; the minimal preset hashes names; a wrong password is one clear line; a running `serve` syncs."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pgkit import PASSWORD, Postgres, running_postgres
from reportkit import call, write

from halton_meter.store.retag import retag
from halton_meter.sync import engine as sync_engine
from halton_meter.sync.engine import SyncEngine, status
from halton_meter.sync_config import parse_sync
from halton_meter.timewindow import iso

pytestmark = pytest.mark.e2e
psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


@pytest.fixture(autouse=True)
def _empty(pg: Postgres) -> None:
    pg.sql("DROP SCHEMA IF EXISTS halton_meter CASCADE", database="team")


def settings(pg: Postgres, user: str, **extra: Any) -> Any:
    return parse_sync([{"target": "postgres", "user": user, "url": pg.url, "password_env": "PG_TEST_PASSWORD",
                        **extra}])[0]


def engine(db: Path, pg: Postgres, user: str, machine: str, **extra: Any) -> SyncEngine:
    from halton_meter_plugins.sync.postgres import open_sink

    return SyncEngine(db, [settings(pg, user, **extra)], lambda s: open_sink(s.options), machine_id=machine)


def drain(sync: SyncEngine, rounds: int = 200) -> None:
    for _ in range(rounds):
        progress = sync.run_once()
        assert not progress.errors, progress.errors
        if progress.sent == 0:
            return
    raise AssertionError("sync did not catch up")


def team(pg: Postgres, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.url, password=PASSWORD) as conn:
        return [tuple(r) for r in conn.execute(query).fetchall()]


def calls(n: int, rng: random.Random, project: str) -> list[Any]:
    base = time.time() - 86400
    return [call(started_at=iso(__import__("datetime").datetime.fromtimestamp(base + i * 7, __import__("datetime").UTC)),
                 project=project, input_tokens=rng.randrange(1, 5000), output_tokens=rng.randrange(1, 900),
                 cost_nanos=rng.randrange(1, 10**8)) for i in range(n)]


def local_totals(db: Path) -> tuple[int, int]:
    conn = sqlite3.connect(db)
    try:
        n, cost = conn.execute("SELECT count(*), sum(cost_nanos) FROM calls WHERE incomplete_reason IS NOT "
                               "'in_progress'").fetchone()
        return int(n), int(cost)
    finally:
        conn.close()


def test_two_meters_add_up_in_the_team_database(tmp_path: Path, pg: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_TEST_PASSWORD", PASSWORD)
    rng = random.Random(4)
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    write(a, calls(300, rng, "acme"))
    write(b, calls(200, rng, "docs"))
    for db, user, machine in ((a, "alice", "m" * 32), (b, "bob", "n" * 32)):
        sync = engine(db, pg, user, machine)
        sync.switch_on()
        drain(sync)
        sync.stop()
    by_user = dict((u, (int(n), int(c))) for u, n, c in team(
        pg, "SELECT user_label, count(*), sum(cost_nanos) FROM halton_meter.calls GROUP BY 1"))
    assert by_user == {"alice": local_totals(a), "bob": local_totals(b)}
    daily = team(pg, "SELECT sum(calls), sum(cost_nanos) FROM halton_meter.team_daily")
    assert daily == [(500, local_totals(a)[1] + local_totals(b)[1])]
    assert {m for (m,) in team(pg, "SELECT DISTINCT machine_id FROM halton_meter.calls")} == {"m" * 32, "n" * 32}


def test_a_database_that_goes_away_gets_every_row_exactly_once(tmp_path: Path, pg: Postgres,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_TEST_PASSWORD", PASSWORD)
    monkeypatch.setattr(sync_engine, "BATCH", 50)
    rng = random.Random(5)
    db = tmp_path / "db.sqlite"
    write(db, calls(400, rng, "acme"))
    now = [0.0]
    sync = engine(db, pg, "alice", "m" * 32)
    sync.clock = lambda: now[0]
    sync.switch_on()
    for _ in range(3):
        assert not sync.run_once().errors
    pg.pg_ctl("stop")
    try:
        write(db, calls(120, rng, "late"))  # made while the team database is down
        failed = sync.run_once()
        assert failed.errors and "\n" not in next(iter(failed.errors.values()))
        [row] = status(db, [sync.runs["postgres"].settings])
        assert row["last_error"] and row["lag_rows"] > 0
    finally:
        pg.pg_ctl("start")
    now[0] += 1000  # past the backoff
    drain(sync)
    sync.stop()
    ids = [r[0] for r in team(pg, "SELECT id FROM halton_meter.calls")]
    local = sqlite3.connect(db)
    want = {r[0] for r in local.execute("SELECT id FROM calls")}
    local.close()
    assert len(ids) == len(set(ids)) == len(want) == 520 and set(ids) == want


def test_changes_propagate_as_newer_versions_and_minimal_hashes_names(tmp_path: Path, pg: Postgres,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_TEST_PASSWORD", PASSWORD)
    db = tmp_path / "db.sqlite"
    write(db, calls(30, random.Random(6), "alpha"))
    sync = engine(db, pg, "alice", "m" * 32, privacy="minimal", fields={"branch": "drop"})
    sync.switch_on()
    drain(sync)
    before = team(pg, "SELECT DISTINCT project, branch FROM halton_meter.calls")
    assert len(before) == 1 and before[0][0].startswith("h:") and before[0][1] is None
    moved = retag(db, "alpha", "beta", "2000-01-01T00:00:00.000000Z", "2100-01-01T00:00:00.000000Z", dry_run=False)
    assert moved.calls == 30
    conn = sqlite3.connect(db)
    conn.execute("UPDATE calls SET cost_nanos = 7 WHERE rowid = 1")  # a hand-run repricing of one row
    conn.commit()
    conn.close()
    drain(sync)
    sync.stop()
    after = team(pg, "SELECT project, count(*), min(version) FROM halton_meter.calls GROUP BY 1")
    assert len(after) == 1 and after[0][0] != before[0][0] and after[0][1] == 30 and after[0][2] > 0
    assert team(pg, "SELECT count(*) FROM halton_meter.calls WHERE cost_nanos = 7") == [(1,)]


def test_a_wrong_password_is_one_clear_line(tmp_path: Path, pg: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_TEST_PASSWORD", "wrong")
    db = tmp_path / "db.sqlite"
    write(db, calls(3, random.Random(7), "alpha"))
    sync = engine(db, pg, "alice", "m" * 32)
    sync.switch_on()
    errors = sync.run_once().errors
    sync.stop()
    [line] = errors.values()
    assert "password authentication failed" in line and "\n" not in line and PASSWORD not in line
    [row] = status(db, [sync.runs["postgres"].settings])
    assert row["last_error"] == line and row["sent"] == 0


def test_a_running_meter_syncs_and_sync_status_says_so(tmp_path: Path, pg: Postgres) -> None:
    from halton_meter.testing import bodies
    from halton_meter.testing.fake_provider import FakeProvider, Reply
    from halton_meter.testing.meter import MeterProcess

    password_file = tmp_path / "pg-password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    extra = f"""
[[sync]]
target = "postgres"
user = "carol"
url = "{pg.url}"
password_file = "{password_file}"
"""
    with FakeProvider() as fake, MeterProcess.start(tmp_path / "home", fake, extra_config=extra) as meter:
        fake.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=100, output_tokens=10)))
        with meter.client(extra_ca=fake.ca_pem, timeout=30) as client:
            for _ in range(3):
                reply = client.post("https://api.anthropic.com/v1/messages", json={"model": "claude-haiku-4-5",
                                                                                    "max_tokens": 5, "messages": []},
                                    headers={"x-api-key": "sk-ant-api03-CANARY-sync", "anthropic-version": "2023-06-01"})
                assert reply.status_code == 200
        local = {r["id"] for r in meter.wait_for_calls(3)}
        deadline = time.monotonic() + 20
        rows: list[tuple[Any, ...]] = []
        while time.monotonic() < deadline:
            try:
                rows = team(pg, "SELECT id, user_label FROM halton_meter.calls WHERE endpoint_kind = 'messages'")
            except psycopg.errors.UndefinedTable:  # the meter has not created its schema yet
                rows = []
            if {r[0] for r in rows} >= local:
                break
            time.sleep(0.5)
        assert {r[0] for r in rows} >= local and {r[1] for r in rows} == {"carol"}
        status = __import__("json").loads(meter.cli("sync", "status", "--json").stdout)
        [target] = status["targets"]
        assert target["target"] == "postgres" and target["last_error"] is None and target["sent"] >= 3
        assert PASSWORD not in meter.log()
        rows = {r["id"]: r for r in __import__("json").loads(meter.cli("status", "--json", check=False).stdout)["rows"]}
        assert rows["sync"]["status"] == "ok", rows["sync"]


def test_the_status_row_warns_when_a_target_has_been_behind_for_15_minutes(tmp_path: Path, pg: Postgres,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from halton_meter.paths import Paths
    from halton_meter_checks.sync import check_sync

    monkeypatch.setenv("PG_TEST_PASSWORD", "wrong")
    home = tmp_path / "home"
    home.mkdir()
    db = home / "db.sqlite"
    write(db, calls(5, random.Random(8), "alpha"))
    sync = engine(db, pg, "alice", "m" * 32)
    sync.switch_on()
    ctx = SimpleNamespace(config=SimpleNamespace(sync=[sync.runs["postgres"].settings]), paths=Paths(home))
    assert check_sync(ctx).status == "ok"  # nothing failed yet
    sync.run_once()  # the wrong password
    conn = sqlite3.connect(db)
    conn.execute("UPDATE sync_state SET last_success = '2026-01-01T00:00:00.000000Z'")  # long ago
    conn.commit()
    conn.close()
    row = check_sync(ctx)
    assert row.status == "warn" and "postgres 5 rows behind: OperationalError" in row.summary
    assert "password authentication failed" in row.summary and "sync status" in (row.fix or "")
    monkeypatch.setenv("PG_TEST_PASSWORD", PASSWORD)
    sync.runs["postgres"].retry_at = 0
    drain(sync)
    sync.stop()
    assert check_sync(ctx).summary == "1 target current"


def test_report_team_equals_the_sum_of_the_local_reports(tmp_path: Path, pg: Postgres,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import subprocess
    import sys

    from halton_meter import report
    from halton_meter.timewindow import resolve_window

    monkeypatch.setenv("PG_TEST_PASSWORD", PASSWORD)
    rng = random.Random(9)
    dbs = {"alice": tmp_path / "a.sqlite", "bob": tmp_path / "b.sqlite"}
    write(dbs["alice"], calls(120, rng, "acme") + calls(30, rng, "docs"))
    write(dbs["bob"], calls(80, rng, "acme"))
    for user, db in dbs.items():
        sync = engine(db, pg, user, user[0] * 32)
        sync.switch_on()
        drain(sync)
        sync.stop()
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(f'[[sync]]\ntarget = "postgres"\nurl = "{pg.url}"\npassword_env = "PG_TEST_PASSWORD"\n')

    def team_report(*by: str) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-m", "halton_meter", "report", "--team", "--json", "--since",
                              "2000-01-01", *(f"--by={b}" for b in by)], capture_output=True, text=True, timeout=60,
                             env={**__import__("os").environ, "HALTON_METER_HOME": str(home)})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    window = resolve_window(since="2000-01-01")
    local = {user: report.build(db, window, by=("project",)).to_json() for user, db in dbs.items()}
    by_user = {g["user"]: g for g in team_report("user")["groups"]}
    for user, doc in local.items():
        assert by_user[user]["calls"] == doc["totals"]["calls"]
        assert by_user[user]["cost_usd"] == doc["totals"]["cost_usd"]
        assert by_user[user]["input_tokens"] == doc["totals"]["input_tokens"]
    by_machine_project = team_report("machine,project")["groups"]
    assert {(g["machine"], g["project"]): g["calls"] for g in by_machine_project} == {
        ("a" * 32, "acme"): 120, ("a" * 32, "docs"): 30, ("b" * 32, "acme"): 80}
    # No [[sync]] target: one line, exit 2.
    (home / "config.toml").write_text("")
    out = subprocess.run([sys.executable, "-m", "halton_meter", "report", "--team"], capture_output=True, text=True,
                         timeout=60, env={**__import__("os").environ, "HALTON_METER_HOME": str(home)})
    assert out.returncode == 2 and "add a [[sync]] block" in out.stderr and "Traceback" not in out.stderr


def test_doctor_reaches_each_target_read_only(tmp_path: Path, pg: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from halton_meter.host import PluginHost
    from halton_meter_checks.sync import check_reachable

    monkeypatch.setenv("PG_TEST_PASSWORD", PASSWORD)
    targets = tuple(PluginHost(None).load(entry_points=False).registries.sync_targets)
    config = SimpleNamespace(sync=[settings(pg, "alice")])
    ctx = SimpleNamespace(config=config, sync_targets=targets)
    row = check_reachable(ctx)
    assert row.status == "ok" and "schema is created by the meter's first sync" in row.summary
    assert team(pg, "SELECT count(*) FROM pg_namespace WHERE nspname = 'halton_meter'") == [(0,)]  # wrote nothing
    db = tmp_path / "db.sqlite"
    write(db, calls(2, random.Random(1), "alpha"))
    sync = engine(db, pg, "alice", "m" * 32)
    sync.switch_on()
    drain(sync)
    sync.stop()
    assert check_reachable(ctx).summary == "postgres: reachable; schema halton_meter current (version 1)"
    monkeypatch.setenv("PG_TEST_PASSWORD", "wrong")
    failed = check_reachable(ctx)
    assert failed.status == "fail" and "password authentication failed" in failed.summary
    assert "\n" not in failed.summary and "wrong" not in failed.summary.replace("authentication", "")


def test_team_filters_previous_window_and_projects_match_the_local_reports(tmp_path: Path, pg: Postgres,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime
    import json
    import os
    import subprocess
    import sys
    from decimal import Decimal

    from halton_meter import report
    from halton_meter.store.aggregate import Filters
    from halton_meter.timewindow import resolve_window

    monkeypatch.setenv("PG_TEST_PASSWORD", PASSWORD)
    rng = random.Random(17)
    base = datetime.datetime(2026, 11, 20, 9, 0, tzinfo=datetime.UTC)

    def spread(n: int, **fields: Any) -> list[Any]:  # one call a minute from 09:00 UTC
        return [call(started_at=iso(base + datetime.timedelta(minutes=i, seconds=rng.randrange(60))),
                     input_tokens=rng.randrange(1, 5000), output_tokens=rng.randrange(1, 900),
                     cost_nanos=rng.randrange(1, 10**8), **fields) for i in range(n)]

    dbs = {"alice": tmp_path / "a.sqlite", "bob": tmp_path / "b.sqlite"}
    write(dbs["alice"], spread(90, project="acme", model="claude-sonnet-4-5") + spread(40, project="docs", model="gpt-5",
                                                                                        provider="openai", branch=None)
          + spread(25, project="acme", model="claude-haiku-4-5", branch=None))
    write(dbs["bob"], spread(70, project="acme", model="claude-sonnet-4-5") + spread(20, project="acme",
                                                                                      model="gpt-5", provider="openai"))
    for user, db in dbs.items():
        sync = engine(db, pg, user, user[0] * 32)
        sync.switch_on()
        drain(sync)
        sync.stop()
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(f'[[sync]]\ntarget = "postgres"\nurl = "{pg.url}"\npassword_env = "PG_TEST_PASSWORD"\n')

    def cli(*args: str) -> Any:
        out = subprocess.run([sys.executable, "-m", "halton_meter", *args], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "HALTON_METER_HOME": str(home)})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if "--json" in args else out.stdout

    since, until = iso(base + datetime.timedelta(minutes=30)), iso(base + datetime.timedelta(minutes=60))
    window = resolve_window(since=since, until=until, now=base + datetime.timedelta(days=1))
    cases = [
        (["--project", "acme", "--model", "claude-s*"], Filters(project=("acme",), model=("claude-s*",))),
        (["--branch", "(none)"], Filters(branch=("(none)",))),
        (["--provider", "openai", "--project", "docs", "--project", "acme"],
         Filters(provider=("openai",), project=("docs", "acme"))),
    ]
    for args, filters in cases:
        team_doc = cli("report", "--team", "--json", "--since", since, "--until", until, "--vs-previous", "--by",
                       "user", *args)
        local = {u: report.build(db, window, by=("project",), filters=filters, vs_previous=True).to_json()
                 for u, db in dbs.items()}
        by_user = {g["user"]: g for g in team_doc["groups"]}
        for user, doc in local.items():
            calls_now = doc["totals"]["calls"]
            assert by_user.get(user, {"calls": 0})["calls"] == calls_now, (args, user)
            if calls_now:
                assert by_user[user]["cost_usd"] == doc["totals"]["cost_usd"], (args, user)
                assert by_user[user]["previous"]["cost_usd"] == doc["totals"]["previous"]["cost_usd"], (args, user)
        assert team_doc["totals"]["previous"]["calls"] == sum(d["totals"]["previous"]["calls"] for d in local.values())
        assert Decimal(team_doc["totals"]["change"]["cost_usd"]["abs"]) == sum(
            Decimal(d["totals"]["cost_usd"]) - Decimal(d["totals"]["previous"]["cost_usd"]) for d in local.values())
        assert team_doc["previous"]["until"] == team_doc["since"]
    text = cli("report", "--team", "--since", since, "--until", until, "--vs-previous", "--project", "acme")
    assert "vs previous" in text and "project acme" in text and "Traceback" not in text
    projects = {p["project"]: p for p in cli("projects", "--team", "--json")["projects"]}
    assert {name: (p["calls"], p["users"], p["machines"]) for name, p in projects.items()} == {
        "acme": (90 + 25 + 70 + 20, 2, 2), "docs": (40, 1, 1)}
    for name, project in projects.items():
        last = max(sqlite3.connect(db).execute("SELECT max(started_at) FROM calls WHERE project = ?", (name,)).fetchone()[0]
                   or "" for db in dbs.values())
        assert project["last_seen"] == last
    assert "acme" in cli("projects", "--team")
    # A filter that is no team dimension is refused in one line.
    out = subprocess.run([sys.executable, "-m", "halton_meter", "report", "--team", "--by", "hour"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "HALTON_METER_HOME": str(home)})
    assert out.returncode != 0 and "not a team dimension" in out.stderr and "Traceback" not in out.stderr
