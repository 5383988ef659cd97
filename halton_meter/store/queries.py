"""Read side: what `calls`, `projects` and the API show (`report` reads through `store.aggregate`).
Read-only connections; never blocks the writer."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from halton_meter.errors import UsageError
from halton_meter.store.schema import calls, check_readable, make_engine
from halton_meter.types import BILLING_SUBSCRIPTION, CallRecord, nanos_to_usd

_RECORD_COLUMNS = [c for c in calls.columns if c.name != "recorded_at"]
IN_PROGRESS = "in_progress"
STATUSES = ("ok", "error", "incomplete", "in-progress")
STATUS_HELP = "ok, error, incomplete, in-progress, an HTTP status (429) or a class (5xx)"


def open_reader(db_path: Path) -> Engine:
    """A read engine; DatabaseError (exit 3) when the file is missing, corrupt or too new."""
    check_readable(db_path)
    return make_engine(db_path, read_only=True)


def _record(row: sa.Row[Any]) -> CallRecord:
    return CallRecord(**{c.name: row._mapping[c.name] for c in _RECORD_COLUMNS})


def parse_status(values: Sequence[str]) -> tuple[str, ...]:
    """`--status` values, checked: ok, error, incomplete, in-progress, 429, 5xx."""
    for value in values:
        if value.lower() not in STATUSES and not re.fullmatch(r"[1-5](\d\d|xx)", value.lower()):
            raise UsageError(f"--status {value!r} is not a status; use {STATUS_HELP}")
    return tuple(v.lower() for v in values)


@dataclass(frozen=True)
class CallFilters:
    """What `calls` shows. Statuses are exclusive, checked in this order: `in-progress` (the call has not
    ended), `error` (an error type: HTTP 4xx/5xx, a network error, an error event), `incomplete` (ended
    without the provider's final accounting), `ok`. An HTTP status (`429`) or class (`5xx`) matches the
    response status."""

    projects: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        c = calls.c
        model = sa.func.coalesce(c.model, c.model_requested, "")
        clauses: list[sa.ColumnElement[bool]] = []
        for column, values in ((c.project, self.projects), (model, self.models), (c.provider, self.providers),
                               (sa.func.ifnull(c.client, ""), self.clients)):
            if values:
                clauses.append(sa.or_(*(_match(column, v) for v in values)))
        if self.since is not None:
            clauses.append(c.started_at >= self.since)
        if self.until is not None:
            clauses.append(c.started_at < self.until)
        if self.statuses:
            clauses.append(sa.or_(*(_status(s) for s in self.statuses)))
        return clauses


def _match(column: Any, value: str) -> sa.ColumnElement[bool]:
    value = "" if value == "(none)" else value
    if any(ch in value for ch in "*?["):
        return column.op("GLOB")(value)
    return column == value


def _status(status: str) -> sa.ColumnElement[bool]:
    c = calls.c
    in_progress = c.incomplete_reason.is_not_distinct_from(IN_PROGRESS)
    ended = c.incomplete_reason.is_distinct_from(IN_PROGRESS)
    if status == "in-progress":
        return in_progress
    if status == "error":
        return sa.and_(ended, c.error_type.is_not(None))
    if status == "incomplete":
        return sa.and_(ended, c.error_type.is_(None), sa.not_(c.complete))
    if status == "ok":
        return sa.and_(ended, c.error_type.is_(None), c.complete)
    if status.endswith("xx"):
        low = int(status[0]) * 100
        return sa.and_(c.status >= low, c.status < low + 100)
    return c.status == int(status)


def list_calls(engine: Engine, limit: int | None = None, filters: CallFilters | None = None,
               up_to_rowid: int | None = None) -> list[CallRecord]:
    """The most recent `limit` calls (all when None) that pass `filters`, oldest first."""
    query = sa.select(*_RECORD_COLUMNS).where(*(filters.where() if filters else ()))
    if up_to_rowid is not None:
        query = query.where(sa.literal_column("calls.rowid") <= up_to_rowid)
    query = query.order_by(calls.c.started_at.desc(), calls.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [_record(r) for r in reversed(rows)]


# ---- calls --follow -------------------------------------------------------------------------------------


@dataclass
class Tail:
    """Where `calls --follow` is: the last row seen, and rows seen while still in progress. A row is shown once,
    when it ends (its final version replaces the provisional one in place, so it keeps its rowid)."""

    last_rowid: int = 0
    pending: set[int] = field(default_factory=set)


def tail_start(engine: Engine, lookback: int = 100_000) -> Tail:
    """Start following after the newest row; calls in flight now (among the last `lookback` rows) are shown
    when they end."""
    with engine.connect() as conn:
        last = conn.execute(sa.select(sa.func.max(sa.literal_column("rowid"))).select_from(calls)).scalar() or 0
        pending: Sequence[Any] = conn.execute(sa.select(sa.literal_column("rowid")).select_from(calls).where(
            sa.literal_column("rowid") > last - lookback, calls.c.incomplete_reason == IN_PROGRESS)).scalars().all()
    return Tail(int(last), set(pending))


def tail_poll(engine: Engine, tail: Tail, filters: CallFilters | None = None) -> list[CallRecord]:
    """Calls that ended since the last poll (new rows, and rows that were in progress), oldest first."""
    rowid: sa.ColumnElement[Any] = sa.literal_column("calls.rowid")
    columns = [rowid.label("row_id"), *_RECORD_COLUMNS]
    where = filters.where() if filters else []
    ended = calls.c.incomplete_reason.is_distinct_from(IN_PROGRESS)
    done: list[int] = []
    with engine.connect() as conn:
        for row_id, reason in conn.execute(sa.select(rowid, calls.c.incomplete_reason).where(rowid > tail.last_rowid)):
            tail.last_rowid = max(tail.last_rowid, row_id)
            (tail.pending.add if reason == IN_PROGRESS else done.append)(row_id)
        if tail.pending:
            ids = sorted(tail.pending)
            still = set(conn.execute(sa.select(rowid).where(rowid.in_(ids), sa.not_(ended))).scalars())
            done += [i for i in ids if i not in still]
            tail.pending = still
        rows = conn.execute(sa.select(*columns).where(rowid.in_(done), *where)).all() if done else []
    return [_record(r) for r in sorted(rows, key=lambda r: (r.started_at, r.row_id))]


# ---- projects ---------------------------------------------------------------------------------------------


@dataclass
class ProjectSummary:
    project: str
    calls: int = 0
    cost_nanos: int = 0
    unpriced: int = 0
    subscription_calls: int = 0
    subscription_cost_nanos: int = 0
    first_seen: str | None = None
    last_seen: str | None = None
    sources: Counter[str] = field(default_factory=Counter)
    clients: Counter[str] = field(default_factory=Counter)
    gaps: int = 0

    def to_json(self) -> dict[str, Any]:
        def shares(counter: Counter[str]) -> list[dict[str, Any]]:
            return [{"name": name, "calls": n} for name, n in counter.most_common()]

        return {"project": self.project, "calls": self.calls, "cost_usd": nanos_to_usd(self.cost_nanos),
                "unpriced_calls": self.unpriced, "subscription_calls": self.subscription_calls,
                "subscription_list_price_usd": nanos_to_usd(self.subscription_cost_nanos),
                "first_seen": self.first_seen, "last_seen": self.last_seen, "sources": shares(self.sources),
                "clients": shares(self.clients), "gaps": self.gaps}


def project_summaries(engine: Engine, since: str, until: str) -> list[ProjectSummary]:
    """Every project with calls (or gaps) in [since, until): totals, when it was last seen, and which
    attribution sources and tools its calls came from. Most expensive first."""
    c = calls.c
    subscription = c.billing == BILLING_SUBSCRIPTION
    query = (
        sa.select(
            c.project, c.project_source, sa.func.ifnull(c.client, ""), sa.func.count(),
            sa.func.sum(sa.case((subscription, 0), else_=sa.func.ifnull(c.cost_nanos, 0))),
            sa.func.sum(sa.case((sa.and_(sa.not_(subscription), c.billable, sa.not_(c.priced)), 1), else_=0)),
            sa.func.sum(sa.case((subscription, 1), else_=0)),
            sa.func.sum(sa.case((subscription, sa.func.ifnull(c.cost_nanos, 0)), else_=0)),
            sa.func.min(c.started_at), sa.func.max(c.started_at),
        )
        .where(c.started_at >= since, c.started_at < until, c.endpoint_kind != "self_test",
               c.incomplete_reason.is_distinct_from(IN_PROGRESS))
        .group_by(c.project, c.project_source, sa.func.ifnull(c.client, ""))
    )
    found: dict[str, ProjectSummary] = {}
    with engine.connect() as conn:
        for project, source, client, n, cost, unpriced, sub_n, sub_cost, first, last in conn.execute(query):
            summary = found.setdefault(project, ProjectSummary(project))
            summary.calls += n
            summary.cost_nanos += cost or 0
            summary.unpriced += unpriced or 0
            summary.subscription_calls += sub_n or 0
            summary.subscription_cost_nanos += sub_cost or 0
            summary.first_seen = min(filter(None, (summary.first_seen, first)), default=None)
            summary.last_seen = max(filter(None, (summary.last_seen, last)), default=None)
            summary.sources[source] += n
            summary.clients[client or "(none)"] += n
        gap_rows = conn.exec_driver_sql(
            "SELECT ifnull(project, 'unattributed'), count(*), max(at) FROM gaps WHERE at >= ? AND at < ? "
            "GROUP BY 1", (since, until)).all()
    for project, n, last in gap_rows:
        summary = found.setdefault(project, ProjectSummary(project))
        summary.gaps = n
        if summary.last_seen is None:
            summary.last_seen = last
    return sorted(found.values(), key=lambda s: (-(s.cost_nanos + s.subscription_cost_nanos), -s.calls, s.project))
