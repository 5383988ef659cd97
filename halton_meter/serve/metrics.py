"""`GET /metrics`: the meter's all-time totals in the Prometheus text format (docs/metrics.md).

Every figure is read, exactly, from the rollups the way `report` reads them (`store.aggregate.collect` over
all history, in one read-only snapshot): calls, tokens by type, cost (per billing: a subscription's
list-price figure is never mixed into real spend), errors, unpriced calls, the calls that went unmetered
(gaps), and latency and time-to-first-token histograms whose bucket edges are exact bin floors of the
rollup's histograms, so their counts are exact too.

Labels are `[api] metrics_labels` (default provider, model, project, client); at most
`[api] metrics_max_series` label combinations are shown: beyond that, the smallest by calls are added up
into one combination whose every label reads `other`. A fresh registry per scrape holds one collector;
nothing runs in the background. History before the last UTC midnight at least 6 hours ago can no longer
change without bumping the rollup generation (store/daycache.py): it is read once per process and kept while
the generation holds, so a scrape reads SQLite for the last day or so only.
"""

from __future__ import annotations

import datetime
import operator
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from halton_meter.config import Config, load_config
from halton_meter.errors import ConfigError
from halton_meter.paths import Paths
from halton_meter.store.aggregate import Cells, collect, has_rollup, snapshot
from halton_meter.store.daycache import STABLE_SECONDS, snapshot_identity
from halton_meter.store.gaps import GapSummary, pending
from halton_meter.store.rollup import SUMS
from halton_meter.store.schema import initialised
from halton_meter.timewindow import iso

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
"""Every label of the combination the smallest series are merged into, beyond `[api] metrics_max_series`."""
TOKEN_TYPES = (("input", "input_tokens"), ("output", "output_tokens"), ("cache_read", "cache_read_tokens"),
               ("cache_write", "cache_write_tokens"), ("reasoning", "reasoning_tokens"))
BUCKET_TARGETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Seconds; each histogram edge is the rollup bin floor nearest to one of these (published exactly)."""
GAP_LABELS = ("project", "client")
"""What a gap knows of its traffic: the other labels do not apply to it."""
_INDEX = {name: i for i, name in enumerate(SUMS)}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


# ---- configuration ------------------------------------------------------------------------------------


class _Settings:
    """config.toml as `/metrics` follows it: read again when the file changes (a `stat` per request), and an
    edit that does not validate keeps what was read before (the defaults when nothing valid ever was)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[Any, tuple[Any, Config]] = {}

    def get(self, paths: Paths) -> Config:
        try:
            st = os.stat(paths.config)
            stamp: Any = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        with self._lock:
            known = self._seen.get(paths.home)
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            config = load_config(paths)
        except ConfigError:
            config = known[1] if known is not None else Config(paths=paths)
        with self._lock:
            self._seen[paths.home] = (stamp, config)
        return config


settings = _Settings().get


# ---- reading ------------------------------------------------------------------------------------------


@dataclass
class Series:
    """One label combination: the rollup's sums per billing, and the latency and TTFT bins."""

    sums: dict[str, list[int]] = field(default_factory=dict)
    latency: Counter[int] = field(default_factory=Counter)
    ttft: Counter[int] = field(default_factory=Counter)

    def add_sums(self, billing: str, values: Sequence[int]) -> None:
        have = self.sums.get(billing)
        self.sums[billing] = list(values) if have is None else [a + b for a, b in zip(have, values, strict=True)]

    def merge(self, other: Series) -> None:
        for billing, values in other.sums.items():
            self.add_sums(billing, values)
        self.latency.update(other.latency)
        self.ttft.update(other.ttft)

    def total(self, name: str) -> int:
        return sum(values[_INDEX[name]] for values in self.sums.values())


@dataclass
class Reading:
    labels: tuple[str, ...]
    series: dict[tuple[str, ...], Series] = field(default_factory=dict)
    gap_labels: tuple[str, ...] = ()
    gaps: dict[tuple[str, ...], int] = field(default_factory=dict)
    """Calls that went unmetered (at least: a pass-through tunnel counts one) per gap label combination."""
    floors: list[float] = field(default_factory=list)
    merged: int = 0
    """Label combinations added up into the `other` one (calls and gaps together)."""


def read(paths: Paths, labels: Sequence[str], max_series: int,
         now: datetime.datetime | None = None) -> Reading:
    """All-time totals per label combination, from one snapshot of the database (empty before the first)."""
    labels = tuple(labels)
    reading = Reading(labels, gap_labels=tuple(name for name in labels if name in GAP_LABELS))
    now = now or datetime.datetime.now(datetime.UTC)
    db = paths.db
    parts: list[Cells] = []
    gaps: dict[tuple[str, ...], int] = {}
    if initialised(db):
        with snapshot(db) as conn:
            since = _first(conn)
            if since is not None and since <= now:
                cutoff = _cutoff(now)
                if since < cutoff:
                    parts.append(CLOSED.cells(conn, labels, since, cutoff))
                parts.append(collect(conn, max(since, cutoff), now, group=labels, hist=True))
            gaps = _gaps(conn, paths.spool, reading.gap_labels, iso(now))
    reading.floors = list(parts[0].floors if parts else Cells().floors)
    width = len(labels)
    found: dict[tuple[str, ...], Series] = {}
    for cells in parts:  # never changed here: the closed part is shared between scrapes
        for key, values in cells.sums.items():
            found.setdefault(_label_values(key[:width]), Series()).add_sums(key[width], values)
        for key, (latency, ttft) in cells.hists.items():
            series = found.setdefault(_label_values(key[:width]), Series())
            series.latency.update(latency)
            series.ttft.update(ttft)
    reading.series, merged = bound(found, max_series, lambda s: s.total("calls"), _joined, Series)
    reading.gaps, merged_gaps = bound(gaps, max_series, int, operator.add, int)
    reading.merged = merged + merged_gaps
    return reading


def _cutoff(now: datetime.datetime) -> datetime.datetime:
    """The UTC midnight at or before `now` − STABLE_SECONDS: everything before it is closed (store/daycache.py
    says why: the meter's own writes never reach back that far, every other write bumps the generation)."""
    day = (now - datetime.timedelta(seconds=STABLE_SECONDS)).date()
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)


class _ClosedPart:
    """The sums and histograms of history before the cutoff, read once and kept while the database is the same
    file at the same schema and rollup generation (as store/daycache.py keeps closed days), for the labels and
    window it was read with. One entry: a scrape's labels rarely change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[Any, Cells] | None = None

    def clear(self) -> None:
        with self._lock:
            self._entry = None

    def cells(self, conn: Any, labels: tuple[str, ...], since: datetime.datetime, cutoff: datetime.datetime) -> Cells:
        identity = snapshot_identity(conn)
        key = (identity, labels, since, cutoff)
        with self._lock:
            entry = self._entry
        if identity is not None and entry is not None and entry[0] == key:
            return entry[1]
        cells = collect(conn, since, cutoff, group=labels, hist=True)
        if identity is not None:
            with self._lock:
                self._entry = (key, cells)
        return cells


CLOSED = _ClosedPart()


def _label_values(values: Sequence[Any]) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in values)


def _first(conn: Any) -> datetime.datetime | None:
    """Where history starts: the first rollup bucket (so closed days come from the day cache rather than
    eleven years of empty days since 1970); 1970 for a database without rollups; None when nothing counts."""
    if not has_rollup(conn):
        return _EPOCH
    first = conn.execute("SELECT min(bucket) FROM rollup").fetchone()[0]
    return None if first is None else _EPOCH + datetime.timedelta(seconds=int(first))


def _gaps(conn: Any, spool: Any, names: Sequence[str], until: str) -> dict[tuple[str, ...], int]:
    """`calls_at_least` of the gaps (the table and the lines not ingested yet, each gap once) before `until`,
    per combination of `names` among project and client, as store/gaps.py's `summarize` counts them."""
    found: dict[tuple[str, ...], GapSummary] = {}
    seen: set[str] = set()

    def add(gap: dict[str, Any]) -> None:
        key = tuple(str(gap.get(name) or "") for name in names)
        found.setdefault(key, GapSummary()).add(gap.get("kind"), gap.get("connections"), gap.get("calls"),
                                                None, None, None, None, None)

    rows = conn.execute("SELECT id, kind, connections, calls, project, client FROM gaps WHERE at < ?", (until,))
    for gap_id, kind, connections, calls, project, client in rows:
        seen.add(gap_id)
        add({"kind": kind, "connections": connections, "calls": calls, "project": project, "client": client})
    for gap_id, gap in pending(spool).items():
        at = gap.get("at")
        if gap_id not in seen and at and at < until:
            add(gap)
    return {key: summary.calls_at_least for key, summary in found.items()}


def bound[T](found: dict[tuple[str, ...], T], limit: int, size: Callable[[T], int], add: Callable[[T, T], T],
          zero: Callable[[], T]) -> tuple[dict[tuple[str, ...], T], int]:
    """At most `limit` combinations: the largest `limit - 1` (by `size`, ties by label values) and one more,
    every label `other`, adding up the rest. Returns them and how many were merged."""
    if len(found) <= limit:
        return found, 0
    ranked = sorted(found, key=lambda key: (-size(found[key]), key))
    kept = {key: found[key] for key in ranked[:limit - 1]}
    rest = ranked[limit - 1:]
    other_key = (OTHER,) * len(ranked[0])
    total = kept.pop(other_key, None)  # a real combination spelled `other` everywhere joins the rest
    total = zero() if total is None else total
    for key in rest:
        total = add(total, found[key])
    kept[other_key] = total
    return kept, len(rest)


def _joined(into: Series, other: Series) -> Series:
    into.merge(other)
    return into


# ---- the exposition -------------------------------------------------------------------------------------


def bucket_edges(floors: Sequence[float]) -> list[tuple[int, str]]:
    """(bin index, `le` in seconds as the exact decimal of the bin's floor) for each of BUCKET_TARGETS: the
    bins below the index are the bucket's count."""
    edges: dict[int, str] = {}
    for target in BUCKET_TARGETS:
        ms = target * 1000
        index = min(range(1, len(floors)), key=lambda k: abs(floors[k] - ms))
        edges[index] = format(Decimal(repr(floors[index])).scaleb(-3).normalize(), "f")
    return sorted(edges.items())


def _buckets(bins: Counter[int], edges: Sequence[tuple[int, str]], total: int) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    ordered = sorted(bins.items())
    below, i = 0, 0
    for index, le in edges:
        while i < len(ordered) and ordered[i][0] < index:
            below += ordered[i][1]
            i += 1
        out.append((le, float(below)))
    out.append(("+Inf", float(total)))
    return out


class Collector:
    """Yields the metric families of one `Reading` (registered in a fresh registry per scrape)."""

    def __init__(self, reading: Reading) -> None:
        self.reading = reading

    def collect(self) -> Iterator[Metric]:
        r = self.reading
        labels = list(r.labels)
        calls = CounterMetricFamily("halton_meter_calls", "Metered calls (API and subscription billing).",
                                    labels=labels)
        tokens = CounterMetricFamily("halton_meter_tokens", "Tokens by type: input, output (reasoning included), "
                                     "cache_read, cache_write, reasoning (the part of output).",
                                     labels=[*labels, "type"])
        cost = CounterMetricFamily("halton_meter_cost_usd", "Cost in US dollars: billing=\"api\" is what you are "
                                   "charged, billing=\"subscription\" the list price of calls a flat plan covers; "
                                   "never add the two. Exact nano-dollars: `halton-meter report --json`.",
                                   labels=[*labels, "billing"])
        errors = CounterMetricFamily("halton_meter_errors", "Calls that ended in an error (HTTP 4xx/5xx or network).",
                                     labels=labels)
        unpriced = CounterMetricFamily("halton_meter_unpriced_calls", "Billable calls whose cost is unknown "
                                       "(no price for the model, or no usage reported): not in the cost.",
                                       labels=labels)
        latency = HistogramMetricFamily("halton_meter_latency_seconds", "Call latency, request to last byte.",
                                        labels=labels)
        ttft = HistogramMetricFamily("halton_meter_ttft_seconds", "Time to first token of streamed calls.",
                                     labels=labels)
        edges = bucket_edges(r.floors) if r.floors else []
        for key in sorted(r.series):
            series, values = r.series[key], list(key)
            calls.add_metric(values, series.total("calls"))
            for name, column in TOKEN_TYPES:
                tokens.add_metric([*values, name], series.total(column))
            for billing in sorted(series.sums):
                cost.add_metric([*values, billing], series.sums[billing][_INDEX["cost_nanos"]] / 1e9)
            errors.add_metric(values, series.total("errors"))
            unpriced.add_metric(values, series.total("unpriced"))
            latency.add_metric(values, _buckets(series.latency, edges, series.total("latency_n")),
                               series.total("latency_us") / 1e6)
            ttft.add_metric(values, _buckets(series.ttft, edges, series.total("ttft_n")),
                            series.total("ttft_us") / 1e6)
        gaps = CounterMetricFamily("halton_meter_gap_calls", "Calls that went unmetered (pass-through while the "
                                   "core was down, or not kept), at least: a tunnel counts one.",
                                   labels=list(r.gap_labels))
        for key in sorted(r.gaps):
            gaps.add_metric(list(key), r.gaps[key])
        merged = GaugeMetricFamily("halton_meter_metrics_merged_series", "Label combinations added up into the "
                                   "one labelled `other` ([api] metrics_max_series).")
        merged.add_metric([], r.merged)
        yield from (calls, tokens, cost, errors, unpriced, gaps, latency, ttft, merged)


def exposition(reading: Reading) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(reading))
    return generate_latest(registry)


def scrape(paths: Paths) -> bytes:
    """The `/metrics` body, with the labels and bound config.toml sets now (run on a worker thread)."""
    config = settings(paths)
    return exposition(read(paths, config.api_metrics_labels, config.api_metrics_max_series))
