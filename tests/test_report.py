"""`halton-meter report`: windows in the local zone (DST, non-hour offsets, midnight), grouping and filters,
--vs-previous, the table (80 columns), JSON and CSV (golden files), notes, and the API's /v1/report."""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from reportkit import call, local_zone, utc, write
from rich.cells import cell_len

from halton_meter import report
from halton_meter.errors import ExitCode, UsageError
from halton_meter.paths import Paths
from halton_meter.timewindow import resolve_window

GOLDEN = Path(__file__).parent / "golden" / "report"
UPDATE = os.environ.get("HALTON_METER_UPDATE_GOLDEN") == "1"


@pytest.fixture
def new_york():
    with local_zone("America/New_York"):
        yield


def pin_now(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("halton_meter.cli._options.now", lambda: utc(text))


def one_line_error(result) -> str:
    assert result.stdout == "" and "Traceback" not in result.stderr, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---- windows ----------------------------------------------------------------------------------------------


def test_calendar_windows_across_the_new_york_dst_change(new_york) -> None:
    now = utc("2026-11-02T15:00:00Z")  # Monday 10:00 EST; Sunday Nov 1 was 25 hours long
    today = resolve_window(today=True, now=now)
    assert (today.since, today.until) == (utc("2026-11-02T05:00:00Z"), now)
    yesterday = resolve_window(yesterday=True, now=now)
    assert (yesterday.since, yesterday.until) == (utc("2026-11-01T04:00:00Z"), utc("2026-11-02T05:00:00Z"))
    assert yesterday.previous().since == utc("2026-10-31T04:00:00Z")
    assert yesterday.previous().until == utc("2026-11-01T04:00:00Z")
    week = resolve_window(week=True, now=utc("2026-11-04T18:00:00Z"))  # Wednesday
    assert week.since == utc("2026-11-02T05:00:00Z")
    assert week.previous().since == utc("2026-10-26T04:00:00Z")  # last Monday 00:00 EDT, same length
    assert week.previous().until - week.previous().since == week.until - week.since
    month = resolve_window(month=True, now=now)
    assert month.since == utc("2026-11-01T04:00:00Z")  # 00:00 EDT on the 1st
    assert month.previous().since == utc("2026-10-01T04:00:00Z")
    assert resolve_window(since="2026-11-01", until="2026-11-02", now=now).until == utc("2026-11-02T05:00:00Z")
    default = resolve_window(now=now)
    assert default.since == now - datetime.timedelta(days=30) and default.label == "last 30 days"


@pytest.mark.parametrize(("zone", "midnight"), [("Asia/Kolkata", "2026-11-01T18:30:00Z"),
                                                 ("Australia/Adelaide", "2026-11-01T13:30:00Z"),
                                                 ("America/New_York", "2026-11-02T05:00:00Z")])
def test_today_starts_at_local_midnight_in_non_hour_zones(zone: str, midnight: str) -> None:
    with local_zone(zone):
        window = resolve_window(today=True, now=utc("2026-11-02T10:00:00Z"))
        assert window.since == utc(midnight)
        assert resolve_window(since="2026-11-02", now=utc("2026-11-02T10:00:00Z")).since == utc(midnight)


def test_days_split_at_local_midnight(cli, paths, monkeypatch) -> None:
    with local_zone("Asia/Kolkata"):  # UTC+05:30: midnight is 18:30Z
        write(paths.db, [call("2026-11-01T18:29:59.999999Z", project="late"),
                                    call("2026-11-01T18:30:00.000000Z", project="early"),
                                    call("2026-11-02T09:59:00.000000Z", project="early")])
        pin_now(monkeypatch, "2026-11-02T10:00:00Z")
        today = json.loads(cli("report", "--today", "--json").stdout)
        assert today["totals"]["calls"] == 2 and [g["project"] for g in today["groups"]] == ["early"]
        yesterday = json.loads(cli("report", "--yesterday", "--json").stdout)
        assert yesterday["totals"]["calls"] == 1 and yesterday["until"] == "2026-11-01T18:30:00.000000Z"
        days = json.loads(cli("report", "--since", "2026-11-01", "--by", "day", "--json").stdout)
        assert [(g["day"], g["calls"]) for g in days["groups"]] == [("2026-11-01", 1), ("2026-11-02", 2)]
        assert [d["date"] for d in days["daily"]] == ["2026-11-01", "2026-11-02"]


def test_the_repeated_hour_and_the_long_day_of_a_dst_change(cli, paths, new_york) -> None:
    write(paths.db, [call("2026-11-01T05:30:00.000000Z"), call("2026-11-01T06:30:00.000000Z"),
                                call("2026-11-01T04:00:00.000000Z"), call("2026-11-02T04:59:59.000000Z"),
                                call("2026-11-02T05:00:00.000000Z")])
    hours = json.loads(cli("report", "--since", "2026-11-01", "--until", "2026-11-03", "--by", "hour",
                           "--json").stdout)
    assert [(g["hour"], g["calls"]) for g in hours["groups"]] == [
        ("2026-11-01T00:00:00-04:00", 1), ("2026-11-01T01:00:00-04:00", 1), ("2026-11-01T01:00:00-05:00", 1),
        ("2026-11-01T23:00:00-05:00", 1), ("2026-11-02T00:00:00-05:00", 1)]
    days = json.loads(cli("report", "--since", "2026-11-01", "--until", "2026-11-03", "--by", "day",
                          "--json").stdout)
    assert [(g["day"], g["calls"]) for g in days["groups"]] == [("2026-11-01", 4), ("2026-11-02", 1)]
    table = cli("report", "--since", "2026-11-01", "--until", "2026-11-03", "--by", "hour").stdout
    assert "2026-11-01 01:00 EDT" in table and "2026-11-01 01:00 EST" in table


@pytest.mark.parametrize(("args", "message"), [
    (["--today", "--week"], "--today and --week cannot be combined"),
    (["--month", "--since", "7d"], "--month and --since cannot be combined"),
    (["--yesterday", "--until", "1d"], "--until goes with --since, not --yesterday"),
    (["--json", "--csv"], "--json and --csv cannot be combined"),
    (["--by", "colour"], "--by 'colour' is not a grouping"),
    (["--key", "not-a-key"], "--key 'not-a-key' is neither a key fingerprint"),
    (["--since", "yesterday"], "--since 'yesterday' is not a time"),
    (["--since", "1d", "--until", "2d"], "--since (1d) must be before --until (2d)"),
])
def test_bad_options_are_one_line_usage_errors(cli, args: list[str], message: str) -> None:
    result = cli("report", *args)
    assert result.exit_code == ExitCode.USAGE
    assert message in one_line_error(result)


# ---- grouping, filters, content ---------------------------------------------------------------------------


def mixed_calls() -> list:
    return [
        call("2026-11-20T10:00:00.000000Z", project="alpha", client="claude-code", branch="main",
             key_fingerprint="3f9a1c2e", cost_nanos=1_000_000_000, cache_read_tokens=5000,
             cache_savings_nanos=13_500_000, ttft_ms=400.0, streamed=True),
        call("2026-11-20T11:00:00.000000Z", project="alpha", client="cursor", branch="feat/x", model="gpt-5",
             provider="openai", key_fingerprint="b07d44e1", cost_nanos=250_000_000),
        call("2026-11-21T09:00:00.000000Z", project="beta", client="curl", branch=None, model="mystery-9",
             key_fingerprint=None, priced=False, cost_nanos=None, cache_savings_nanos=None),
        call("2026-11-21T09:30:00.000000Z", project="beta", client="claude-code", billing="subscription",
             cost_nanos=3_000_000_000),
        call("2026-11-21T09:45:00.000000Z", project="beta", client="claude-code", endpoint_kind="self_test"),
        call("2026-11-21T09:50:00.000000Z", project="beta", client="claude-code", incomplete_reason="in_progress"),
    ]


def test_nested_grouping_filters_and_totals_that_add_up(cli, paths) -> None:
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.config.write_text('[keys]\n"3f9a" = "team key"\n')
    write(paths.db, mixed_calls())
    window = ["--since", "2026-11-20T00:00:00Z", "--until", "2026-11-22T00:00:00Z"]
    data = json.loads(cli("report", *window, "--by", "project", "--by", "client,branch", "--json").stdout)
    assert data["by"] == ["project", "client", "branch"]
    keys = [(g["project"], g["client"], g["branch"]) for g in data["groups"]]
    assert keys == [("beta", "claude-code", "main"), ("beta", "curl", None), ("alpha", "claude-code", "main"),
                    ("alpha", "cursor", "feat/x")]  # beta first: $3 at list price outweighs alpha's $1.25
    assert data["totals"]["calls"] == 4 == sum(g["calls"] for g in data["groups"])
    assert data["totals"]["cost_usd"] == "1.250000000" and data["totals"]["unpriced_calls"] == 1
    assert data["totals"]["cost_complete"] is False
    assert data["totals"]["subscription_calls"] == 1
    assert data["totals"]["subscription_list_price_usd"] == "3.000000000"  # apart, never in cost_usd
    assert data["totals"]["cache_savings_usd"] == "0.013500000"
    assert [n["kind"] for n in data["notes"]] == ["unpriced", "subscription"]

    by_key = json.loads(cli("report", *window, "--by", "key", "--json").stdout)["groups"]
    assert {(g["key"], g["key_label"]) for g in by_key} == {("3f9a1c2e", "team key (3f9a1c2e)"),
                                                          ("b07d44e1", "b07d44e1"), (None, None)}
    table = cli("report", *window, "--by", "key,branch").stdout
    assert "team key (3f9a1c2e)" in table and "(none)" in table

    def total(*args: str) -> int:
        return json.loads(cli("report", *window, *args, "--json").stdout)["totals"]["calls"]

    assert total("--project", "alpha") == 2 and total("--project", "alpha", "--project", "beta") == 4
    assert total("--model", "claude-*") == 2 and total("--model", "gpt-5", "--provider", "openai") == 1
    assert total("--branch", "(none)") == 1 and total("--client", "curl", "--client", "cursor") == 2
    assert total("--key", "team key") == 1 and total("--key", "b07d") == 1 and total("--key", "(none)") == 2
    assert total("--project", "nobody") == 0


def test_unpriced_subscription_gaps_and_the_sparkline_are_called_out(cli, paths) -> None:
    write(paths.db, mixed_calls())
    conn = sqlite3.connect(paths.db)
    conn.execute("INSERT INTO gaps (id, at, host, reason, project, kind, connections, calls_estimated) VALUES "
                 "('g1', '2026-11-21T08:00:00.000000Z', 'api.anthropic.com', 'core_down', 'beta', 'tunnel', 1, 4)")
    conn.execute("INSERT INTO gaps (id, at, host, reason, project, kind, calls) VALUES "
                 "('g2', '2026-11-21T08:01:00.000000Z', 'api.openai.com', 'core_down', 'beta', 'request', 1)")
    conn.commit()
    conn.close()
    (paths.home / "spool").mkdir()  # a tunnel the edge logged that the writer has not moved in yet: counted
    (paths.home / "spool" / "gaps.jsonl").write_text(json.dumps(
        {"id": "g3", "at": "2026-11-21T09:00:00.000000Z", "host": "api.anthropic.com", "reason": "core restarting",
         "kind": "tunnel", "connections": 1, "project": "gamma"}) + "\n")
    window = ["--since", "2026-11-20T00:00:00Z", "--until", "2026-11-22T00:00:00Z"]
    table = cli("report", *window).stdout
    assert "1 charged call unpriced" in table and "$1.25*" in table  # never a bare cost that hides it
    assert "covered by a subscription: $3.00 at list price, not in the cost" in table
    # A tunnel is a connection whose calls nobody counted: never "N calls".
    assert ("2 pass-through connections (≥ 2 calls, about 5 by estimate) and 1 call went unmetered during "
            "outages: not in these numbers") in table
    assert "cost/day" in table and "11-20 → 11-21" in table
    data = json.loads(cli("report", *window, "--json").stdout)
    assert data["schema_version"] == 2
    assert {k: data["gaps"][k] for k in ("connections", "calls", "calls_at_least", "calls_estimated")} == \
        {"connections": 2, "calls": 1, "calls_at_least": 3, "calls_estimated": 6}
    assert data["notes"][-1]["kind"] == "gaps" and data["notes"][-1]["calls"] == 3
    alpha = json.loads(cli("report", *window, "--project", "alpha", "--json").stdout)["gaps"]
    assert alpha["connections"] == alpha["calls"] == 0
    gamma = json.loads(cli("report", *window, "--project", "gamma", "--json").stdout)["gaps"]
    assert (gamma["connections"], gamma["calls"]) == (1, 0)
    only_today = cli("report", "--since", "2026-11-21T00:00:00Z", "--until", "2026-11-21T12:00:00Z").stdout
    assert "cost/day" not in only_today  # one day: no trend to draw


def test_vs_previous_shows_the_change_per_group_and_in_total(cli, paths) -> None:
    write(paths.db, [
        call("2026-11-10T10:00:00.000000Z", project="alpha", cost_nanos=1_000_000_000),
        call("2026-11-10T11:00:00.000000Z", project="gone", cost_nanos=500_000_000),
        call("2026-11-17T10:00:00.000000Z", project="alpha", cost_nanos=1_500_000_000),
        call("2026-11-17T10:30:00.000000Z", project="alpha", cost_nanos=500_000_000),
        call("2026-11-17T11:00:00.000000Z", project="new", cost_nanos=100_000_000),
    ])
    args = ["--since", "2026-11-15T00:00:00Z", "--until", "2026-11-22T00:00:00Z", "--vs-previous"]
    data = json.loads(cli("report", *args, "--json").stdout)
    assert data["previous"]["since"] == "2026-11-08T00:00:00.000000Z"
    assert data["totals"]["previous"]["calls"] == 2
    assert data["totals"]["change"]["cost_usd"] == {"abs": "0.600000000", "pct": 40.0}
    groups = {g["project"]: g for g in data["groups"]}
    assert groups["alpha"]["change"]["cost_usd"] == {"abs": "1.000000000", "pct": 100.0}
    assert groups["alpha"]["change"]["calls"] == {"abs": 1, "pct": 100.0}
    assert groups["gone"]["calls"] == 0 and groups["gone"]["change"]["cost_usd"]["pct"] == -100.0
    assert groups["new"]["change"]["cost_usd"] == {"abs": "0.100000000", "pct": None}
    table = cli("report", *args).stdout
    assert "Δ cost" in table and "+$1.00" in table and "+100%" in table and "-100%" in table
    header, *rows = cli("report", *args, "--csv").stdout.splitlines()
    assert "cost_usd_previous" in header.split(",") and len(rows) == 3
    by_day = json.loads(cli("report", *args, "--by", "day", "--json").stdout)
    assert "previous" in by_day["totals"] and all("previous" not in g for g in by_day["groups"])


# ---- formats ----------------------------------------------------------------------------------------------


def golden_calls() -> list:
    """A fixed week around the US DST change: three projects, three tools, branches, keys, both billings,
    and one of each kind of call the notes speak of."""
    spec = [
        ("2026-10-30T14:05:00.000000Z", "halton-meter", "claude-code", "main", "claude-sonnet-4-5-20250929", "api",
         2_500_000_000, 1800.0, 450.0, {}),
        ("2026-10-30T15:20:00.000000Z", "halton-meter", "claude-code", "feat/reports", "claude-sonnet-4-5-20250929",
         "api", 1_200_000_000, 2400.0, 600.0, {}),
        ("2026-10-31T09:00:00.000000Z", "acme-web", "cursor", "main", "gpt-5", "api", 800_000_000, 5200.0, None,
         {"provider": "openai", "key_fingerprint": "b07d44e1"}),
        ("2026-10-31T22:10:00.000000Z", "acme-web", "codex", "main", "gpt-5-codex", "subscription", 4_000_000_000,
         9100.0, 1200.0, {"provider": "openai"}),
        ("2026-11-01T05:45:00.000000Z", "halton-meter", "claude-code", "main", "claude-opus-4-1-20250805", "api",
         6_750_000_000, 15000.0, 2100.0, {"cache_read_tokens": 120_000, "cache_savings_nanos": 1_620_000_000}),
        ("2026-11-01T06:15:00.000000Z", "halton-meter", "anthropic-sdk-python", None, "claude-haiku-4-5-20251001",
         "api", 30_000_000, 900.0, None, {"estimated": True, "usage_reported": False}),
        ("2026-11-01T18:00:00.000000Z", "data-pipeline", "curl", None, "mystery-9", "api", None, 700.0, None,
         {"priced": False, "cache_savings_nanos": None, "provider": "openrouter"}),
        ("2026-11-02T13:00:00.000000Z", "data-pipeline", "anthropic-sdk-python", "etl", "claude-sonnet-4-5-20250929",
         "api", 90_000_000, 3100.0, 700.0, {"complete": False, "incomplete_reason": "upstream_truncated"}),
        ("2026-11-02T16:40:00.000000Z", "acme-web", "cursor", "main", "gpt-5", "api", 0, 300.0, None,
         {"provider": "openai", "error_type": "http_429", "status": 429, "billable": False, "complete": False,
          "input_tokens": 0, "output_tokens": 0, "key_fingerprint": "b07d44e1"}),
        ("2026-11-02T17:00:00.000000Z", "halton-meter", "claude-code", "main", "halton-meter-selftest", "api", 0,
         10.0, None, {"endpoint_kind": "self_test"}),
    ]
    calls = []
    for i, (at, project, client, branch, model, billing, cost, latency, ttft, extra) in enumerate(spec):
        fields = dict(id=f"00000000-0000-4000-8000-{i:012d}", project=project, client=client, branch=branch,
                      model=model, model_requested=model, billing=billing, cost_nanos=cost, latency_ms=latency,
                      ttft_ms=ttft, streamed=ttft is not None, key_fingerprint="3f9a1c2e", input_tokens=1000 * (i + 1),
                      output_tokens=150 * (i + 1), cache_savings_nanos=0)
        fields.update(extra)
        calls.append(call(at, **fields))
    return calls


def seed_golden(paths: Paths) -> list[str]:
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.config.write_text('[keys]\n"3f9a1c2e" = "team key"\n')
    write(paths.db, golden_calls())
    conn = sqlite3.connect(paths.db)
    conn.execute("INSERT INTO gaps (id, at, host, reason, project) VALUES ('gap-1', '2026-11-01T12:00:00.000000Z', "
                 "'api.anthropic.com', 'core_down', 'halton-meter')")
    conn.commit()
    conn.close()
    return ["--since", "2026-10-30", "--until", "2026-11-03"]


def compare_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing {path}: run with HALTON_METER_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} differs from {path} (HALTON_METER_UPDATE_GOLDEN=1 regenerates it)"


@pytest.mark.parametrize(("name", "extra"), [
    ("table.txt", ["--by", "project,client"]),
    ("table-vs-previous.txt", ["--by", "model", "--vs-previous"]),
    ("report.json", ["--by", "project,client", "--json"]),
    ("report.csv", ["--by", "project,key", "--csv"]),
])
def test_golden_outputs(cli, paths, monkeypatch, new_york, name: str, extra: list[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = cli("report", *seed_golden(paths), *extra)
    assert result.exit_code == 0, result
    compare_golden(name, result.stdout)
    if name.endswith(".txt"):
        assert max(cell_len(line) for line in result.stdout.splitlines()) <= 80


def test_json_totals_match_the_csv_rows(cli, paths, new_york) -> None:
    window = seed_golden(paths)
    data = json.loads(cli("report", *window, "--by", "project,key", "--json").stdout)
    header, *lines = cli("report", *window, "--by", "project,key", "--csv").stdout.splitlines()
    columns = header.split(",")
    assert columns[:3] == ["project", "key", "key_label"] and "cost_usd" in columns
    import csv

    rows = list(csv.DictReader([header, *lines]))
    assert len(rows) == len(data["groups"])
    assert sum(int(r["calls"]) for r in rows) == data["totals"]["calls"]
    from decimal import Decimal

    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal(data["totals"]["cost_usd"])
    assert data["schema_version"] == report.SCHEMA_VERSION


@pytest.mark.parametrize("by", ["project", "model", "client,branch", "key,model", "day", "hour,project",
                                "project,model,branch"])
def test_every_table_fits_80_columns(cli, paths, monkeypatch, new_york, by: str) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    window = seed_golden(paths)
    long = "a-project-with-a-remarkably-long-name-that-goes-on-and-on-and-on"
    write(paths.db, [call("2026-11-02T12:00:00.000000Z", project=long, branch="feature/" + "x" * 60,
                          model="some-provider/some-extremely-long-model-name-20991231-preview",
                          cost_nanos=123_456_789_000_000, input_tokens=987_654_321_000, output_tokens=12_345_678_901,
                          cache_read_tokens=999_999_999_999)])
    for extra in ([], ["--vs-previous"]):
        out = cli("report", *window, "--by", by, *extra).stdout
        assert max(cell_len(line) for line in out.splitlines()) <= 80, out
        assert "$123,4" in out


def test_empty_database_and_no_database(cli, paths) -> None:
    assert json.loads(cli("report", "--json").stdout)["totals"]["calls"] == 0  # no file yet
    paths.home.mkdir(parents=True)
    paths.db.touch()  # created, not yet initialised by the meter
    for command in (["report"], ["calls"], ["projects"]):
        assert cli(*command).exit_code == 0
    assert cli("retag", "--from", "a", "--to", "b").exit_code == ExitCode.USAGE
    write(paths.db, [])
    result = cli("report", "--week")
    assert result.exit_code == 0 and "No calls recorded in this window." in result.stdout
    assert cli("report", "--csv").stdout.splitlines()[0].startswith("project,calls,")


# ---- the API ----------------------------------------------------------------------------------------------


def test_api_report_takes_the_same_parameters_and_returns_the_same_json(cli, paths, new_york) -> None:
    from halton_meter.serve.endpoints import ROUTES

    window = seed_golden(paths)
    report, projects = (lambda query: ROUTES["/v1/report"](paths, query)), ROUTES["/v1/projects"]
    via_api = report(parse_qs("since=2026-10-30&until=2026-11-03&by=project,client&project=halton-meter"
                                   "&project=acme-web&vs_previous=1"))
    via_cli = json.loads(cli("report", *window, "--by", "project,client", "--project", "halton-meter",
                             "--project", "acme-web", "--vs-previous", "--json").stdout)
    assert via_api == via_cli and via_api["filters"] == {"project": ["halton-meter", "acme-web"]}
    assert report(parse_qs("window=month"))["window"] == "this month"
    for query, message in (("since=yesterday", "since 'yesterday' is not a time"),
                           ("window=fortnight", "window 'fortnight' is not a window"),
                           ("by=colour", "--by 'colour' is not a grouping"),
                           ("colour=red", "unknown parameter 'colour'"),
                           ("window=today&since=1d", "today and since cannot be combined")):
        with pytest.raises(UsageError, match=message):
            report(parse_qs(query))
    assert [p["project"] for p in projects(paths, {})["projects"]][:1] == ["halton-meter"]


def test_names_that_look_like_markup_are_printed_as_they_are(cli, paths) -> None:
    write(paths.db, [call("2025-11-20T10:00:00.000000Z", project="[/bold] weird [red]", model="m[beta]")])
    window = ["--since", "2025-11-20T00:00:00Z", "--until", "2025-11-21T00:00:00Z"]
    for command in (["report", *window, "--by", "project,model"], ["projects"], ["calls"]):
        result = cli(*command)
        assert result.exit_code == 0 and "[/bold] weird [red]" in result.stdout, result
    assert "m[beta]" in cli("calls").stdout
