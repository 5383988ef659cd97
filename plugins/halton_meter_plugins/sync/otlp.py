"""`sync.otlp`: the meter's calls as OpenTelemetry GenAI metrics (and optionally one log record per call),
pushed over OTLP/HTTP with protobuf bodies (docs/sync.md; `pip install 'halton-meter[otlp]'`).

Config (`[[sync]]` with `target = "otlp"`):

* `endpoint` — the receiver's base URL, like `http://127.0.0.1:4318`; `/v1/metrics` (and `/v1/logs`) are
  appended. No user or password in it: put credentials in `headers` / `headers_env`;
* `headers` — a table of extra request headers; `headers_env = {"x-api-key" = "ENV_NAME"}` takes a header's
  value from the meter's environment. Header values are never logged nor shown in an error;
* `logs` — also send one log record per call (default false);
* `timeout` — seconds per request (default 10).

What one push sends (one `ExportMetricsServiceRequest` per batch, every point with DELTA temporality, its
start/end the batch's earliest `started_at` / latest `ended_at`):

* `gen_ai.client.token.usage` (histogram, `{token}`, semconv buckets) with `gen_ai.token.type` = `input`
  (input + cache read + cache write tokens: everything the provider billed as input) or `output`;
* `gen_ai.client.operation.duration` (histogram, `s`, semconv buckets) from `latency_ms`;
* `halton_meter.cost` (monotonic double sum, `USD`) with `halton_meter.billing` — a cost counter in our own
  namespace until the semantic conventions have one.

Every point carries `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`,
`gen_ai.operation.name`, `error.type`, `halton_meter.project` and `halton_meter.client` when the row has
them (a field dropped by the privacy preset is simply absent). Self-test calls are left out, as `report`
does. Resource: `service.name = "halton-meter"`, `service.version`, `host.id` (machine id), `user.name` and
`halton_meter.user` (the user label).

The exporter opens its connections with an empty proxy table, so `HTTPS_PROXY` / `HTTP_PROXY` (set by
`halton-meter run` or a shell) never send its traffic through the meter's own proxy. A non-2xx answer, or a
2xx one that reports rejected points, raises: the engine keeps its cursor and retries the batch.
"""

from __future__ import annotations

import calendar
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from halton_meter.plugin import ConfigError, SyncTarget, __version__, hookimpl, parse_stamp

KEYS = {"endpoint", "headers", "headers_env", "logs", "timeout"}
WHERE = "config.toml: sync target otlp"
TOKEN_BOUNDS = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
                16777216.0, 67108864.0)
DURATION_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
CHAT_KINDS = {"messages", "chat.completions", "responses", "generateContent", "streamGenerateContent"}
OPERATION_NAMES = {"completions": "text_completion", "embeddings": "embeddings"}
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
_RESERVED_HEADERS = {"content-type", "content-length", "host"}
INSTALL = "pip install 'halton-meter[otlp]'"


# ---- options -------------------------------------------------------------------------------------------


def _settings(options: Mapping[str, Any]) -> tuple[str, dict[str, str], bool, float]:
    """(base URL without trailing slash, headers with values resolved, logs, timeout) or ConfigError."""
    unknown = sorted(set(options) - KEYS)
    if unknown:
        raise ConfigError(f"{WHERE}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
    endpoint = options.get("endpoint")
    parts = urllib.parse.urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{WHERE}: endpoint must be like \"http://127.0.0.1:4318\" (/v1/metrics is appended)")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{WHERE}: put credentials in headers or headers_env, not in the endpoint")
    try:
        parts.port  # noqa: B018 — raises on a bad port
    except ValueError:
        raise ConfigError(f"{WHERE}: endpoint has an invalid port") from None
    headers: dict[str, str] = {}
    for key in ("headers", "headers_env"):
        table = options.get(key, {})
        if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
            raise ConfigError(f"{WHERE}: {key} must be a table of strings, like {key} = {{ \"x-api-key\" = \"…\" }}")
        for name, value in table.items():
            if not _HEADER.match(name) or name.lower() in _RESERVED_HEADERS:
                raise ConfigError(f"{WHERE}: {key} has an invalid or reserved header name {name!r}")
            if name.lower() in (h.lower() for h in headers):
                raise ConfigError(f"{WHERE}: header {name!r} is set twice (headers and headers_env)")
            if key == "headers_env":
                if value not in os.environ:
                    raise ConfigError(f"{WHERE}: headers_env names {value!r}, which is not set in the meter's "
                                      "environment")
                value = os.environ[value]
            if "\n" in value or "\r" in value:
                raise ConfigError(f"{WHERE}: the value of header {name!r} has a line break")
            headers[name] = value
    logs = options.get("logs", False)
    if not isinstance(logs, bool):
        raise ConfigError(f"{WHERE}: logs must be true or false")
    timeout = options.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
        raise ConfigError(f"{WHERE}: timeout must be a number of seconds between 0 and 300, like timeout = 10")
    return endpoint.rstrip("/"), headers, logs, float(timeout)  # type: ignore[union-attr]


# ---- building the requests -------------------------------------------------------------------------------


def _nanos(stamp: Any) -> int | None:
    moment = parse_stamp(stamp)
    if moment is None:
        return None
    return calendar.timegm(moment.timetuple()) * 1_000_000_000 + moment.microsecond * 1000


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _operation(kind: Any) -> str | None:
    if kind in CHAT_KINDS:
        return "chat"
    return OPERATION_NAMES.get(kind, kind) if _present(kind) else None


def _call_attributes(row: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    pairs = (("gen_ai.provider.name", row.get("provider")), ("gen_ai.request.model", row.get("model_requested")),
             ("gen_ai.response.model", row.get("model")), ("gen_ai.operation.name", _operation(row.get("endpoint_kind"))),
             ("error.type", row.get("error_type")), ("halton_meter.project", row.get("project")),
             ("halton_meter.client", row.get("client")))
    return tuple((k, str(v)) for k, v in pairs if _present(v))


def _any_value(pb: Any, value: Any) -> Any:
    out = pb.AnyValue()
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    else:
        out.string_value = str(value)
    return out


def _key_values(pb: Any, pairs: Iterable[tuple[str, Any]]) -> list[Any]:
    return [pb.KeyValue(key=k, value=_any_value(pb, v)) for k, v in pairs if _present(v)]


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.count, self.total = 0, 0.0
        self.low, self.high = float("inf"), float("-inf")

    def add(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1  # OTLP buckets are upper-inclusive: (b[i-1], b[i]]
        self.count += 1
        self.total += value
        self.low, self.high = min(self.low, value), max(self.high, value)


def _resource(pb: Any, machine_id: Any, user: Any) -> Any:
    from opentelemetry.proto.resource.v1 import resource_pb2

    return resource_pb2.Resource(attributes=_key_values(pb, (
        ("service.name", "halton-meter"), ("service.version", __version__), ("host.id", machine_id),
        ("user.name", user), ("halton_meter.user", user))))


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[Any, Any], list[dict[str, Any]]]:
    out: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("endpoint_kind") == "self_test":
            continue
        out.setdefault((row.get("machine_id"), row.get("user_label")), []).append(row)
    return out


def _histogram(name: str, unit: str, description: str, points: dict[tuple[tuple[str, str], ...], _Histogram],
               start: int, end: int) -> Any:
    from opentelemetry.proto.common.v1 import common_pb2 as pb
    from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

    return m.Metric(name=name, unit=unit, description=description, histogram=m.Histogram(
        aggregation_temporality=m.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA, data_points=[
            m.HistogramDataPoint(attributes=_key_values(pb, attrs), start_time_unix_nano=start, time_unix_nano=end,
                                 count=h.count, sum=h.total, bucket_counts=h.buckets, explicit_bounds=h.bounds,
                                 min=h.low, max=h.high) for attrs, h in points.items()]))


def metrics_request(rows: list[dict[str, Any]]) -> Any:
    """The `ExportMetricsServiceRequest` for one batch (None when nothing in it is to be counted)."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2 as pb
    from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

    delta = m.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    for (machine_id, user), group in _groups(rows).items():
        starts = [n for n in (_nanos(r.get("started_at")) for r in group) if n is not None]
        ends = [n for n in (_nanos(r.get("ended_at") or r.get("started_at")) for r in group) if n is not None]
        start = min(starts) if starts else time.time_ns()
        end = max([start, *ends])
        tokens: dict[tuple[tuple[str, str], ...], _Histogram] = {}
        durations: dict[tuple[tuple[str, str], ...], _Histogram] = {}
        costs: dict[tuple[tuple[str, str], ...], int] = {}
        for row in group:
            attrs = _call_attributes(row)
            counts = [row.get(f) for f in ("input_tokens", "cache_read_tokens", "cache_write_tokens")]
            if any(isinstance(c, int) for c in counts):
                tokens.setdefault((*attrs, ("gen_ai.token.type", "input")), _Histogram(TOKEN_BOUNDS)).add(
                    float(sum(c for c in counts if isinstance(c, int))))
            if isinstance(row.get("output_tokens"), int):
                tokens.setdefault((*attrs, ("gen_ai.token.type", "output")), _Histogram(TOKEN_BOUNDS)).add(
                    float(row["output_tokens"]))
            latency = row.get("latency_ms")
            if isinstance(latency, int | float) and not isinstance(latency, bool):
                durations.setdefault(attrs, _Histogram(DURATION_BOUNDS)).add(latency / 1000.0)
            if isinstance(row.get("cost_nanos"), int):
                key = (*attrs, ("halton_meter.billing", str(row.get("billing") or "api")))
                costs[key] = costs.get(key, 0) + row["cost_nanos"]
        metrics = [_histogram(name, unit, text, points, start, end) for name, unit, text, points in (
            ("gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.", tokens),
            ("gen_ai.client.operation.duration", "s", "GenAI operation duration.", durations)) if points]
        if costs:
            metrics.append(m.Metric(name="halton_meter.cost", unit="USD",
                                    description="What the calls cost at list price (nano-dollar exact per call).",
                                    sum=m.Sum(aggregation_temporality=delta, is_monotonic=True, data_points=[
                                        m.NumberDataPoint(attributes=_key_values(pb, attrs), start_time_unix_nano=start,
                                                          time_unix_nano=end, as_double=nanos / 1e9)
                                        for attrs, nanos in costs.items()])))
        if metrics:
            request.resource_metrics.append(m.ResourceMetrics(
                resource=_resource(pb, machine_id, user),
                scope_metrics=[m.ScopeMetrics(scope=pb.InstrumentationScope(name="halton-meter", version=__version__),
                                              metrics=metrics)]))
    return request if request.resource_metrics else None


def logs_request(rows: list[dict[str, Any]]) -> Any:
    """The `ExportLogsServiceRequest` for one batch: one record per call, its fields as attributes."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2 as pb
    from opentelemetry.proto.logs.v1 import logs_pb2 as lg

    request = logs_service_pb2.ExportLogsServiceRequest()
    now = time.time_ns()
    for (machine_id, user), group in _groups(rows).items():
        records = []
        for row in group:
            fields = sorted((f"halton_meter.{k}", v) for k, v in row.items()
                            if k not in ("machine_id", "user_label") and isinstance(v, str | int | float | bool))
            record = lg.LogRecord(
                time_unix_nano=_nanos(row.get("ended_at") or row.get("started_at")) or now,
                observed_time_unix_nano=now, severity_number=lg.SeverityNumber.SEVERITY_NUMBER_INFO,
                severity_text="INFO", attributes=_key_values(pb, [*_call_attributes(row), *fields]))
            if "event_name" in lg.LogRecord.DESCRIPTOR.fields_by_name:  # opentelemetry-proto >= 1.30
                record.event_name = "halton_meter.call"
            records.append(record)
        if records:
            request.resource_logs.append(lg.ResourceLogs(
                resource=_resource(pb, machine_id, user),
                scope_logs=[lg.ScopeLogs(scope=pb.InstrumentationScope(name="halton-meter", version=__version__),
                                         log_records=records)]))
    return request if request.resource_logs else None


# ---- sending -------------------------------------------------------------------------------------------------


class OtlpSink:
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.endpoint, self.headers, self.logs, self.timeout = _settings(options)
        try:
            import opentelemetry.proto.collector.metrics.v1.metrics_service_pb2  # noqa: F401
        except ImportError:
            raise ConfigError(f"{WHERE}: the OTLP exporter needs opentelemetry-proto: {INSTALL}") from None
        # No proxy, whatever HTTPS_PROXY / HTTP_PROXY say: the exporter must not meter itself through us.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def push(self, rows: list[dict[str, Any]]) -> None:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

        metrics = metrics_request(rows)
        if metrics is not None:
            answer = self._post("/v1/metrics", metrics.SerializeToString(),
                                metrics_service_pb2.ExportMetricsServiceResponse())
            if answer is not None and answer.partial_success.rejected_data_points > 0:
                raise RuntimeError(f"OTLP receiver at {self.endpoint} rejected "
                                   f"{answer.partial_success.rejected_data_points} data points: "
                                   f"{_short(answer.partial_success.error_message)}")
        if self.logs:
            logs = logs_request(rows)
            if logs is not None:
                answer = self._post("/v1/logs", logs.SerializeToString(), logs_service_pb2.ExportLogsServiceResponse())
                if answer is not None and answer.partial_success.rejected_log_records > 0:
                    raise RuntimeError(f"OTLP receiver at {self.endpoint} rejected "
                                       f"{answer.partial_success.rejected_log_records} log records: "
                                       f"{_short(answer.partial_success.error_message)}")

    def _post(self, path: str, body: bytes, answer: Any) -> Any:
        url = self.endpoint + path
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={**self.headers, "Content-Type": "application/x-protobuf"})
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                reply = response.read(1 << 20)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"OTLP receiver at {url} answered {exc.code} {_short(exc.reason)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise RuntimeError(f"cannot reach the OTLP receiver at {url}: {_short(reason)}") from None
        try:
            answer.ParseFromString(reply)
        except Exception:  # a 2xx without a protobuf body (some receivers answer JSON or nothing): accepted
            return None
        return answer

    def close(self) -> None:
        self.opener.close()


def _short(reason: Any) -> str:
    return " ".join(str(reason).split())[:120]


def open_sink(options: Mapping[str, Any]) -> OtlpSink:
    return OtlpSink(options)


@hookimpl
def halton_register_sync_targets(register: Callable[[SyncTarget], None], config: object) -> None:
    register(SyncTarget(id="sync.otlp", title="OpenTelemetry (OTLP/HTTP)", open=open_sink))
