"""`halton-meter projects` (calls, cost, last seen, attribution sources) and `halton-meter retag` (dry run vs
apply, calls and gaps, rollups kept right, calls in flight left alone, coexisting with the writer)."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest
from reportkit import call, rows, write

from halton_meter import report
from halton_meter.errors import ExitCode
from halton_meter.timewindow import resolve_window


def seed(db) -> None:
    write(db, [
        call("2025-11-20T10:00:00.000000Z", id="a1", project="scratch", project_source="cwd", cost_nanos=1_000_000_000),
        call("2025-11-20T11:00:00.000000Z", id="a2", project="scratch", project_source="cwd", client="cursor",
             cost_nanos=500_000_000),
        call("2025-11-21T09:00:00.000000Z", id="a3", project="scratch", project_source="git",
             billing="subscription", cost_nanos=2_000_000_000),
        call("2025-11-21T09:30:00.000000Z", id="a4", project="scratch", incomplete_reason="in_progress"),
        call("2025-11-22T08:00:00.000000Z", id="b1", project="acme", project_source="project_file",
             cost_nanos=3_000_000_000),
        call("2025-11-22T08:30:00.000000Z", id="b2", project="acme", priced=False, cost_nanos=None),
    ])
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO gaps (id, at, host, reason, project) VALUES (?, ?, 'api.anthropic.com', "
                     "'core_down', ?)", [("g1", "2025-11-20T12:00:00.000000Z", "scratch"),
                                         ("g2", "2025-11-23T12:00:00.000000Z", "scratch")])
    conn.commit()
    conn.close()


def test_projects_lists_totals_last_seen_and_sources(cli, paths) -> None:
    seed(paths.db)
    data = json.loads(cli("projects", "--json").stdout)
    assert [p["project"] for p in data["projects"]] == ["scratch", "acme"]  # by cost incl. list price
    scratch, acme = data["projects"]
    assert (scratch["calls"], scratch["cost_usd"], scratch["subscription_calls"]) == (3, "1.500000000", 1)
    assert scratch["sources"] == [{"name": "cwd", "calls": 2}, {"name": "git", "calls": 1}]
    assert {c["name"] for c in scratch["clients"]} == {"claude-code", "cursor"}
    assert scratch["last_seen"] == "2025-11-21T09:00:00.000000Z" and scratch["gaps"] == 2
    assert acme["unpriced_calls"] == 1 and acme["last_seen"] == "2025-11-22T08:30:00.000000Z"
    table = cli("projects").stdout
    assert "scratch" in table and "cwd 66%, git 33%" in table and "git 50%, project_file 50%" in table
    narrowed = json.loads(cli("projects", "--since", "2025-11-22", "--until", "2025-11-23", "--json").stdout)
    assert [p["project"] for p in narrowed["projects"]] == ["acme"]
    assert cli("projects", "--today", "--week").exit_code == ExitCode.USAGE


def project_totals(db) -> dict:
    window = resolve_window(since="2025-11-01T00:00:00Z", until="2026-12-01T00:00:00Z")
    fast = report.build(db, window).to_json()
    assert fast == report.build(db, window, use_rollup=False).to_json()  # the rollups followed the move
    return {g["project"]: (g["calls"], g["cost_usd"]) for g in fast["groups"]}


def test_retag_dry_run_changes_nothing_then_apply_moves_calls_and_gaps(cli, paths) -> None:
    seed(paths.db)
    before_rows, before_totals = rows(paths.db), project_totals(paths.db)
    dry = cli("retag", "--from", "scratch", "--to", "halton-meter", "--dry-run")
    assert dry.exit_code == 0
    assert ("Would move 3 calls ($1.50 charged, $2.00 subscription at list price) and 2 unmetered gaps from "
            "'scratch' to 'halton-meter'.") in dry.stdout
    assert "1 call still in progress would stay" in dry.stdout
    assert rows(paths.db) == before_rows and project_totals(paths.db) == before_totals

    data = json.loads(cli("retag", "--from", "scratch", "--to", "halton-meter", "--json").stdout)
    assert (data["calls"], data["subscription_calls"], data["gaps"], data["in_progress_skipped"]) == (2, 1, 2, 1)
    assert data["cost_usd"] == "1.500000000" and data["dry_run"] is False
    moved = {r["id"]: r for r in rows(paths.db)}
    assert all(moved[i]["project"] == "halton-meter" and moved[i]["project_source"] == "retag"
               for i in ("a1", "a2", "a3"))
    assert moved["a4"]["project"] == "scratch"  # in flight: its final row would undo the move
    assert moved["b1"]["project_source"] == "project_file"
    totals = project_totals(paths.db)
    assert "scratch" not in totals and totals["halton-meter"] == (3, "1.500000000")
    conn = sqlite3.connect(paths.db)
    assert conn.execute("SELECT count(*) FROM gaps WHERE project = 'halton-meter'").fetchone()[0] == 2
    conn.close()
    again = cli("retag", "--from", "scratch", "--to", "halton-meter")
    assert again.exit_code == 0 and "nothing to move" in again.stdout


def test_retag_respects_the_window(cli, paths) -> None:
    seed(paths.db)
    result = json.loads(cli("retag", "--from", "scratch", "--to", "other", "--since", "2025-11-21T00:00:00Z",
                            "--until", "2025-11-22T00:00:00Z", "--json").stdout)
    assert (result["calls"], result["subscription_calls"], result["gaps"]) == (0, 1, 0)
    projects = {r["id"]: r["project"] for r in rows(paths.db)}
    assert (projects["a1"], projects["a3"]) == ("scratch", "other")


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "a", "--to", "a/b"], "--to 'a/b' is not a project name"),
    (["--from", "a", "--to", " a"], "--to ' a' is not a project name"),
    (["--from", "a", "--to", "a"], "--from and --to are both 'a'"),
    (["--from", "a"], "Missing option '--to'"),
    (["--from", "a", "--to", "b", "--since", "later"], "--since 'later' is not a time"),
])
def test_retag_bad_arguments_are_one_line_usage_errors(cli, paths, args: list[str], message: str) -> None:
    seed(paths.db)
    result = cli("retag", *args)
    assert result.exit_code == ExitCode.USAGE and message in result.stderr, result
    assert len(result.stderr.strip().splitlines()) == 1


def test_retag_without_a_database(cli) -> None:
    result = cli("retag", "--from", "a", "--to", "b")
    assert result.exit_code == ExitCode.USAGE and "no database" in result.stderr


def test_retag_waits_for_the_writer_instead_of_failing(cli, paths) -> None:
    seed(paths.db)
    writer = sqlite3.connect(paths.db, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # the meter's writer, mid-batch
    release = threading.Timer(0.5, lambda: writer.execute("COMMIT"))
    release.start()
    try:
        result = cli("retag", "--from", "acme", "--to", "acme-web")
    finally:
        release.join()
        writer.close()
    assert result.exit_code == 0 and "Moved 2 calls" in result.stdout
