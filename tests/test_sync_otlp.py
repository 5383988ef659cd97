"""Sync to OTLP/HTTP: a loopback receiver in the test decodes what arrives with the OpenTelemetry protobufs
and checks metric names, attributes and values against the local rows; proxy variables pointing at a dead
port do not divert the exporter; a receiver answering 500 (or rejecting points) keeps the cursor and gets
everything exactly once after it recovers; `logs = true` sends one log record per call; bad options are one
clear line."""

from __future__ import annotations

import datetime
import http.server
import random
import socket
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reportkit import call, rows, write

from halton_meter.errors import ConfigError
from halton_meter.sync import engine as sync_engine
from halton_meter.sync.engine import SyncEngine, status
from halton_meter.sync_config import parse_sync
from halton_meter.timewindow import iso

pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2  # noqa: E402
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2  # noqa: E402
from opentelemetry.proto.metrics.v1 import metrics_pb2  # noqa: E402

from halton_meter_plugins.sync.otlp import DURATION_BOUNDS, TOKEN_BOUNDS, open_sink  # noqa: E402

SECRET = "s3cr3t-api-key-value"


class Receiver:
    """An OTLP/HTTP receiver on 127.0.0.1: records (path, headers, body, status) of every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes, int]] = []
        self.status = 200
        self.reply = b""
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                          receiver.status))
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/x-protobuf")
                payload = receiver.reply if receiver.status == 200 else b"try again later"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str) -> list[bytes]:
        return [body for p, _, body, code in self.requests if p == path and code == 200]

    def metrics(self) -> list[metrics_service_pb2.ExportMetricsServiceRequest]:
        out = []
        for body in self.bodies("/v1/metrics"):
            request = metrics_service_pb2.ExportMetricsServiceRequest()
            request.ParseFromString(body)
            out.append(request)
        return out

    def logs(self) -> list[logs_service_pb2.ExportLogsServiceRequest]:
        out = []
        for body in self.bodies("/v1/logs"):
            request = logs_service_pb2.ExportLogsServiceRequest()
            request.ParseFromString(body)
            out.append(request)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


def settings(receiver: Receiver, **extra: Any) -> Any:
    return parse_sync([{"target": "otlp", "user": "alice", "endpoint": f"http://127.0.0.1:{receiver.port}/",
                        **extra}])[0]


def engine(db: Path, receiver: Receiver, **extra: Any) -> SyncEngine:
    return SyncEngine(db, [settings(receiver, **extra)], lambda s: open_sink(s.options), machine_id="a" * 32)


def drain(sync: SyncEngine, rounds: int = 200) -> None:
    for _ in range(rounds):
        progress = sync.run_once()
        assert not progress.errors, progress.errors
        if progress.sent == 0:
            return
    raise AssertionError("sync did not catch up")


PROVIDERS = (("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "messages"),
             ("openai", "gpt-4.1", "gpt-4.1-2025-04-14", "chat.completions"),
             ("gemini", "gemini-2.5-pro", "gemini-2.5-pro", "generateContent"),
             ("openai", "text-embedding-3-small", "text-embedding-3-small", "embeddings"))


def calls(n: int, rng: random.Random, project: str = "alpha") -> list[Any]:
    base = datetime.datetime(2026, 11, 22, 9, 0, tzinfo=datetime.UTC)
    out = []
    for i in range(n):
        provider, requested, model, kind = rng.choice(PROVIDERS)
        start = base + datetime.timedelta(seconds=i * 11)
        latency = rng.choice([None, rng.uniform(5, 90_000)])
        out.append(call(
            started_at=iso(start), ended_at=iso(start + datetime.timedelta(milliseconds=latency or 0)),
            provider=provider, model_requested=requested, model=model, endpoint_kind=kind, project=project,
            client=rng.choice(["claude-code", "codex", None]), input_tokens=rng.randrange(0, 70_000),
            output_tokens=rng.randrange(0, 5_000), cache_read_tokens=rng.choice([0, rng.randrange(1, 2_000_000)]),
            cache_write_tokens=rng.choice([0, rng.randrange(1, 9_000)]), latency_ms=latency,
            cost_nanos=rng.randrange(0, 10**9), billing=rng.choice(["api", "subscription"]),
            error_type=rng.choice([None, None, None, "rate_limit_error"])))
    return out


def kv(attributes: Any) -> dict[str, Any]:
    out = {}
    for a in attributes:
        out[a.key] = getattr(a.value, a.value.WhichOneof("value"))
    return out


def sent_rows(db: Path) -> list[dict[str, Any]]:
    return [r for r in rows(db) if r["endpoint_kind"] != "self_test" and r["incomplete_reason"] != "in_progress"]


def call_attrs(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    operation = {"messages": "chat", "chat.completions": "chat", "generateContent": "chat"}.get(
        row["endpoint_kind"], row["endpoint_kind"])
    pairs = {"gen_ai.provider.name": row["provider"], "gen_ai.request.model": row["model_requested"],
             "gen_ai.response.model": row["model"], "gen_ai.operation.name": operation,
             "error.type": row["error_type"], "halton_meter.project": row["project"],
             "halton_meter.client": row["client"]}
    return tuple(sorted((k, v) for k, v in pairs.items() if v is not None))


def points(requests: list[Any], name: str) -> list[Any]:
    return [p for r in requests for rm in r.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            if m.name == name for p in (m.histogram.data_points if m.HasField("histogram") else m.sum.data_points)]


def buckets(values: list[float], bounds: tuple[float, ...]) -> list[int]:
    out = [0] * (len(bounds) + 1)
    for v in values:
        out[next((i for i, b in enumerate(bounds) if v <= b), len(bounds))] += 1
    return out


def test_metrics_add_up_to_the_local_rows(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTLP_TEST_KEY", SECRET)
    rng = random.Random(17)
    db = tmp_path / "db.sqlite"
    write(db, [*calls(240, rng), call(endpoint_kind="self_test", provider="anthropic", input_tokens=5)])
    sync = engine(db, receiver, headers={"x-team": "platform"}, headers_env={"x-api-key": "OTLP_TEST_KEY"})
    sync.switch_on()
    drain(sync)
    sync.stop()
    local = sent_rows(db)
    assert len(local) == 240
    assert all(p == "/v1/metrics" for p, *_ in receiver.requests)
    for _, headers, _, _ in receiver.requests:
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["x-api-key"] == SECRET and headers["x-team"] == "platform"
    requests = receiver.metrics()
    assert len(requests) == 1  # one batch
    [resource] = [rm.resource for rm in requests[0].resource_metrics]
    attrs = kv(resource.attributes)
    assert attrs["service.name"] == "halton-meter" and attrs["host.id"] == "a" * 32
    assert attrs["user.name"] == attrs["halton_meter.user"] == "alice"
    metrics = {m.name: m for rm in requests[0].resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert set(metrics) == {"gen_ai.client.token.usage", "gen_ai.client.operation.duration", "halton_meter.cost"}
    delta = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    assert metrics["gen_ai.client.token.usage"].histogram.aggregation_temporality == delta
    assert metrics["gen_ai.client.operation.duration"].histogram.aggregation_temporality == delta
    assert metrics["gen_ai.client.operation.duration"].unit == "s"
    assert metrics["halton_meter.cost"].sum.aggregation_temporality == delta
    assert metrics["halton_meter.cost"].sum.is_monotonic and metrics["halton_meter.cost"].unit == "USD"

    # Tokens: per attribute set and type, the count, sum and buckets of the local rows.
    expected_tokens: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for r in local:
        expected_tokens[(*call_attrs(r), ("gen_ai.token.type", "input"))].append(
            float(r["input_tokens"] + r["cache_read_tokens"] + r["cache_write_tokens"]))
        expected_tokens[(*call_attrs(r), ("gen_ai.token.type", "output"))].append(float(r["output_tokens"]))
    got_tokens = {tuple(sorted(kv(p.attributes).items())): p for p in points(requests, "gen_ai.client.token.usage")}
    assert set(got_tokens) == {tuple(sorted(k)) for k in expected_tokens}
    for key, values in expected_tokens.items():
        point = got_tokens[tuple(sorted(key))]
        assert (point.count, point.sum) == (len(values), sum(values))
        assert list(point.explicit_bounds) == list(TOKEN_BOUNDS)
        assert list(point.bucket_counts) == buckets(values, TOKEN_BOUNDS)
    by_provider = Counter[str]()
    for p in points(requests, "gen_ai.client.token.usage"):
        by_provider[kv(p.attributes)["gen_ai.provider.name"]] += int(p.sum)
    assert by_provider == Counter({prov: sum(r["input_tokens"] + r["cache_read_tokens"] + r["cache_write_tokens"]
                                             + r["output_tokens"] for r in local if r["provider"] == prov)
                                   for prov in {r["provider"] for r in local}})

    # Duration: histogram counts = rows with a latency, in seconds.
    durations = points(requests, "gen_ai.client.operation.duration")
    assert sum(p.count for p in durations) == sum(1 for r in local if r["latency_ms"] is not None) > 0
    assert sum(p.sum for p in durations) == pytest.approx(sum(r["latency_ms"] / 1000 for r in local
                                                              if r["latency_ms"] is not None))
    for p in durations:
        assert list(p.explicit_bounds) == list(DURATION_BOUNDS) and sum(p.bucket_counts) == p.count
    assert all("gen_ai.token.type" not in kv(p.attributes) for p in durations)
    operations = {kv(p.attributes)["gen_ai.operation.name"] for p in durations}
    assert operations == {"chat", "embeddings"}

    # Cost per billing in USD.
    cost = Counter[str]()
    for p in points(requests, "halton_meter.cost"):
        cost[kv(p.attributes)["halton_meter.billing"]] += p.as_double
    for billing in ("api", "subscription"):
        assert cost[billing] == pytest.approx(sum(r["cost_nanos"] for r in local if r["billing"] == billing) / 1e9,
                                              rel=1e-12)

    # Times: the batch's earliest start and latest end.
    starts = {p.start_time_unix_nano for p in points(requests, "halton_meter.cost")}
    ends = {p.time_unix_nano for p in points(requests, "halton_meter.cost")}
    first = min(datetime.datetime.fromisoformat(r["started_at"].replace("Z", "+00:00")) for r in local)
    last = max(datetime.datetime.fromisoformat(r["ended_at"].replace("Z", "+00:00")) for r in local)
    assert starts == {int(first.timestamp()) * 10**9 + first.microsecond * 1000}
    assert ends == {int(last.timestamp()) * 10**9 + last.microsecond * 1000}


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_proxy_variables_do_not_divert_the_exporter(tmp_path: Path, receiver: Receiver,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{_dead_port()}"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    db = tmp_path / "db.sqlite"
    write(db, calls(10, random.Random(1)))
    sync = engine(db, receiver)
    sync.switch_on()
    drain(sync)
    assert sum(p.count for p in points(receiver.metrics(), "gen_ai.client.operation.duration")) == sum(
        1 for r in sent_rows(db) if r["latency_ms"] is not None)


@pytest.mark.parametrize("failure", ["status", "partial"])
def test_a_failing_receiver_keeps_the_cursor_and_gets_everything_once(
        tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    monkeypatch.setenv("OTLP_TEST_KEY", SECRET)
    monkeypatch.setattr(sync_engine, "BATCH", 40)
    db = tmp_path / "db.sqlite"
    write(db, [call(latency_ms=100.0 + i) for i in range(100)])
    sync = engine(db, receiver, headers_env={"authorization": "OTLP_TEST_KEY"})
    now = [0.0]
    sync.clock = lambda: now[0]
    sync.switch_on()
    if failure == "status":
        receiver.status = 500
    else:
        rejected = metrics_service_pb2.ExportMetricsServiceResponse()
        rejected.partial_success.rejected_data_points = 3
        rejected.partial_success.error_message = "bad points"
        receiver.reply = rejected.SerializeToString()
    failed = sync.run_once()
    [error] = failed.errors.values()
    assert "\n" not in error and SECRET not in error
    assert ("500" in error) if failure == "status" else ("rejected 3 data points" in error)
    [row] = status(db, [sync.runs["otlp"].settings])
    assert row["last_error"] and row["lag_rows"] == 100 and row["sent"] == 0
    receiver.status, receiver.reply = 200, b""
    now[0] += 10.0
    drain(sync)
    [row] = status(db, [sync.runs["otlp"].settings])
    assert row["lag_rows"] == 0 and row["sent"] == 100
    accepted = receiver.metrics() if failure == "status" else receiver.metrics()[1:]
    assert sum(p.count for p in points(accepted, "gen_ai.client.operation.duration")) == 100
    assert sum(p.count for p in points(accepted, "gen_ai.client.token.usage")) == 200


def test_logs_send_one_record_per_call(tmp_path: Path, receiver: Receiver) -> None:
    db = tmp_path / "db.sqlite"
    write(db, calls(30, random.Random(3)))
    sync = engine(db, receiver, logs=True)
    sync.switch_on()
    drain(sync)
    records = [lr for r in receiver.logs() for rl in r.resource_logs for sl in rl.scope_logs for lr in sl.log_records]
    local = {r["id"]: r for r in sent_rows(db)}
    assert sorted(kv(lr.attributes)["halton_meter.id"] for lr in records) == sorted(local)
    for lr in records:
        attrs = kv(lr.attributes)
        row = local[attrs["halton_meter.id"]]
        assert attrs["halton_meter.cost_nanos"] == row["cost_nanos"]
        assert attrs["halton_meter.input_tokens"] == row["input_tokens"]
        assert attrs["gen_ai.provider.name"] == row["provider"]
        assert not lr.HasField("body")
    assert {p for p, *_ in receiver.requests} == {"/v1/metrics", "/v1/logs"}


def test_without_logs_no_log_is_sent(tmp_path: Path, receiver: Receiver) -> None:
    db = tmp_path / "db.sqlite"
    write(db, calls(5, random.Random(4)))
    sync = engine(db, receiver)
    sync.switch_on()
    drain(sync)
    assert receiver.requests and {p for p, *_ in receiver.requests} == {"/v1/metrics"}


@pytest.mark.parametrize(("options", "words"), [
    ({"endpoint": "http://127.0.0.1:4318", "colour": "blue"}, "unknown key 'colour'"),
    ({}, "endpoint must be"),
    ({"endpoint": "ftp://collector:4318"}, "endpoint must be"),
    ({"endpoint": "http://user:pw@collector:4318"}, "not in the endpoint"),
    ({"endpoint": "http://collector:99999"}, "invalid port"),
    ({"endpoint": "http://c:4318", "headers": {"x-api-key": 5}}, "headers must be a table"),
    ({"endpoint": "http://c:4318", "headers": {"bad header": "x"}}, "invalid or reserved header"),
    ({"endpoint": "http://c:4318", "headers": {"Content-Type": "x"}}, "invalid or reserved header"),
    ({"endpoint": "http://c:4318", "headers_env": {"x-api-key": "OTLP_TEST_UNSET_VARIABLE"}}, "not set"),
    ({"endpoint": "http://c:4318", "logs": "yes"}, "logs must be true or false"),
    ({"endpoint": "http://c:4318", "timeout": True}, "timeout must be"),
    ({"endpoint": "http://c:4318", "timeout": 0}, "timeout must be"),
])
def test_bad_options_are_one_line(options: dict[str, Any], words: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTLP_TEST_UNSET_VARIABLE", raising=False)
    with pytest.raises(ConfigError) as info:
        open_sink(options)
    message = str(info.value)
    assert words in message and "\n" not in message and message.startswith("config.toml: sync target otlp")


def test_a_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2", None)
    with pytest.raises(ConfigError, match=r"pip install 'halton-meter\[otlp\]'"):
        open_sink({"endpoint": "http://127.0.0.1:4318"})


def test_the_target_is_registered() -> None:
    from halton_meter.host import PluginHost

    host = PluginHost().load(entry_points=False)
    target = host.registries.sync_targets.get("sync.otlp")
    assert target.open is open_sink and target.title == "OpenTelemetry (OTLP/HTTP)"


def test_values_on_a_bucket_boundary_fall_in_that_bucket(tmp_path: Path, receiver: Receiver) -> None:
    """OTLP explicit buckets are upper-inclusive: 1024 tokens count in (256, 1024], 0.32 s in (0.16, 0.32]."""
    db = tmp_path / "db.sqlite"
    write(db, [call(input_tokens=1000, cache_read_tokens=20, cache_write_tokens=4, output_tokens=4, latency_ms=320.0,
                    error_type=None, client="codex")])
    sync = engine(db, receiver)
    sync.switch_on()
    drain(sync)
    tokens = {kv(p.attributes)["gen_ai.token.type"]: list(p.bucket_counts)
              for p in points(receiver.metrics(), "gen_ai.client.token.usage")}
    assert tokens["input"].index(1) == TOKEN_BOUNDS.index(1024.0)
    assert tokens["output"].index(1) == TOKEN_BOUNDS.index(4.0)
    [duration] = points(receiver.metrics(), "gen_ai.client.operation.duration")
    assert list(duration.bucket_counts).index(1) == DURATION_BOUNDS.index(0.32)
    assert (duration.min, duration.max) == (0.32, 0.32)
