"""The API's read surface (serve/endpoints.py) on real SQLite written through the writer's upsert: /v1/report
in a browser's zone equals `report --json` run in that zone, /v1/overview equals four reports, the explorer's
keyset pages cover every row once, each filter, status and search, the streamed exports equal `calls --json`
and stream, the live tail, the call detail, /v1/status, and the explorer's query plans use an index."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reportkit import call, local_zone, utc, write

from halton_meter.errors import UsageError
from halton_meter.paths import Paths
from halton_meter.serve import endpoints
from halton_meter.store import explore
from halton_meter.types import PUBLIC_FIELDS

NOW = "2026-11-18T12:00:00Z"  # a Wednesday


def q(**params: object) -> dict[str, list[str]]:
    return {k: [str(x) for x in v] if isinstance(v, list) else [str(v)] for k, v in params.items()}


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("halton_meter.cli._options.now", lambda: utc(NOW))
    monkeypatch.setattr(endpoints, "_now", lambda: utc(NOW))


def midnight_rows() -> list:
    """Calls a second either side of local midnight in New York (05:00Z) and Kolkata (18:30Z), on several days
    of this month, last month and the week, with a second project, model and subscription billing."""
    records = []
    for day in ("2026-10-05", "2026-10-31", "2026-11-01", "2026-11-02", "2026-11-16", "2026-11-17", "2026-11-18"):
        for moment, project in (("04:59:59.999999", "ny-late"), ("05:00:00.000000", "ny-early"),
                                ("18:29:59.999999", "in-late"), ("18:30:00.000000", "in-early"),
                                ("11:07:00.000000", "noon")):
            stamp = f"{day}T{moment}Z"
            if stamp >= NOW:
                continue
            records.append(call(stamp, project=project, model="gpt-5" if project == "noon" else
                                "claude-sonnet-4-5-20250929", cost_nanos=1_234_567 + len(records),
                                billing="subscription" if project == "in-late" else "api",
                                latency_ms=100.0 + len(records)))
    records.append(call("2026-11-17T19:00:00.000000Z", project="x", error_type="http_500", status=500,
                        complete=False))
    return records


REPORT_CASES = [
    (["--today"], {"window": "today"}),
    (["--today", "--by", "hour"], {"window": "today", "by": "hour"}),
    (["--yesterday", "--by", "hour,project"], {"window": "yesterday", "by": "hour,project"}),
    (["--week", "--by", "day", "--vs-previous"], {"window": "week", "by": "day", "vs_previous": 1}),
    (["--month", "--by", "project,model", "--vs-previous"],
     {"window": "month", "by": "project,model", "vs_previous": 1}),
    (["--since", "2026-10-01", "--until", "2026-11-18", "--by", "day,project"],
     {"since": "2026-10-01", "until": "2026-11-18", "by": "day,project"}),
    (["--since", "30d", "--project", "ny-*", "--by", "day"], {"since": "30d", "project": "ny-*", "by": "day"}),
]


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize(("args", "params"), REPORT_CASES)
def test_report_in_a_zone_equals_the_cli_run_in_that_zone(cli, paths, pinned, zone, args, params) -> None:
    write(paths.db, midnight_rows())
    with local_zone(zone):
        result = cli("report", "--json", *args)
    assert result.exit_code == 0, result
    expected = json.loads(result.stdout)
    with local_zone("UTC"):  # the meter's own zone is not the browser's
        got = endpoints.ROUTES["/v1/report"](paths, q(tz=zone, **params))
    assert got == expected
    assert got["totals"]["calls"] > 0


def test_zone_changes_the_days_and_the_default_is_the_meters(paths, pinned) -> None:
    write(paths.db, midnight_rows())
    by_day = {z: {d["date"]: d["calls"] for d in endpoints.ROUTES["/v1/report"](
        paths, q(tz=z, since="2026-11-16", until="2026-11-18", by="day"))["daily"]}
        for z in ("America/New_York", "Asia/Kolkata")}
    assert by_day["America/New_York"] != by_day["Asia/Kolkata"]
    with local_zone("Asia/Kolkata"):
        default = endpoints.ROUTES["/v1/report"](paths, q(window="today", by="hour"))
    assert default == endpoints.ROUTES["/v1/report"](paths, q(window="today", by="hour", tz="Asia/Kolkata"))
    assert default["since_local"] == "2026-11-18T00:00:00+05:30"


@pytest.mark.parametrize("bad", [{"tz": "Mars/Olympus"}, {"tz": "../etc/passwd"}, {"window": "decade"},
                                 {"by": "planet"}, {"colour": "red"}, {"since": "soon"}])
def test_report_bad_parameters_are_one_line_usage_errors(paths, bad) -> None:
    with pytest.raises(UsageError) as err:
        endpoints.ROUTES["/v1/report"](paths, q(**bad))
    assert "\n" not in err.value.message


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_overview_equals_four_reports(paths, pinned, zone) -> None:
    write(paths.db, midnight_rows())
    got = endpoints.ROUTES["/v1/overview"](paths, q(tz=zone))
    assert got["tz"] == zone and list(got["periods"]) == ["today", "week", "month", "last_month"]
    for name, document in got["periods"].items():
        assert document == endpoints.ROUTES["/v1/report"](paths, q(tz=zone, window=name, vs_previous=1, latency=0))
        assert "previous" in document and "change" in document["totals"]
        # latency=0 leaves out only the percentiles: every other number is the full report's
        full = endpoints.ROUTES["/v1/report"](paths, q(tz=zone, window=name, vs_previous=1))
        percentiles = ("p95_latency_ms", "p95_ttft_ms")
        assert all(document["totals"][p] is None for p in percentiles)
        assert {k: v for k, v in document["totals"].items() if k not in (*percentiles, "change", "previous")} == \
            {k: v for k, v in full["totals"].items() if k not in (*percentiles, "change", "previous")}
        assert document["notes"] == full["notes"] and document["daily"] == full["daily"]
    last = got["periods"]["last_month"]
    first = "2026-10-01T00:00:00" + ("-04:00" if zone == "America/New_York" else "+05:30")
    assert last["since_local"] == first and last["until_local"].startswith("2026-11-01T00:00:00")
    assert last["previous"]["since"] < last["since"]  # September, the whole month
    assert last["totals"]["calls"] == sum(d["calls"] for d in last["daily"]) > 0


# ---- the explorer ---------------------------------------------------------------------------------------------


def explorer_rows() -> list:
    """60 calls with ties on started_at (paging must still see each once), across every filter and status."""
    records = []
    for i in range(60):
        stamp = f"2026-11-{10 + i // 10:02d}T10:{(i % 10) // 2:02d}:00.000000Z"  # pairs share a moment
        records.append(call(
            stamp, id=f"call-{i:03d}", project=["alpha", "beta", "gamma"][i % 3],
            model=["gpt-5", "claude-haiku-4-5", None][i % 3], model_requested="gpt-5-mini",
            provider=["openai", "anthropic"][i % 2], client=[None, "cursor", "codex", "claude-code"][i % 4],
            branch=None if i % 5 == 0 else f"feat/{i % 2}", key_fingerprint=f"{i % 3:x}abc1234def" if i % 7 else None,
            provider_request_id=f"req_{i}", billing="subscription" if i % 6 == 0 else "api",
            error_type="http_429" if i % 9 == 0 else None, status=429 if i % 9 == 0 else 200,
            complete=not (i % 9 == 0 or i % 11 == 0),
            incomplete_reason="in_progress" if i == 59 else "upstream_truncated" if i % 11 == 0 else None,
            estimated=i % 8 == 0, priced=i % 10 != 0, cost_nanos=None if i % 10 == 0 else 1000 * i))
    return records


def all_pages(paths: Paths, limit: int, **params: object) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        query = q(limit=limit, **params)
        if cursor:
            query["cursor"] = [cursor]
        page = endpoints.ROUTES["/v1/calls"](paths, query)
        assert len(page["calls"]) <= limit
        seen += [c["id"] for c in page["calls"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("paging never ended")


def newest_first(records) -> list[str]:
    return [r.id for r in sorted(records, key=lambda r: (r.started_at, r.id), reverse=True)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(1, 70))
def test_pages_cover_every_row_exactly_once(tmp_path_factory, limit: int) -> None:
    paths = Paths(tmp_path_factory.mktemp("paging") / "home")
    if not paths.db.exists():
        records = explorer_rows()
        write(paths.db, records)
    assert all_pages(paths, limit) == newest_first(explorer_rows())
    assert all_pages(paths, limit, project="beta") == newest_first(r for r in explorer_rows() if r.project == "beta")


def test_recent_calls_without_parameters_as_before(paths) -> None:
    write(paths.db, explorer_rows())
    page = endpoints.ROUTES["/v1/calls"](paths, q(limit=3))
    assert [c["id"] for c in page["calls"]] == newest_first(explorer_rows())[:3]
    assert set(page["calls"][0]) == set(PUBLIC_FIELDS)
    assert len(endpoints.ROUTES["/v1/calls"](paths, {})["calls"]) == 50
    assert len(endpoints.ROUTES["/v1/calls"](paths, q(limit=1000))["calls"]) == 60  # capped at 500, not refused


def _model(r) -> str:
    return r.model or r.model_requested or ""


FILTER_CASES = [
    ({"project": "alpha"}, lambda r: r.project == "alpha"),
    ({"project": ["alpha", "gamma"]}, lambda r: r.project in ("alpha", "gamma")),
    ({"model": "gpt-5*"}, lambda r: _model(r).startswith("gpt-5")),
    ({"model": "gpt-5-mini"}, lambda r: _model(r) == "gpt-5-mini"),
    ({"provider": "anthropic"}, lambda r: r.provider == "anthropic"),
    ({"client": "(none)"}, lambda r: r.client is None),
    ({"client": "cursor"}, lambda r: r.client == "cursor"),
    ({"branch": "feat/1"}, lambda r: r.branch == "feat/1"),
    ({"branch": "(none)"}, lambda r: r.branch is None),
    ({"key": "1abc"}, lambda r: (r.key_fingerprint or "").startswith("1abc")),
    ({"key": "(none)"}, lambda r: r.key_fingerprint is None),
    ({"status": "ok"}, lambda r: r.incomplete_reason != "in_progress" and not r.error_type and r.complete),
    ({"status": "error"}, lambda r: r.incomplete_reason != "in_progress" and r.error_type is not None),
    ({"status": "incomplete"}, lambda r: r.incomplete_reason not in ("in_progress",) and not r.error_type
     and not r.complete),
    ({"status": "estimated"}, lambda r: r.estimated),
    ({"status": "unpriced"}, lambda r: r.billable and not r.priced),
    ({"status": "subscription"}, lambda r: r.billing == "subscription"),
    ({"status": ["error", "estimated"]}, lambda r: (r.incomplete_reason != "in_progress" and r.error_type is not None)
     or r.estimated),
    ({"since": "2026-11-12", "until": "2026-11-14T10:02:00Z", "tz": "UTC"},
     lambda r: "2026-11-12" <= r.started_at < "2026-11-14T10:02:00"),
    ({"q": "call-007"}, lambda r: r.id == "call-007"),
    ({"q": "req_42"}, lambda r: r.provider_request_id == "req_42"),
    ({"q": "nothing-like-it"}, lambda r: False),
    ({"provider": "openai", "status": "subscription", "project": "alpha"},
     lambda r: r.provider == "openai" and r.billing == "subscription" and r.project == "alpha"),
]


@pytest.mark.parametrize(("params", "keep"), FILTER_CASES)
def test_each_filter_status_and_search(paths, params, keep) -> None:
    records = explorer_rows()
    write(paths.db, records)
    want = newest_first(r for r in records if keep(r))
    assert want or params.get("q") == "nothing-like-it"
    assert all_pages(paths, 7, **params) == want


def test_since_is_read_in_the_given_zone(paths) -> None:
    write(paths.db, [call("2026-11-11T18:29:59.000000Z", id="before"), call("2026-11-11T18:30:00.000000Z", id="at")])
    got = endpoints.ROUTES["/v1/calls"](paths, q(since="2026-11-12", tz="Asia/Kolkata"))
    assert [c["id"] for c in got["calls"]] == ["at"]


@pytest.mark.parametrize("bad", [{"status": "happy"}, {"limit": "0"}, {"limit": "many"}, {"cursor": "%%%"},
                                 {"tz": "Nowhere/Land"}, {"offset": "10"}])
def test_explorer_bad_parameters(paths, bad) -> None:
    write(paths.db, explorer_rows())
    with pytest.raises(UsageError):
        endpoints.ROUTES["/v1/calls"](paths, q(**bad))


def test_empty_home_answers_empty(paths) -> None:
    assert endpoints.ROUTES["/v1/calls"](paths, {}) == {"calls": [], "next_cursor": None}
    assert endpoints.new_calls(paths, None)[0] == []
    with pytest.raises(LookupError):
        endpoints.CALL_DETAIL(paths, "nope")
    assert b"".join(endpoints.EXPORTS["/v1/export.json"](paths, {})[2]) == b"[\n]\n"


def test_call_detail_is_the_public_record_and_never_a_body(paths) -> None:
    record = call(id="with-body", capture={"request": '{"prompt": "SECRET PROMPT"}', "response": "SECRET REPLY",
                                          "request_truncated": False, "response_truncated": False},
                  extra={"service_tier": "default"})
    write(paths.db, [record])
    got = endpoints.CALL_DETAIL(paths, "with-body")["call"]
    assert got == record.to_public()
    assert "SECRET" not in json.dumps(got)
    conn = sqlite3.connect(paths.db)
    assert conn.execute("SELECT count(*) FROM captures").fetchone()[0] == 1  # it was stored, and not shown
    conn.close()
    with pytest.raises(LookupError):
        endpoints.CALL_DETAIL(paths, "missing")


# ---- exports ------------------------------------------------------------------------------------------------------


EXPORT_CASES = [([], {}), (["--project", "beta"], {"project": "beta"}), (["--model", "gpt-*"], {"model": "gpt-*"}),
                (["--status", "error"], {"status": "error"}),
                (["--client", "cursor", "--provider", "anthropic"], {"client": "cursor", "provider": "anthropic"})]


@pytest.mark.parametrize(("args", "params"), EXPORT_CASES)
def test_exports_equal_calls_json(cli, paths, monkeypatch, args, params) -> None:
    write(paths.db, explorer_rows())
    monkeypatch.setattr(endpoints, "EXPORT_BATCH", 4)  # many batches
    result = cli("calls", "--json", "--limit", "0", *args)
    assert result.exit_code == 0, result
    expected = json.loads(result.stdout)
    assert expected
    kind, name, chunks = endpoints.EXPORTS["/v1/export.json"](paths, q(**params))
    assert kind == "application/json" and name.endswith(".json")
    assert json.loads(b"".join(chunks)) == expected
    kind, name, chunks = endpoints.EXPORTS["/v1/export.csv"](paths, q(**params))
    assert kind.startswith("text/csv") and name.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert [r["id"] for r in rows] == [c["id"] for c in expected]
    assert list(rows[0]) == list(PUBLIC_FIELDS)
    for row, want in zip(rows, expected, strict=True):
        assert row == {k: "" if v is None else ("true" if v else "false") if isinstance(v, bool)
                       else json.dumps(v, separators=(",", ":")) if isinstance(v, dict) else str(v)
                       for k, v in want.items()}


def test_export_streams_in_batches(paths, monkeypatch) -> None:
    write(paths.db, [call(f"2026-11-10T10:00:{i // 100:02d}.{i % 100:06d}Z", id=f"e-{i:05d}") for i in range(5000)])
    monkeypatch.setattr(endpoints, "EXPORT_BATCH", 500)
    pages = []
    real = explore.page

    def counting(*args, **kwargs):
        found = real(*args, **kwargs)
        pages.append(len(found))
        return found

    monkeypatch.setattr(explore, "page", counting)
    _, _, chunks = endpoints.EXPORTS["/v1/export.json"](paths, {})
    assert next(chunks) == b"["
    first = next(chunks)
    assert pages == [500] and first.count(b'"id"') == 500  # one batch read, not the 5,000 rows
    rest = b"".join(chunks)
    assert len(pages) == 11 and sum(pages) == 5000
    assert [c["id"] for c in json.loads(b"[" + first + rest)] == [f"e-{i:05d}" for i in range(5000)]


# ---- the live tail -----------------------------------------------------------------------------------------------


def test_new_calls_sees_a_newly_committed_row_once_it_ends(paths) -> None:
    write(paths.db, [call("2026-11-10T10:00:00.000000Z", id="old")])
    found, cursor = endpoints.new_calls(paths, None)
    assert found == [] and cursor
    assert endpoints.new_calls(paths, cursor)[0] == []
    live = call("2026-11-10T10:01:00.000000Z", id="live", incomplete_reason="in_progress", complete=False)
    write(paths.db, [live, call("2026-11-10T10:02:00.000000Z", id="new")])
    found, cursor = endpoints.new_calls(paths, cursor)
    assert [c["id"] for c in found] == ["new"]
    write(paths.db, [live.replace(incomplete_reason=None, complete=True)])
    found, cursor = endpoints.new_calls(paths, cursor)
    assert [c["id"] for c in found] == ["live"] and found[0]["incomplete_reason"] is None
    assert endpoints.new_calls(paths, cursor)[0] == []
    with pytest.raises(UsageError):
        endpoints.new_calls(paths, "garbage!")


# ---- status, stats, projects ---------------------------------------------------------------------------------


def test_status_is_the_cli_status_plus_gaps_per_day(cli, paths, pinned) -> None:
    write(paths.db, [call("2026-11-10T10:00:00.000000Z")])
    conn = sqlite3.connect(paths.db)
    conn.executemany("INSERT INTO gaps (id, at, host, reason, kind, connections, calls) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [("g1", "2026-11-17T18:29:00.000000Z", "api.openai.com", "core_down", "tunnel", 1, None),
                      ("g2", "2026-11-17T18:31:00.000000Z", "api.openai.com", "core_down", "request", None, 1),
                      ("g3", "2026-09-01T00:00:00.000000Z", "api.openai.com", "core_down", "request", None, 1)])
    conn.commit()
    conn.close()
    got = endpoints.ROUTES["/v1/status"](paths, q(tz="Asia/Kolkata"))
    result = cli("status", "--json")
    expected = json.loads(result.stdout)
    assert got["verdict"] == expected["verdict"] in ("HEALTHY", "DEGRADED", "BROKEN")
    assert [r["id"] for r in got["rows"]] == [r["id"] for r in expected["rows"]]
    days = got["gaps_daily"]
    assert len(days) == 30 and days[-1]["date"] == "2026-11-18" and days[0]["date"] == "2026-10-20"
    by_date = {d["date"]: d for d in days}
    assert by_date["2026-11-17"]["connections"] == 1 and by_date["2026-11-18"]["calls"] == 1
    assert sum(d["calls_at_least"] for d in days) == 2  # September's is older than 30 days


def test_stats_and_projects_as_before(paths, pinned) -> None:
    write(paths.db, explorer_rows())
    assert set(endpoints.ROUTES["/v1/stats"](paths, {})) == {"core", "edge", "version"}
    names = [p["project"] for p in endpoints.ROUTES["/v1/projects"](paths, q(since="2026-11-01"))["projects"]]
    assert sorted(names) == ["alpha", "beta", "gamma"]


# ---- the explorer's query plans --------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"project": "alpha"}, {"model": "gpt-5"}, {"model": "claude-*"},
                                    {"provider": "openai"}, {"client": "cursor"}, {"client": "(none)"},
                                    {"branch": "feat/1"}, {"key": "1abc"}, {"status": "error"}, {"status": "incomplete"},
                                    {"status": "estimated"}, {"status": "unpriced"}, {"status": "subscription"},
                                    {"since": "2026-11-01", "tz": "UTC"}, {"q": "x"}])
def test_each_single_filter_uses_an_index(paths, params) -> None:
    write(paths.db, explorer_rows())
    selection = endpoints._selection(paths, q(**params))
    conn = sqlite3.connect(paths.db)
    where, args = selection.where(conn)
    assert where != "0"
    plan = " | ".join(row[3] for row in conn.execute(
        f"EXPLAIN QUERY PLAN SELECT X.id FROM calls AS X WHERE {where} AND (X.started_at, X.id) < (?, ?) "
        "ORDER BY X.started_at DESC, X.id DESC LIMIT 51", (*args, "9", "9")))
    conn.close()
    assert "INDEX" in plan and "SCAN X\b" not in plan + "\b", plan
    assert "TEMP B-TREE FOR ORDER BY" not in plan or params.get("q"), plan  # ties only: "RIGHT PART OF"


def test_migration_11_adds_the_explorer_indexes(tmp_path: Path) -> None:
    from halton_meter.store.schema import LATEST_VERSION, MIGRATIONS, migrate

    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    for version in range(1, 11):
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 10")
    conn.commit()
    conn.close()
    write(db, [])  # nothing yet
    migrate(db)
    conn = sqlite3.connect(db)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION >= 11
    conn.close()
    assert {"calls_x_provider", "calls_x_model", "calls_x_error", "calls_x_request_id"} <= names


def test_export_can_be_advanced_from_any_thread(paths, monkeypatch) -> None:
    """The server hands each next() to a worker thread: no connection may be tied to the first one."""
    from concurrent.futures import ThreadPoolExecutor

    write(paths.db, [call(f"2026-11-10T10:00:{i:02d}.000000Z", id=f"t-{i:02d}") for i in range(30)])
    monkeypatch.setattr(endpoints, "EXPORT_BATCH", 7)
    _, _, chunks = endpoints.EXPORTS["/v1/export.csv"](paths, q(project="alpha"))
    got = []
    for _ in range(20):
        with ThreadPoolExecutor(1) as pool:  # a new thread for every chunk
            chunk = pool.submit(next, chunks, None).result()
        if chunk is None:
            break
        got.append(chunk)
    rows = list(csv.DictReader(io.StringIO(b"".join(got).decode())))
    assert [r["id"] for r in rows] == [f"t-{i:02d}" for i in range(30)]
