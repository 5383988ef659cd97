"""`GET /metrics` (serve/metrics.py, docs/metrics.md): the Prometheus exposition equals `report --json` per label
set (calls, each token type, cost per billing, errors, unpriced calls); histogram counts are exact at `le`
edges that are exact rollup bin floors; gaps count per project and client; the series cap merges the
smallest into `other`; the three `[api]` keys are validated; the route answers 401 without a token, 200
without one once `metrics_without_token = true`, 421 for a foreign Host — in process, and through a real
`halton-meter serve` compared with the real `halton-meter report --json`."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from apikit import TOKEN, parse, raw, running_api
from prometheus_client.parser import text_string_to_metric_families
from reportkit import call, rows, write

from halton_meter.config import load_config
from halton_meter.errors import ConfigError
from halton_meter.paths import Paths
from halton_meter.report import build
from halton_meter.serve import metrics
from halton_meter.store import gaps as gaps_store
from halton_meter.store.rollup import bin_floors
from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Reply
from halton_meter.testing.meter import MeterProcess
from halton_meter.timewindow import resolve_window, utc_stamp

LABELS = ("provider", "model", "project", "client")
TOKENS = {"input": "input_tokens", "output": "output_tokens", "cache_read": "cache_read_tokens",
          "cache_write": "cache_write_tokens", "reasoning": "reasoning_tokens"}
FLOORS = {Decimal(repr(f)) for f in bin_floors()[1:]}


# ---- helpers --------------------------------------------------------------------------------------------


def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name → {sorted label pairs: value}, parsed with prometheus-client's own parser."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            assert key not in found[sample.name], (sample.name, key)
            found[sample.name][key] = sample.value
    return found


def labelled(values: dict[str, Any], **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({**{k: v or "" for k, v in values.items()}, **extra}.items()))


def usd(value: str | None) -> Decimal:
    return Decimal(value or "0")


def assert_equals_report(text: str, report: dict[str, Any], labels: tuple[str, ...] = LABELS) -> None:
    """Every group of `report` (grouped by `labels`) against the scrape; and nothing else in the scrape."""
    got = samples(text)
    assert report["groups"], "nothing to compare"
    assert len(got["halton_meter_calls_total"]) == len(report["groups"])
    for group in report["groups"]:
        key = {name: group[name] for name in labels}
        assert got["halton_meter_calls_total"][labelled(key)] == group["calls"], key
        for kind, field in TOKENS.items():
            assert got["halton_meter_tokens_total"][labelled(key, type=kind)] == group[field], (key, kind)
        assert got["halton_meter_errors_total"][labelled(key)] == group["error_calls"], key
        assert got["halton_meter_unpriced_calls_total"][labelled(key)] == \
            group["unpriced_calls"] + group["subscription_unpriced_calls"], key
        for billing, field in (("api", "cost_usd"), ("subscription", "subscription_list_price_usd")):
            value = got["halton_meter_cost_usd_total"].get(labelled(key, billing=billing), 0.0)
            assert Decimal(f"{value:.9f}") == usd(group[field]), (key, billing, value, group[field])
        billings = {dict(k)["billing"] for k in got["halton_meter_cost_usd_total"]
                    if labelled(key) == tuple(p for p in k if p[0] != "billing")}
        assert billings == {b for b, n in (("subscription", group["subscription_calls"]),
                                           ("api", group["calls"] - group["subscription_calls"])) if n}, key
    assert sum(got["halton_meter_calls_total"].values()) == report["totals"]["calls"]


def le_edges(text: str, name: str) -> list[str]:
    return sorted({dict(k)["le"] for k in samples(text)[f"{name}_bucket"]} - {"+Inf"}, key=float)


def ago(**delta: float) -> str:
    return utc_stamp(dt.datetime.now(dt.UTC) - dt.timedelta(**delta))


def history() -> list[Any]:
    """Calls over the last ten days and the last hour (closed days come from the day cache, the last hours
    from the rollup and the rows): two providers, several models, projects and tools, subscription and API
    billing, an error, an unpriced call, no latency, TTFTs."""
    records = []
    for i in range(40):
        provider, model = (("anthropic", "claude-sonnet-4-5-20250929"), ("anthropic", "claude-haiku-4-5-20251001"),
                           ("openai", "gpt-5"))[i % 3]
        records.append(call(
            ago(days=i % 10, minutes=7 * i + 1), provider=provider, model=model, model_requested=model,
            project=("alpha", "beta", "gamma")[i % 3 if i % 4 else 0], client=("claude-code", "codex", None)[i % 3],
            billing="subscription" if i % 5 == 0 else "api", input_tokens=1000 + i, output_tokens=100 + 3 * i,
            cache_read_tokens=50 * i, cache_write_tokens=7 * i, reasoning_tokens=i if i % 2 else None,
            cost_nanos=4_500_000 + 12_345 * i, latency_ms=None if i == 7 else 80.0 * (1.31 ** (i % 25)),
            ttft_ms=30.0 * (1.4 ** (i % 17)) if i % 3 != 2 else None,
            error_type="http_500" if i % 11 == 4 else None))
    records.append(call(ago(hours=2), model="mystery-model-9", model_requested="mystery-model-9", priced=False,
                        cost_nanos=None, project="beta"))
    records.append(call(ago(minutes=3), endpoint_kind="self_test", project="alpha"))  # never counts
    return records


@pytest.fixture
def seeded(paths: Paths) -> Paths:
    write(paths.db, history())
    return paths


def report_json(paths: Paths, by: tuple[str, ...] = LABELS) -> dict[str, Any]:
    return build(paths.db, resolve_window(since="2000-01-01"), by=by).to_json()


# ---- the collector ---------------------------------------------------------------------------------------


def test_the_exposition_equals_the_report_per_label_set(seeded: Paths) -> None:
    text = metrics.scrape(seeded).decode()
    assert_equals_report(text, report_json(seeded))
    got = samples(text)
    assert got["halton_meter_metrics_merged_series"] == {(): 0.0}
    # a second scrape (closed days now from the day cache) says the same
    assert metrics.scrape(seeded).decode() == text


def test_history_kept_between_scrapes_follows_writes_that_reach_back(seeded: Paths) -> None:
    first = samples(metrics.scrape(seeded).decode())["halton_meter_calls_total"]
    assert metrics.CLOSED._entry is not None  # the closed part is kept
    write(seeded.db, [call(ago(days=3), project="late-import", provider="anthropic", client="claude-code"),
                      call(ago(minutes=2), project="just-now", provider="anthropic", client="claude-code")])
    text = metrics.scrape(seeded).decode()
    after = samples(text)["halton_meter_calls_total"]
    assert sum(after.values()) == sum(first.values()) + 2
    assert {dict(k)["project"] for k in after} >= {"late-import", "just-now"}
    assert_equals_report(text, report_json(seeded))


def test_other_labels_from_config(seeded: Paths) -> None:
    seeded.config.write_text('[api]\nmetrics_labels = ["provider", "project"]\n')
    text = metrics.scrape(seeded).decode()
    assert_equals_report(text, report_json(seeded, ("provider", "project")), ("provider", "project"))
    for name, series in samples(text).items():
        for key in series:
            assert set(dict(key)) <= {"provider", "project", "type", "billing", "le"}, name
    seeded.config.write_text('[api]\nmetrics_labels = ["branch", "key"]\n')
    text = metrics.scrape(seeded).decode()
    assert_equals_report(text, report_json(seeded, ("branch", "key")), ("branch", "key"))


def test_histograms_are_exact_at_bin_floor_edges(seeded: Paths) -> None:
    text = metrics.scrape(seeded).decode()
    got = samples(text)
    all_rows = [r for r in rows(seeded.db) if r["endpoint_kind"] != "self_test"]
    for name, column in (("halton_meter_latency_seconds", "latency_ms"), ("halton_meter_ttft_seconds", "ttft_ms")):
        edges = le_edges(text, name)
        assert len(edges) == len(metrics.BUCKET_TARGETS)
        for le, target in zip(edges, metrics.BUCKET_TARGETS, strict=True):
            assert Decimal(le).scaleb(3) in FLOORS, le  # the published edge is a bin floor, exactly
            assert abs(float(le) / target - 1) < 0.05, (le, target)  # the one nearest the round number
        values = [r[column] for r in all_rows if r[column] is not None]
        assert sum(got[f"{name}_count"].values()) == len(values)
        assert sum(got[f"{name}_sum"].values()) == pytest.approx(sum(values) / 1000, abs=1e-6)
        for le in edges:
            bucket = sum(v for k, v in got[f"{name}_bucket"].items() if dict(k)["le"] == le)
            assert bucket == sum(1 for v in values if v / 1000 <= float(le)), (name, le)
        inf = sum(v for k, v in got[f"{name}_bucket"].items() if dict(k)["le"] == "+Inf")
        assert inf == len(values)
    for key, count in got["halton_meter_latency_seconds_count"].items():  # per series too
        wanted = {k: (v or None) for k, v in key}
        assert count == sum(1 for r in all_rows if r["latency_ms"] is not None and all(
            (r["model"] if k == "model" else r[k]) == v for k, v in wanted.items())), key


def test_gaps_count_per_project_and_client_like_the_report(seeded: Paths) -> None:
    import sqlite3

    conn = sqlite3.connect(seeded.db)
    with conn:
        for n, (kind, project, client) in enumerate([("tunnel", "alpha", "claude-code"), ("request", "alpha", None),
                                                     ("record", "beta", "codex"), ("tunnel", "alpha", "claude-code")]):
            gap = {"id": f"gap-{n}", "at": ago(hours=n + 1), "host": "api.anthropic.com", "reason": "core_down",
                   "kind": kind, "project": project, "client": client, "connections": 2 if n == 3 else None,
                   "calls": 3 if kind == "record" else None}
            conn.execute(gaps_store.UPSERT_SQL, gaps_store.row_values(gap))
    conn.close()
    gaps_store.append_line(seeded.spool, {"id": "gap-pending", "at": ago(minutes=5), "host": "api.openai.com",
                                          "reason": "core_down", "kind": "tunnel", "project": "gamma"})
    got = samples(metrics.scrape(seeded).decode())["halton_meter_gap_calls_total"]
    assert got == {(("client", "claude-code"), ("project", "alpha")): 3.0, (("client", ""), ("project", "alpha")): 1.0,
                   (("client", "codex"), ("project", "beta")): 3.0, (("client", ""), ("project", "gamma")): 1.0}
    assert sum(got.values()) == report_json(seeded)["gaps"]["calls_at_least"] == 8
    seeded.config.write_text('[api]\nmetrics_labels = ["model"]\n')  # gaps know no model: one series
    assert samples(metrics.scrape(seeded).decode())["halton_meter_gap_calls_total"] == {(): 8.0}


def test_the_series_cap_merges_the_smallest_into_other(paths: Paths) -> None:
    records = []
    for project, n in (("p1", 5), ("p2", 4), ("p3", 3), ("p4", 2), ("p5", 1)):
        records += [call(ago(hours=i + 1), project=project, input_tokens=10 * n, latency_ms=100.0 * n,
                         billing="subscription" if project == "p5" else "api") for i in range(n)]
    write(paths.db, records)
    paths.config.write_text('[api]\nmetrics_labels = ["project"]\nmetrics_max_series = 3\n')
    text = metrics.scrape(paths).decode()
    got = samples(text)
    assert got["halton_meter_calls_total"] == {(("project", "p1"),): 5, (("project", "p2"),): 4,
                                               (("project", "other"),): 6}
    assert got["halton_meter_tokens_total"][(("project", "other"), ("type", "input"))] == 3 * 30 + 2 * 20 + 10
    assert got["halton_meter_latency_seconds_count"][(("project", "other"),)] == 6
    assert got["halton_meter_cost_usd_total"][(("billing", "subscription"), ("project", "other"))] == pytest.approx(0.0045)
    assert got["halton_meter_metrics_merged_series"] == {(): 3}
    assert sum(got["halton_meter_calls_total"].values()) == 15
    # every label of the merged series reads `other`, and a real `other` joins it rather than clashing
    write(paths.db, [call(ago(minutes=30), project="other"), call(ago(minutes=31), project="other")])
    paths.config.write_text('[api]\nmetrics_labels = ["project", "provider"]\nmetrics_max_series = 2\n')
    got = samples(metrics.scrape(paths).decode())
    assert got["halton_meter_calls_total"] == {(("project", "p1"), ("provider", "anthropic")): 5,
                                               (("project", "other"), ("provider", "other")): 12}


def test_bound_keeps_at_most_the_limit() -> None:
    found = {(str(i),): i for i in range(10)}
    kept, merged = metrics.bound(found, 4, int, int.__add__, int)
    assert kept == {("9",): 9, ("8",): 8, ("7",): 7, ("other",): sum(range(7))} and merged == 7
    assert metrics.bound(found, 10, int, int.__add__, int) == (found, 0)
    assert metrics.bound(found, 1, int, int.__add__, int) == ({("other",): 45}, 10)


def test_an_empty_or_missing_database_scrapes_empty(paths: Paths) -> None:
    text = metrics.scrape(paths).decode()
    assert "# TYPE halton_meter_calls_total counter" in text
    assert not samples(text)["halton_meter_calls_total"]
    write(paths.db, [])
    assert not samples(metrics.scrape(paths).decode())["halton_meter_calls_total"]


# ---- configuration ---------------------------------------------------------------------------------------


def test_the_three_api_keys_are_read_and_defaulted(paths: Paths) -> None:
    config = load_config(paths)
    assert (config.api_metrics_labels, config.api_metrics_max_series, config.api_metrics_without_token) == (
        LABELS, 500, False)
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.config.write_text('[api]\nport = 9000\nmetrics_labels = ["key", "branch"]\nmetrics_max_series = 20\n'
                            'metrics_without_token = true\n')
    config = load_config(paths)
    assert (config.api_port, config.api_metrics_labels, config.api_metrics_max_series,
            config.api_metrics_without_token) == (9000, ("key", "branch"), 20, True)


@pytest.mark.parametrize(("line", "words"), [
    ('metrics_labels = ["provider", "day"]', "metrics_labels must be a list of distinct labels"),
    ('metrics_labels = ["model", "model"]', "metrics_labels must be a list of distinct labels"),
    ('metrics_labels = "model"', "metrics_labels must be a list"),
    ("metrics_max_series = 0", "metrics_max_series must be an integer between 1 and 100000"),
    ("metrics_max_series = true", "metrics_max_series must be an integer"),
    ('metrics_without_token = "yes"', "metrics_without_token must be true or false"),
    ("metrics_without_token = 1", "metrics_without_token must be true or false"),
])
def test_invalid_api_keys_are_refused(paths: Paths, line: str, words: str) -> None:
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(f"[api]\n{line}\n")
    with pytest.raises(ConfigError, match=words):
        load_config(paths)


def test_a_broken_edit_keeps_the_settings_read_before(paths: Paths) -> None:
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.config.write_text("[api]\nmetrics_without_token = true\n")
    assert metrics.settings(paths).api_metrics_without_token
    paths.config.write_text("[api]\nmetrics_without_token = yes please\n")
    assert metrics.settings(paths).api_metrics_without_token
    paths.config.write_text("[api]\nmetrics_without_token = false\n")
    assert not metrics.settings(paths).api_metrics_without_token


# ---- the route, in process -------------------------------------------------------------------------------


def test_the_route_needs_the_token_unless_opened_and_checks_the_host(seeded: Paths) -> None:
    with running_api(seeded) as api, api.client() as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401 and "halton_meter_calls" not in refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/metrics", headers=api.bearer())
        assert ok.status_code == 200 and ok.headers["content-type"] == metrics.CONTENT_TYPE
        assert ok.headers["x-content-type-options"] == "nosniff"
        assert_equals_report(ok.text, report_json(seeded))
        status, _, _ = parse(raw(api.port, b"GET /metrics HTTP/1.1\r\nHost: evil.example:PORT\r\n"
                                 b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"))
        assert status == 421
        seeded.config.write_text("[api]\nmetrics_without_token = true\n")
        opened = client.get("/metrics")
        assert opened.status_code == 200 and opened.text == ok.text
        assert client.get("/v1/stats").status_code == 401  # only /metrics opens
        status, _, _ = parse(raw(api.port, b"GET /metrics HTTP/1.1\r\nHost: evil.example:PORT\r\n\r\n"))
        assert status == 421
        assert client.get("/metrics", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"}
                          ).status_code == 403
        seeded.config.write_text("[api]\nmetrics_without_token = false\n")
        assert client.get("/metrics").status_code == 401


def test_an_unreadable_database_is_a_503(paths: Paths) -> None:
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.db.write_bytes(b"this is not a database" * 100)
    with running_api(paths) as api, api.client() as client:
        response = client.get("/metrics", headers=api.bearer())
    assert response.status_code == 503 and "database" in response.json()["error"]


# ---- through a real serve --------------------------------------------------------------------------------


def metered_call(meter: MeterProcess, fake: FakeProvider, project: str, model: str, *, stream: bool = False,
                 status: int = 200) -> None:
    """One Anthropic call through the proxy, attributed to `project` by the proxy credentials."""
    if stream:
        fake.add("POST", "/v1/messages", Reply(pieces=bodies.anthropic_stream_events(
            model=model, input_tokens=40, output_tokens=9, chunks=("o", "k")), sse=True))
    elif status != 200:
        error = {"type": "error", "error": {"type": "api_error", "message": "boom"}}
        fake.add("POST", "/v1/messages", Reply(status=status, body=json.dumps(error).encode()))
    else:
        fake.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(
            model=model, input_tokens=1000, output_tokens=200, cache_read=300)))
    proxy = f"http://project:{project}@127.0.0.1:{meter.edge_port}"
    with httpx.Client(proxy=proxy, verify=meter.ssl_context(fake.ca_pem), trust_env=False, timeout=15) as client:
        reply = client.post("https://api.anthropic.com/v1/messages",
                            headers={"x-api-key": f"sk-ant-api03-METRICS-{uuid.uuid4().hex[:6]}",
                                     "anthropic-version": "2023-06-01", "user-agent": "claude-cli/2.1.90"},
                            json={"model": model, "max_tokens": 64, "stream": stream,
                                  "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == status, reply.text


@pytest.mark.e2e
def test_a_real_serve_scrape_equals_report_json(meter: MeterProcess, fake_provider: FakeProvider) -> None:
    fake_provider.clear()
    before = len(meter.rows())
    metered_call(meter, fake_provider, "metrics-alpha", "claude-sonnet-4-5")
    metered_call(meter, fake_provider, "metrics-alpha", "claude-sonnet-4-5")
    metered_call(meter, fake_provider, "metrics-beta", "claude-haiku-4-5", stream=True)
    metered_call(meter, fake_provider, "metrics-beta", "claude-sonnet-4-5", status=500)
    all_rows = meter.wait_for_calls(before + 4, 15.0)
    report = json.loads(meter.cli("report", "--json", "--since", "2000-01-01", "--by", ",".join(LABELS)).stdout)
    response = meter.api_get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"] == metrics.CONTENT_TYPE
    text = response.text
    assert_equals_report(text, report)
    got = samples(text)
    projects = {dict(k)["project"] for k in got["halton_meter_calls_total"]}
    assert {"metrics-alpha", "metrics-beta"} <= projects
    assert sum(v for k, v in got["halton_meter_errors_total"].items() if dict(k)["project"] == "metrics-beta") == 1
    assert sum(got["halton_meter_latency_seconds_count"].values()) == sum(
        1 for r in all_rows if r["latency_ms"] is not None and r["endpoint_kind"] != "self_test")
    assert sum(got["halton_meter_ttft_seconds_count"].values()) == sum(
        1 for r in all_rows if r["ttft_ms"] is not None and r["endpoint_kind"] != "self_test") >= 1
    for name in ("halton_meter_latency_seconds", "halton_meter_ttft_seconds"):
        for le in le_edges(text, name):
            assert Decimal(le).scaleb(3) in FLOORS


@pytest.mark.e2e
def test_a_real_serve_opens_metrics_without_a_token_only_when_configured(meter: MeterProcess) -> None:
    assert meter.api_get("/metrics", token=None).status_code == 401
    assert meter.api_get("/metrics", host="evil.example").status_code == 421
    config = meter.home / "config.toml"
    original = config.read_text()
    try:
        config.write_text(original + "\n[api]\nmetrics_without_token = true\n")
        meter.cli("reload")
        opened = meter.api_get("/metrics", token=None)
        assert opened.status_code == 200 and "halton_meter_calls_total" in opened.text
        assert meter.api_get("/metrics", token=None, host="evil.example").status_code == 421
        assert meter.api_get("/v1/stats", token=None).status_code == 401
    finally:
        config.write_text(original)
        meter.cli("reload")
    assert meter.api_get("/metrics", token=None).status_code == 401


def test_the_docs_name_every_metric() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    reading = metrics.Reading(LABELS, floors=bin_floors())
    for family in metrics.Collector(reading).collect():
        exposed = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{exposed}`" in page, exposed
