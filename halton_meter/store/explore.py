"""The dashboard's call explorer: one page of calls, newest first, under filters, by keyset on (started_at, id)
(never OFFSET: page 1,000 costs what page 1 does), and the same selection streamed in batches for export.

Filters mean what they mean in `report` (`store.aggregate.Filters`: globs, `(none)`, key fingerprint prefixes,
the model as answered else as requested) and statuses what the explorer shows: `ok`, `error`, `incomplete`,
`in-progress` (exclusive, as `calls --status` checks them) and the flags `estimated`, `unpriced` and
`subscription`. Migration 11 gives each single filter an index ending in (started_at, id).

Rows come out as `CallRecord`s, converted exactly as SQLAlchemy reads them for `calls --json` (booleans,
the JSON `extra`), so a page, an export and `calls --json` show the same fields. Captured bodies live in
another table and are never read here.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from halton_meter.errors import UsageError
from halton_meter.store.aggregate import GROUP_DIMENSIONS, NONE_VALUE, Filters, _filter_sql
from halton_meter.store.rollup import DIMENSIONS
from halton_meter.types import CallRecord

STATUSES = ("ok", "error", "incomplete", "in-progress", "estimated", "unpriced", "subscription")
_STATUS_SQL = {
    "in-progress": "X.incomplete_reason IS 'in_progress'",
    "error": "(X.incomplete_reason IS NOT 'in_progress' AND X.error_type IS NOT NULL)",
    "incomplete": "(X.incomplete_reason IS NOT 'in_progress' AND X.error_type IS NULL AND X.complete = 0)",
    "ok": "(X.incomplete_reason IS NOT 'in_progress' AND X.error_type IS NULL AND X.complete != 0)",
    "estimated": "X.estimated != 0",
    "unpriced": "(X.billable != 0 AND X.priced = 0)",
    "subscription": "X.billing = 'subscription'",
}
# As migration 11 indexes them (the filters compare these very expressions).
_INDEXED = {**DIMENSIONS, "project": "X.project", "provider": "X.provider"}


def _columns() -> list[tuple[str, str]]:
    """(name, kind) of every `calls` column a CallRecord holds: kind is 'bool', 'json' or ''."""
    import sqlalchemy as sa

    from halton_meter.store.schema import calls

    out = []
    for column in calls.columns:
        if column.name == "recorded_at":
            continue
        kind = "bool" if isinstance(column.type, sa.Boolean) else "json" if isinstance(column.type, sa.JSON) else ""
        out.append((column.name, kind))
    return out


_COLUMNS: list[tuple[str, str]] = []


_POSITION: dict[str, int] = {}


def _select() -> str:
    if not _COLUMNS:
        _COLUMNS.extend(_columns())
        _POSITION.update({name: i for i, (name, _) in enumerate(_COLUMNS)})
    return ", ".join(f"X.{name}" for name, _ in _COLUMNS)


def record(row: Sequence[Any]) -> CallRecord:
    """A `calls` row (in `_select()` order) as the CallRecord SQLAlchemy would have built."""
    values: dict[str, Any] = {}
    for (name, kind), value in zip(_COLUMNS, row, strict=True):
        if value is not None and kind == "bool":
            value = bool(value)
        elif value is not None and kind == "json":
            value = json.loads(value)
        values[name] = value
    return CallRecord(**values)


def parse_statuses(values: Sequence[str]) -> tuple[str, ...]:
    found = []
    for value in values:
        for part in (p.strip().lower() for p in value.split(",")):
            if not part:
                continue
            if part not in STATUSES:
                raise UsageError(f"status {part!r} is not a status; use {', '.join(STATUSES)}")
            if part not in found:
                found.append(part)
    return tuple(found)


@dataclass(frozen=True)
class Selection:
    """Which calls the explorer shows: report-style filters, statuses (any of them), [since, until) as stored
    stamps, and `q`, an exact call id or provider request id."""

    filters: Filters = field(default_factory=Filters)
    statuses: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    q: str | None = None

    def where(self, conn: sqlite3.Connection | None = None) -> tuple[str, list[Any]]:
        """The WHERE clause on `calls AS X`. With `conn`, a glob or key prefix is first turned into the exact
        values it matches (a few index seeks), so the page is read in index order instead of sorted."""
        return self.split(conn)[0]

    def split(self, conn: sqlite3.Connection | None = None) -> list[tuple[str, list[Any]]]:
        """WHERE clauses whose union is the selection: one, or — when a filter matches several exact values
        (`--project a --project b`, `gpt-*`) — one per value, each read in index order, merged by `page`."""
        clauses: list[str] = []
        params: list[Any] = []
        fork: tuple[str, list[str]] | None = None
        for name, values in self.filters.items():
            exact = _expand(conn, name, values) if conn is not None else None
            expr = _INDEXED[GROUP_DIMENSIONS[name]]
            if exact is None:
                sql, args = _filter_sql(Filters(**{name: values}), lambda dim: _INDEXED[dim])
                clauses.append(sql)
                params += args
            elif len(exact) > 1 and fork is None and len(exact) <= _FORK_MAX:
                fork = (expr, exact)
            else:
                clauses.append(f"{expr} IN ({', '.join('?' * len(exact))})" if exact else "0")
                params += exact
        if self.statuses:
            clauses.append("(" + " OR ".join(_STATUS_SQL[s] for s in self.statuses) + ")")
        if self.since is not None:
            clauses.append("X.started_at >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append("X.started_at < ?")
            params.append(self.until)
        if self.q is not None:
            clauses.append("X.rowid IN (SELECT rowid FROM calls WHERE id = ? UNION "
                           "SELECT rowid FROM calls WHERE provider_request_id = ?)")
            params += [self.q, self.q]
        if fork is None:
            return [(" AND ".join(clauses) or "1", params)]
        expr, choices = fork
        return [(" AND ".join([*clauses, f"{expr} = ?"]), [*params, value]) for value in choices]


_EXPAND_MAX = 64
_FORK_MAX = 16
"""At most this many per-value queries for one page; more values are read with IN (and sorted)."""


def _expand(conn: sqlite3.Connection, name: str, values: tuple[str, ...]) -> list[str] | None:
    """The stored values a filter's globs and key prefixes match, found by skipping through the filter's
    index one distinct value at a time; None when a pattern is not a plain prefix, or matches too many."""
    expr = _INDEXED[GROUP_DIMENSIONS[name]]
    exact: list[str] = []
    for value in values:
        value = "" if value == NONE_VALUE else value
        pattern = value + "*" if name == "key" and value else value
        if not any(ch in pattern for ch in "*?["):
            exact.append(pattern)
            continue
        prefix = pattern[:-1]
        if not pattern.endswith("*") or any(ch in prefix for ch in "*?["):
            return None
        # `P*` matches exactly the values in [P, P with its last character + 1) (GLOB compares bytes, as the
        # index orders them): each next distinct value is one seek in the filter's index.
        bound, args = ("", ()) if not prefix else (f" AND {expr} < ?", (prefix[:-1] + chr(ord(prefix[-1]) + 1),))
        step = f"SELECT {expr} FROM calls AS X WHERE {expr} {{}} ?{bound} ORDER BY {expr} LIMIT 1"
        row = conn.execute(step.format(">="), (prefix, *args)).fetchone()
        while row is not None:
            found = row[0]
            if len(exact) >= _EXPAND_MAX or any(ch in found for ch in "*?["):
                return None
            exact.append(found)
            row = conn.execute(step.format(">"), (found, *args)).fetchone()
    return sorted(set(exact))


def encode_cursor(started_at: str, call_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([started_at, call_id]).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, str]:
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
            return value[0], value[1]
    except (ValueError, binascii.Error):
        pass
    raise UsageError("cursor is not one this API gave: pass next_cursor back unchanged")


def page(conn: sqlite3.Connection, selection: Selection, limit: int,
         after: tuple[str, str] | None = None, descending: bool = True) -> list[CallRecord]:
    """Up to `limit` calls, newest first (oldest first when not `descending`), strictly past `after`
    (started_at, id) in that order when given."""
    order = "DESC" if descending else "ASC"
    parts = selection.split(conn)
    rows: list[Any] = []
    for where, params in parts:
        if after is not None:
            where += f" AND (X.started_at, X.id) {'<' if descending else '>'} (?, ?)"
            params = [*params, *after]
        sql = (f"SELECT {_select()} FROM calls AS X WHERE {where} "
               f"ORDER BY X.started_at {order}, X.id {order} LIMIT ?")
        rows += conn.execute(sql, (*params, limit)).fetchall()
    if len(parts) > 1:  # the parts are disjoint (one value each): merge, keep the first `limit`
        at, ident = _POSITION["started_at"], _POSITION["id"]
        rows.sort(key=lambda r: (r[at], r[ident]), reverse=descending)
        rows = rows[:limit]
    return [record(row) for row in rows]


def batches(conn: sqlite3.Connection, selection: Selection, size: int = 1000,
            descending: bool = True) -> Iterator[list[CallRecord]]:
    """Every call the selection matches, `size` at a time: one short query per batch, so no read transaction
    is held between batches and never more than one batch is in memory."""
    after: tuple[str, str] | None = None
    while True:
        found = page(conn, selection, size, after, descending)
        if not found:
            return
        yield found
        if len(found) < size:
            return
        after = (found[-1].started_at, found[-1].id)


def by_id(conn: sqlite3.Connection, call_id: str) -> CallRecord | None:
    row = conn.execute(f"SELECT {_select()} FROM calls AS X WHERE X.id = ?", (call_id,)).fetchone()
    return record(row) if row is not None else None
