"""`halton-meter report`: what was spent, on what, in a window — one model for the table, JSON and CSV.

Every number comes from `store.aggregate.collect` (rollups plus the raw rows at the window's edges), so
the report equals an aggregation of the rows themselves. Groups are the leaves of the `--by` nesting;
their sums add up to the totals by construction (the totals are their sum).

JSON schema (`schema_version` 2) and CSV columns are documented in docs/reference/reports.md.

Why this module is long: one model feeds the table, the JSON and the CSV (grouping, totals, the
previous-window comparison, gaps and notes); kept together, the three outputs cannot disagree.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fnmatch
import io
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from halton_meter.attribution.keys import key_label
from halton_meter.errors import UsageError
from halton_meter.store.aggregate import (
    NONE_VALUE,
    Cells,
    Filters,
    collect,
    count_refused,
    percentile_95,
    snapshot,
)
from halton_meter.store.daycache import DayCache
from halton_meter.store.gaps import GapSummary, summarize
from halton_meter.store.imports import count_imported
from halton_meter.store.rollup import SUMS
from halton_meter.store.schema import initialised
from halton_meter.timewindow import Window, local
from halton_meter.types import BILLING_SUBSCRIPTION, nanos_to_usd

SCHEMA_VERSION = 2
"""2: `gaps` became an object (connections, exact calls, at-least and estimated calls, bytes) instead of a
count of calls — a pass-through tunnel is a connection, not a call."""
GROUPINGS = ("project", "model", "provider", "client", "branch", "key", "day", "hour")
TIME_GROUPINGS = ("day", "hour")
DEFAULT_BY = ("project",)
_INDEX = {name: i for i, name in enumerate(SUMS)}
_EPOCH_DAY = datetime.date(1970, 1, 1)


def parse_by(values: Sequence[str]) -> tuple[str, ...]:
    """`--by project --by model` or `--by project,model` → ('project', 'model'); repeats are dropped."""
    chosen: list[str] = []
    for value in values:
        for name in (part.strip().lower() for part in value.split(",")):
            if not name:
                continue
            if name not in GROUPINGS:
                raise UsageError(f"--by {name!r} is not a grouping; use {', '.join(GROUPINGS[:-1])} or {GROUPINGS[-1]} "
                                 "(several nest: --by project,model)")
            if name not in chosen:
                chosen.append(name)
    return tuple(chosen)


def key_filter(values: Sequence[str], names: Mapping[str, str]) -> tuple[str, ...]:
    """`--key` values (a fingerprint or its first characters, or a name from [keys]) → fingerprint prefixes."""
    prefixes: list[str] = []
    for value in values:
        if value == NONE_VALUE:
            prefixes.append(value)
            continue
        named = [fp for fp, name in names.items() if name == value]
        if named:
            prefixes += named
        elif all(ch in "0123456789abcdef" for ch in value.lower()) and 4 <= len(value) <= 16:
            prefixes.append(value.lower())
        else:
            raise UsageError(f"--key {value!r} is neither a key fingerprint (4-16 hex characters, as `halton-meter "
                             "report --by key` shows) nor a name from [keys] in config.toml")
    return tuple(prefixes)


# ---- metrics ---------------------------------------------------------------------------------------------


@dataclass
class Metrics:
    """Sums for one group (or the totals). Cost fields are nano-dollars; `subscription_*` is traffic covered
    by a flat plan, priced at list price and never added to `cost_nanos`."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nanos: int = 0
    cache_savings_nanos: int = 0
    unpriced: int = 0
    subscription_calls: int = 0
    subscription_cost_nanos: int = 0
    subscription_cache_savings_nanos: int = 0
    subscription_unpriced: int = 0
    estimated: int = 0
    incomplete: int = 0
    errors: int = 0
    latency_us: int = 0
    latency_n: int = 0
    ttft_us: int = 0
    ttft_n: int = 0
    latency_hist: Counter[int] = field(default_factory=Counter)
    ttft_hist: Counter[int] = field(default_factory=Counter)

    def add_cell(self, billing: str, sums: Sequence[int]) -> None:
        for name in ("calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                     "cache_write_1h_tokens", "reasoning_tokens", "estimated", "incomplete", "errors", "latency_us",
                     "latency_n", "ttft_us", "ttft_n"):
            setattr(self, name, getattr(self, name) + sums[_INDEX[name]])
        cost, savings, unpriced = sums[_INDEX["cost_nanos"]], sums[_INDEX["cache_savings_nanos"]], sums[_INDEX["unpriced"]]
        if billing == BILLING_SUBSCRIPTION:
            self.subscription_calls += sums[_INDEX["calls"]]
            self.subscription_cost_nanos += cost
            self.subscription_cache_savings_nanos += savings
            self.subscription_unpriced += unpriced
        else:
            self.cost_nanos += cost
            self.cache_savings_nanos += savings
            self.unpriced += unpriced

    def merge(self, other: Metrics) -> None:
        for f in fields(self):
            mine = getattr(self, f.name)
            if isinstance(mine, Counter):
                mine.update(getattr(other, f.name))
            else:
                setattr(self, f.name, mine + getattr(other, f.name))

    @property
    def sort_cost(self) -> int:
        return self.cost_nanos + self.subscription_cost_nanos

    def to_json(self, floors: Sequence[float]) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": nanos_to_usd(self.cost_nanos),
            "cost_complete": self.unpriced == 0,
            "cache_savings_usd": nanos_to_usd(self.cache_savings_nanos),
            "unpriced_calls": self.unpriced,
            "subscription_calls": self.subscription_calls,
            "subscription_list_price_usd": nanos_to_usd(self.subscription_cost_nanos),
            "subscription_cache_savings_usd": nanos_to_usd(self.subscription_cache_savings_nanos),
            "subscription_unpriced_calls": self.subscription_unpriced,
            "estimated_calls": self.estimated,
            "incomplete_calls": self.incomplete,
            "error_calls": self.errors,
            "avg_latency_ms": _avg(self.latency_us, self.latency_n),
            "p95_latency_ms": _round(percentile_95(self.latency_hist, floors)),
            "avg_ttft_ms": _avg(self.ttft_us, self.ttft_n),
            "p95_ttft_ms": _round(percentile_95(self.ttft_hist, floors)),
        }


CHANGE_KEYS = ("calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd",
               "cache_savings_usd", "subscription_calls", "subscription_list_price_usd", "avg_latency_ms",
               "p95_latency_ms", "avg_ttft_ms", "p95_ttft_ms")


def _avg(total_us: int, n: int) -> float | None:
    return None if not n else round(total_us / n / 1000, 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


METRIC_KEYS = tuple(Metrics().to_json([0.0]).keys())
_MONEY_KEYS = frozenset(k for k in METRIC_KEYS if k.endswith("_usd"))


def _usd_nanos(value: str) -> int:
    from decimal import Decimal

    return int(Decimal(value).scaleb(9))


def change(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Absolute and relative change per metric: {"abs": …, "pct": …}; pct is null when the previous was 0."""
    result: dict[str, dict[str, Any]] = {}
    for key in CHANGE_KEYS:
        now, before = current[key], previous[key]
        if now is None or before is None:
            result[key] = {"abs": None, "pct": None}
            continue
        if key in _MONEY_KEYS:
            a, b = _usd_nanos(now), _usd_nanos(before)
            result[key] = {"abs": nanos_to_usd(a - b), "pct": None if b == 0 else round((a - b) * 100 / b, 1)}
        else:
            diff = now - before
            result[key] = {"abs": round(diff, 1) if isinstance(diff, float) else diff,
                           "pct": None if before == 0 else round(diff * 100 / before, 1)}
    return result


# ---- building --------------------------------------------------------------------------------------------


@dataclass
class Node:
    key: Any
    metrics: Metrics = field(default_factory=Metrics)
    previous: Metrics | None = None
    children: dict[Any, Node] = field(default_factory=dict)


@dataclass
class Report:
    window: Window
    by: tuple[str, ...]
    filters: Filters
    totals: Node
    floors: list[float]
    daily: list[tuple[datetime.date, Metrics]]
    gaps: GapSummary
    key_names: Mapping[str, str]
    previous_window: Window | None = None
    previous_gaps: GapSummary = field(default_factory=GapSummary)
    imported: dict[str, int] = field(default_factory=dict)
    """Calls in the window read from a tool's logs by `halton-meter import`, per tool."""
    refused: int = 0
    """Calls in the window a budget refused (never sent; rows with `error_type = 'budget_exceeded'`)."""

    # ---- labels ----

    def value(self, dim: str, key: Any) -> Any:
        """A group's key as JSON shows it (null when missing)."""
        if dim == "day":
            return key.isoformat()
        if dim == "hour":
            return local(_utc(key)).isoformat()
        return key or None

    def label(self, dim: str, key: Any) -> str:
        """A group's key as a person reads it."""
        if dim == "day":
            return key.strftime("%Y-%m-%d %a")
        if dim == "hour":
            return local(_utc(key)).strftime("%Y-%m-%d %H:00 %Z")
        if not key:
            return "(unknown)" if dim == "model" else NONE_VALUE
        if dim == "key":
            return key_label(key, self.key_names) or key
        return str(key)

    # ---- shapes ----

    def leaves(self) -> list[tuple[tuple[Any, ...], Node]]:
        found: list[tuple[tuple[Any, ...], Node]] = []

        def walk(node: Node, path: tuple[Any, ...]) -> None:
            if not node.children:
                if path:
                    found.append((path, node))
                return
            for child in _ordered(node, len(path), self.by):
                walk(child, (*path, child.key))

        walk(self.totals, ())
        return found

    def compared(self) -> bool:
        return self.previous_window is not None

    def groups_compared(self) -> bool:
        """Per-group comparison needs groups that exist in both windows: not days or hours."""
        return self.compared() and not any(d in TIME_GROUPINGS for d in self.by)

    def _metrics_json(self, node: Node, with_previous: bool) -> dict[str, Any]:
        data = node.metrics.to_json(self.floors)
        if with_previous and node.previous is not None:
            before = node.previous.to_json(self.floors)
            data["previous"] = before
            data["change"] = change(data, before)
        return data

    def notes(self) -> list[dict[str, Any]]:
        """What the numbers leave out or may get wrong: [{"kind", "calls", "text"}], kinds `unpriced`,
        `subscription`, `estimated`, `incomplete`, `errors`, `budget`, `gaps`, `imported`."""
        t = self.totals.metrics
        found = []
        if t.unpriced:
            found.append(("unpriced", t.unpriced, f"{_n(t.unpriced, 'charged call')} unpriced (unknown model or "
                                                  "no usage): cost unknown"))
        if t.subscription_calls:
            extra = f" ({t.subscription_unpriced:,} unpriced)" if t.subscription_unpriced else ""
            found.append(("subscription", t.subscription_calls,
                          f"{_n(t.subscription_calls, 'call')} covered by a subscription{extra}: "
                          f"{_money_text(t.subscription_cost_nanos)} at list price, not in the cost"))
        if t.estimated:
            found.append(("estimated", t.estimated,
                          f"{_n(t.estimated, 'call')} with estimated tokens (the provider reported no usage)"))
        if t.incomplete:
            found.append(("incomplete", t.incomplete,
                          f"{_n(t.incomplete, 'call')} incomplete (stream cut, error or crash): numbers may be short"))
        if t.errors:
            found.append(("errors", t.errors, f"{_n(t.errors, 'call')} ended in an error (HTTP 4xx/5xx or network)"))
        if self.refused:
            found.append(("budget", self.refused, f"{_n(self.refused, 'call')} refused by a budget (not sent; "
                                                  "`halton-meter budgets` shows them)"))
        if not self.gaps.empty:
            found.append(("gaps", self.gaps.calls_at_least,
                          f"{self.gaps.describe()} went unmetered during outages: not in these numbers"))
        if self.imported:
            tools = " and ".join(f"{tool or 'unknown'} ({n:,})" if len(self.imported) > 1 else tool or "unknown"
                                 for tool, n in self.imported.items())
            count = sum(self.imported.values())
            found.append(("imported", count, f"{_n(count, 'call')} imported from {tools} logs (history before "
                                             "the meter): no latency, endpoint or key recorded"))
        return [{"kind": kind, "calls": calls, "text": text} for kind, calls, text in found]

    def to_json(self) -> dict[str, Any]:
        groups = []
        for path, node in self.leaves():
            entry: dict[str, Any] = {}
            for dim, key in zip(self.by, path, strict=True):
                entry[dim] = self.value(dim, key)
                if dim == "key":
                    entry["key_label"] = key_label(key, self.key_names) if key else None
            entry.update(self._metrics_json(node, self.groups_compared()))
            groups.append(entry)
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "window": self.window.label,
            "since": self.window.since_iso,
            "until": self.window.until_iso,
            "since_local": local(self.window.since).isoformat(),
            "until_local": local(self.window.until).isoformat(),
            "by": list(self.by),
            "filters": self.filters.to_json(),
            "totals": self._metrics_json(self.totals, self.compared()),
            "groups": groups,
            "daily": [{"date": day.isoformat(), "calls": m.calls, "cost_usd": nanos_to_usd(m.cost_nanos),
                       "subscription_list_price_usd": nanos_to_usd(m.subscription_cost_nanos)}
                      for day, m in self.daily],
            "gaps": self.gaps.to_json(),
            "notes": self.notes(),
        }
        if self.previous_window is not None:
            data["previous"] = {"window": self.previous_window.label, "since": self.previous_window.since_iso,
                                "until": self.previous_window.until_iso, "gaps": self.previous_gaps.to_json()}
        return data

    def csv_header(self) -> list[str]:
        header: list[str] = []
        for dim in self.by:
            header += [dim, "key_label"] if dim == "key" else [dim]
        header += list(METRIC_KEYS)
        if self.compared():
            for key in CHANGE_KEYS:
                header += [f"{key}_previous", f"{key}_change", f"{key}_change_pct"]
        return header

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.csv_header())
        for group in self.to_json()["groups"]:
            row = []
            for dim in self.by:
                row.append(group[dim])
                if dim == "key":
                    row.append(group["key_label"])
            row += [group[k] for k in METRIC_KEYS]
            if self.compared():
                for key in CHANGE_KEYS:
                    if "previous" in group:
                        row += [group["previous"][key], group["change"][key]["abs"], group["change"][key]["pct"]]
                    else:
                        row += [None, None, None]
            writer.writerow(["" if v is None else str(v).lower() if isinstance(v, bool) else v for v in row])
        return out.getvalue()

    def view(self) -> dict[str, Any]:
        """What the terminal table shows: the JSON document, plus rows in display order (subtotals for
        each level of a nested grouping, then their children, indented)."""
        rows: list[dict[str, Any]] = []
        nested = len(self.by) > 1

        def walk(node: Node, depth: int) -> None:
            for child in _ordered(node, depth, self.by):
                leaf = not child.children
                rows.append({"depth": depth, "label": self.label(self.by[depth], child.key), "subtotal": not leaf,
                             **self._metrics_json(child, self.groups_compared())})
                if not leaf:
                    walk(child, depth + 1)

        if self.by:
            walk(self.totals, 0)
        return {**self.to_json(), "rows": rows, "nested": nested, "by_label": " / ".join(self.by)}


def _ordered(node: Node, depth: int, by: Sequence[str]) -> list[Node]:
    children = list(node.children.values())
    if by[depth] in TIME_GROUPINGS:
        return sorted(children, key=lambda n: n.key)
    return sorted(children, key=lambda n: (-n.metrics.sort_cost, -n.metrics.calls, n.key == "", str(n.key)))


def _utc(epoch: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _money_text(nanos: int) -> str:
    """`$12.34`; amounts under a cent keep their digits (`$0.000123`)."""
    usd = nanos_to_usd(nanos) or "0"
    whole, _, frac = usd.partition(".")
    frac = frac[:6] if abs(nanos) >= 10_000 else frac
    return f"${whole}.{frac.rstrip('0').ljust(2, '0')}"


def _tree(cells: Cells, by: Sequence[str], period: str | None) -> Node:
    root = Node(None)
    plain = [d for d in by if d not in TIME_GROUPINGS]
    width = len(plain)

    def path(values: Sequence[Any], p: int) -> tuple[Any, ...]:
        named = dict(zip(plain, values, strict=True))
        keys: list[object] = []
        for dim in by:
            if dim == "day":
                keys.append(_EPOCH_DAY + datetime.timedelta(days=p) if period == "day" else local(_utc(p)).date())
            elif dim == "hour":
                keys.append(p)
            else:
                keys.append(named[dim])
        return tuple(keys)

    for key, sums in cells.sums.items():
        for target in _chain(root, path(key[:width], key[width + 1])):
            target.metrics.add_cell(key[width], sums)
    for key, (latency, ttft) in cells.hists.items():
        for target in _chain(root, path(key[:width], key[width])):
            target.metrics.latency_hist.update(latency)
            target.metrics.ttft_hist.update(ttft)
    return root


def _chain(root: Node, keys: tuple[Any, ...]) -> list[Node]:
    """The root and every node down to `keys` (created as needed): each one's sums include the leaf's."""
    chain, node = [root], root
    for key in keys:
        node = node.children.setdefault(key, Node(key))
        chain.append(node)
    return chain


def _attach_previous(current: Node, previous: Node) -> None:
    current.previous = previous.metrics
    for key, before in previous.children.items():
        if key not in current.children:
            current.children[key] = Node(key)
            _zero_fill(current.children[key], before)
        _attach_previous(current.children[key], before)
    for key, node in current.children.items():
        if key not in previous.children:
            _attach_previous(node, Node(key))


def _zero_fill(node: Node, like: Node) -> None:
    for key, child in like.children.items():
        node.children[key] = Node(key)
        _zero_fill(node.children[key], child)


def _period(by: Sequence[str]) -> str | None:
    return "hour" if "hour" in by else "day" if "day" in by else None


def count_gaps(conn: sqlite3.Connection, window: Window, filters: Filters, spool: Path | None = None) -> GapSummary:
    """What passed through unmetered in the window, from the gaps table and the gap log lines not ingested
    yet (`spool`), for the project and client filters when given (gaps know nothing of models, branches or
    keys)."""
    where: list[str] = []
    params: list[Any] = []
    for name in ("project", "client"):
        values = getattr(filters, name)
        if values:
            options = []
            for value in values:
                value = "" if value == NONE_VALUE else value
                options.append(f"ifnull({name}, '') {'GLOB' if any(c in value for c in '*?[') else '='} ?")
                params.append(value)
            where.append("(" + " OR ".join(options) + ")")

    def keep(gap: dict[str, Any]) -> bool:
        for name in ("project", "client"):
            values = getattr(filters, name)
            if values:
                have = gap.get(name) or ""
                if not any(fnmatch.fnmatchcase(have, "" if v == NONE_VALUE else v) for v in values):
                    return False
        return True

    return summarize(conn, spool, window.since_iso, window.until_iso, " AND ".join(where), tuple(params), keep)


def build(
    db: Path | None,
    window: Window,
    *,
    by: Sequence[str] = DEFAULT_BY,
    filters: Filters | None = None,
    vs_previous: bool = False,
    key_names: Mapping[str, str] | None = None,
    use_rollup: bool = True,
    conn: sqlite3.Connection | None = None,
    latency: bool = True,
    cache: DayCache | None = None,
) -> Report:
    """The report for `window` from the database at `db`; None, or no file yet, gives an empty report. With
    `conn` (a read-only connection in a read transaction on `db`), it is read there instead: several reports
    from one snapshot. `latency=False` leaves out the latency and TTFT histograms (the p95 fields are then
    null): most of a long window's cost, for views that show no percentile. `cache` keeps closed days' sums
    between reports (the dashboard's; see store/daycache.py)."""
    by = tuple(by)
    filters = filters or Filters()
    period = _period(by)
    plain = tuple(d for d in by if d not in TIME_GROUPINGS)
    # Days and hours differ between two windows: with them, only the totals are compared.
    time_grouped = period is not None
    prev_by = () if time_grouped else by
    days = window.local_days()
    previous_window = window.previous() if vs_previous else None
    cells, day_cells, prev_cells = Cells(), Cells(), Cells()
    gaps, prev_gaps = GapSummary(), GapSummary()
    imported: dict[str, int] = {}
    refused = 0
    if conn is not None or (db is not None and initialised(db)):
        with contextlib.nullcontext(conn) if conn is not None else snapshot(db) as conn:  # type: ignore[arg-type]
            spool = db.parent / "spool" if db is not None else None
            cells = collect(conn, window.since, window.until, group=plain, period=period, filters=filters,
                            use_rollup=use_rollup, hist=latency, cache=cache)
            day_cells = collect(conn, window.since, window.until, period="day", filters=filters, hist=False,
                                use_rollup=use_rollup, only=("calls", "cost_nanos"), cache=cache)
            gaps = count_gaps(conn, window, filters, spool)
            imported = count_imported(conn, window.since_iso, window.until_iso, filters)
            refused = count_refused(conn, window.since_iso, window.until_iso, filters)
            if previous_window is not None:
                prev_cells = collect(conn, previous_window.since, previous_window.until, group=prev_by,
                                     filters=filters, use_rollup=use_rollup, hist=latency, cache=cache)
                prev_gaps = count_gaps(conn, previous_window, filters, spool)
    totals = _tree(cells, by, period)
    if previous_window is not None:
        before = _tree(prev_cells, prev_by, None)
        if time_grouped:
            totals.previous = before.metrics
        else:
            _attach_previous(totals, before)
    per_day: dict[int, Metrics] = {}
    for key, sums in day_cells.sums.items():
        per_day.setdefault(key[1], Metrics()).add_cell(key[0], sums)
    daily = [(day, per_day.get((day - _EPOCH_DAY).days, Metrics())) for day in days]
    return Report(window, by, filters, totals, cells.floors, daily, gaps, key_names or {}, previous_window, prev_gaps,
                  imported, refused)

