"""Plan limits read back from `plan_snapshots`: where each window stands now, how fast it fills, when it would
run out, which projects, tools and branches used it, and the past windows (`blocks`). `halton-meter plan`,
`halton-meter blocks`, the dashboard API and the `status` plan row read them; only stdlib and `sqlite3` are
imported, and every function takes an open connection (the caller chooses how to open it, read-only).

How a window is followed (docs/plans.md says the same for users):

* A *window instance* is one run of a window between two resets: consecutive snapshots of the same
  (provider, account, kind, window) whose `resets_at` agree within `SAME_RESET` (5 minutes: Codex sends a
  relative reset, so the reset computed from it jitters by seconds). A reset more than 5 minutes away from
  the previous snapshot's, or a utilization drop of more than `RESET_DROP` (0.05), starts a new instance.
* `current` takes the latest snapshot of each window. Once its `resets_at` has passed, the window shows
  utilization 0 and `reset: True` (the provider has not said anything since, but the window is over).
* Pace (`burn_per_hour`): the utilization change per hour between the first and the last snapshot of the
  current instance seen in the last `PACE_SPAN` (30 minutes) before `now`; None with fewer than two.
  `runs_out_at` projects the latest utilization from `now` to 1.0 at that pace; when the pace is not positive, or the
  projection falls after the reset, it is None and `outlasts_reset` is True.
* Who used it: utilization is integer *units* (millionths of the limit) so sums are exact. Walking the
  instance's snapshots in `seen_at` order, each snapshot's call is given what utilization rose above the
  highest level seen before it (a dip — rounding, another device's view — gives nothing, and climbing back
  to the earlier high gives nothing either). The shares therefore add up exactly to `peak − baseline`, the
  instance's change since the meter first saw it; what was used before that first snapshot is
  `baseline`, nobody's. A call's rise may include usage from other devices on the same account between
  two of this machine's calls: the shares cover this machine's calls only.
* API-equivalent cost: the sum of `cost_nanos` (subscription calls are priced at list price) of the calls
  whose responses carried the instance's snapshots, per group. Money stays integer nano-dollars.
* `blocks`: past instances of one window as the provider defines them, by reset time: a block is
  [resets_at − window length, resets_at), per account; its calls are that account's (`key_fingerprint`)
  calls started in the block.

Rate limits of API keys (kind `api`: requests, tokens, …) are reported separately (`WindowState.kind`):
latest value only, no pace and no shares (their windows reset every minute or so).

Why this module is long: `current` and `blocks` share one definition of a window instance (the reset
tolerance, the drop rule, window lengths), and the readers that ship it (CLI, dashboard API, status row)
must never disagree on it, so the two readers and their result types live together.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from halton_meter.clock import parse_stamp, utc_stamp

SAME_RESET = 300.0
"""Seconds two resets may differ by and still name the same window instance."""
RESET_DROP = 0.05
"""A utilization fall larger than this between two snapshots starts a new instance."""
PACE_SPAN = 1800.0
"""Seconds before `now` the pace is measured over."""
UNIT = 1_000_000
"""Utilization is counted in millionths of the limit (1 percentage point = 10,000 units)."""
MAX_WALK = 500_000
"""At most this many snapshots are read back for one window instance."""
GROUPS = ("project", "client", "branch")
NONE = "(none)"
PLAN_WINDOWS_ORDER = ("5h", "7d", "7d_opus", "7d_sonnet")
_LABEL = re.compile(r"^(\d+)([mhd])")


def _units(utilization: float | None) -> int | None:
    return None if utilization is None else round(utilization * UNIT)


def _epoch(text: str | None) -> float | None:
    moment = parse_stamp(text)
    return moment.timestamp() if moment is not None else None


def usd(nanos: int) -> str:
    """Integer nano-dollars as a decimal string with nine places (no float touches money)."""
    return f"{Decimal(nanos).scaleb(-9):.9f}"


def window_minutes(window: str, stated: int | None = None) -> int | None:
    """A window's length: as the snapshot stated it, else from its name (`5h`, `7d_opus`, `90m`)."""
    if stated:
        return stated
    match = _LABEL.match(window)
    if match is None:
        return None
    return int(match.group(1)) * {"m": 1, "h": 60, "d": 1440}[match.group(2)]


@dataclass
class Share:
    """One project's (tool's, branch's) part of a window instance."""

    name: str
    units: int = 0
    """Utilization it raised, in millionths of the limit."""
    cost_nanos: int = 0
    """API-equivalent cost of its calls in the instance."""
    calls: int = 0

    @property
    def points(self) -> float:
        """Percentage points of the window."""
        return self.units / (UNIT / 100)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "points": round(self.points, 4), "units": self.units,
                "cost_usd": usd(self.cost_nanos), "cost_nanos": self.cost_nanos, "calls": self.calls}


@dataclass
class WindowState:
    """Where one window of one account stands at `now`."""

    provider: str
    account: str
    kind: str
    """`plan` (a subscription window) or `api` (an API key's rate limit)."""
    window: str
    window_minutes: int | None
    utilization: float | None
    """0..1 (over 1 when over the limit); 0 once the window has reset; None when the provider sent none."""
    resets_at: str | None
    status: str | None
    """The provider's word (`allowed`, `allowed_warning`, `rejected`, `rejected:<type>`); None once reset."""
    seen_at: str
    """When the latest snapshot was seen."""
    reset: bool = False
    burn_per_hour: float | None = None
    """Utilization gained per hour (0..1 scale) over the last 30 minutes of this instance."""
    runs_out_at: str | None = None
    outlasts_reset: bool = False
    instance_start: str | None = None
    """When the meter first saw this instance."""
    baseline: float | None = None
    """Utilization at the instance's first snapshot (used before the meter saw it: nobody's share)."""
    peak: float | None = None
    snapshots: int = 0
    limit_value: int | None = None
    remaining: int | None = None
    claim: str | None = None
    fallback_percentage: float | None = None
    shares: dict[str, list[Share]] = field(default_factory=dict)
    """`project`, `client`, `branch` → shares, largest first."""
    used_units: int = 0
    """peak − baseline in units: what the shares add up to."""

    @property
    def api(self) -> bool:
        return self.kind == "api"

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider, "account": self.account, "kind": self.kind, "api": self.api,
            "window": self.window, "window_minutes": self.window_minutes, "utilization": self.utilization,
            "resets_at": self.resets_at, "status": self.status, "seen_at": self.seen_at, "reset": self.reset,
            "burn_per_hour": self.burn_per_hour, "runs_out_at": self.runs_out_at,
            "outlasts_reset": self.outlasts_reset, "instance_start": self.instance_start,
            "baseline": self.baseline, "peak": self.peak, "snapshots": self.snapshots,
            "used_points": round(self.used_units / (UNIT / 100), 4), "used_units": self.used_units,
            "limit_value": self.limit_value, "remaining": self.remaining, "claim": self.claim,
            "fallback_percentage": self.fallback_percentage,
            "by": {group: [s.to_json() for s in shares] for group, shares in self.shares.items()},
        }


@dataclass
class Block:
    """One past (or the open) instance of a window, as the provider defined it."""

    provider: str
    account: str
    window: str
    start: str
    end: str
    """The reset: the block is [start, end)."""
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_nanos: int = 0
    peak: float | None = None
    status: str | None = None
    """The last status seen in the block."""
    snapshots: int = 0
    active: bool = False

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "account": self.account, "window": self.window, "start": self.start,
                "end": self.end, "active": self.active, "calls": self.calls, "tokens": self.tokens,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cache_read_tokens": self.cache_read_tokens, "cache_write_tokens": self.cache_write_tokens,
                "cost_usd": usd(self.cost_nanos), "cost_nanos": self.cost_nanos, "peak": self.peak,
                "status": self.status, "snapshots": self.snapshots}


# ---- reading -----------------------------------------------------------------------------------------------

def has_table(conn: sqlite3.Connection) -> bool:
    """Whether this database has plan snapshots at all (schema 13 and later)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'plan_snapshots'"
                        ).fetchone() is not None


def keys(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """Every (account, window) with snapshots, by index seeks (one per key, not a scan of the table)."""
    found: list[tuple[str, str]] = []
    row = conn.execute("SELECT account, window FROM plan_snapshots ORDER BY account, window LIMIT 1").fetchone()
    while row is not None and len(found) < 10_000:
        found.append((row[0], row[1]))
        row = conn.execute("SELECT account, window FROM plan_snapshots WHERE (account, window) > (?, ?) "
                           "ORDER BY account, window LIMIT 1", row).fetchone()
    return found


_SNAP = ("s.provider, s.kind, s.seen_at, s.utilization, s.resets_at, s.status, s.window_minutes, s.limit_value, "
         "s.remaining, s.claim, s.fallback_percentage, s.call_id")


@dataclass
class _Snap:
    provider: str
    kind: str
    seen_at: str
    utilization: float | None
    resets_at: str | None
    status: str | None
    window_minutes: int | None
    limit_value: int | None
    remaining: int | None
    claim: str | None
    fallback_percentage: float | None
    call_id: str
    project: str | None = None
    client: str | None = None
    branch: str | None = None
    cost_nanos: int | None = None


def same_instance(older: _Snap, newer: _Snap) -> bool:
    """Whether `newer` continues the window instance `older` belongs to."""
    a, b = _epoch(older.resets_at), _epoch(newer.resets_at)
    if a is not None and b is not None and abs(b - a) > SAME_RESET:
        return False
    if older.utilization is not None and newer.utilization is not None and \
            older.utilization - newer.utilization > RESET_DROP:
        return False
    return True


def _latest_instance(conn: sqlite3.Connection, account: str, window: str, provider: str,
                     kind: str) -> list[_Snap]:
    """The snapshots of the latest instance of a window, oldest first, each with its call's groups and cost."""
    cursor = conn.execute(
        f"SELECT {_SNAP}, c.project, c.client, c.branch, c.cost_nanos FROM plan_snapshots s "
        "LEFT JOIN calls c ON c.id = s.call_id WHERE s.account = ? AND s.window = ? AND s.provider = ? "
        "AND s.kind = ? ORDER BY s.seen_at DESC, s.id DESC", (account, window, provider, kind))
    out: list[_Snap] = []
    for row in cursor:
        snap = _Snap(*row)
        if out and (not same_instance(snap, out[-1]) or len(out) >= MAX_WALK):
            break
        out.append(snap)
        if kind == "api":
            break  # the latest value only
    cursor.close()
    out.reverse()
    return out


def _providers(conn: sqlite3.Connection, account: str, window: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT DISTINCT provider, kind FROM plan_snapshots WHERE account = ? AND window = ?", (account, window))]


def _attribute(snaps: Sequence[_Snap]) -> tuple[int, dict[str, list[Share]], int | None, int | None]:
    """(used units, shares per group, baseline units, peak units) of one instance."""
    groups: dict[str, dict[str, Share]] = {g: {} for g in GROUPS}
    high: int | None = None
    baseline: int | None = None
    used = 0
    seen_calls: set[str] = set()
    for snap in snaps:
        units = _units(snap.utilization)
        rise = 0
        if units is not None:
            if high is None:
                baseline = high = units
            elif units > high:
                rise, high = units - high, units
        used += rise
        first = snap.call_id not in seen_calls
        seen_calls.add(snap.call_id)
        for group in GROUPS:
            name = getattr(snap, group) or NONE
            share = groups[group].setdefault(name, Share(name))
            share.units += rise
            if first:
                share.calls += 1
                share.cost_nanos += snap.cost_nanos or 0
    ordered = {g: sorted(shares.values(), key=lambda s: (-s.units, -s.cost_nanos, s.name))
               for g, shares in groups.items()}
    return used, ordered, baseline, high


def _pace(snaps: Sequence[_Snap], now: float) -> float | None:
    """Utilization per hour between the first and last snapshot seen in the last PACE_SPAN before `now`."""
    recent: list[tuple[float, float]] = []
    for snap in snaps:
        seen = _epoch(snap.seen_at)
        if snap.utilization is not None and seen is not None and now - PACE_SPAN <= seen <= now:
            recent.append((seen, snap.utilization))
    if len(recent) < 2:
        return None
    (t0, u0), (t1, u1) = recent[0], recent[-1]
    if t1 <= t0:
        return None
    return (u1 - u0) / ((t1 - t0) / 3600)


def state(snaps: Sequence[_Snap], account: str, window: str, now: float) -> WindowState:
    """The state at `now` of one window from its latest instance's snapshots (oldest first)."""
    last = snaps[-1]
    utilization = next((s.utilization for s in reversed(snaps) if s.utilization is not None), None)
    resets_at = last.resets_at or next((s.resets_at for s in reversed(snaps) if s.resets_at), None)
    result = WindowState(
        provider=last.provider, account=account, kind=last.kind, window=window,
        window_minutes=window_minutes(window, last.window_minutes), utilization=utilization,
        resets_at=resets_at, status=last.status, seen_at=last.seen_at, instance_start=snaps[0].seen_at,
        snapshots=len(snaps), limit_value=last.limit_value, remaining=last.remaining, claim=last.claim,
        fallback_percentage=last.fallback_percentage)
    reset_epoch = _epoch(resets_at)
    if reset_epoch is not None and reset_epoch <= now:  # the window is over: a new one starts from nothing
        result.reset = True
        result.utilization = 0.0 if utilization is not None else None
        result.status = None
        return result
    if last.kind == "api":
        return result
    result.used_units, result.shares, baseline, peak = _attribute(snaps)
    result.baseline = None if baseline is None else baseline / UNIT
    result.peak = None if peak is None else peak / UNIT
    if utilization is None:
        return result
    if utilization >= 1.0:
        result.runs_out_at = last.seen_at
        return result
    pace = _pace(snaps, now)
    result.burn_per_hour = pace
    if pace is None:
        return result
    if pace <= 0:
        result.outlasts_reset = True
        return result
    base = max(now, _epoch(last.seen_at) or now)  # from now: a projection never lands in the past
    out = base + (1.0 - utilization) / pace * 3600
    if reset_epoch is not None and out >= reset_epoch:
        result.outlasts_reset = True
    else:
        result.runs_out_at = utc_stamp(out)
    return result


def _order(state: WindowState) -> tuple[Any, ...]:
    known = state.window in PLAN_WINDOWS_ORDER
    return (state.kind != "plan", state.provider, state.account, state.window in ("unified", "overage"),
            not known, PLAN_WINDOWS_ORDER.index(state.window) if known else 0, state.window)


def current(conn: sqlite3.Connection, now: float | None = None) -> list[WindowState]:
    """Every window's state at `now` (epoch seconds): plan windows first, then API-key rate limits, each
    ordered by provider, account and window (5h, 7d, 7d_opus, 7d_sonnet, others, then unified/overage)."""
    now = time.time() if now is None else now
    if not has_table(conn):
        return []
    out = []
    for account, window in keys(conn):
        for provider, kind in _providers(conn, account, window):
            snaps = _latest_instance(conn, account, window, provider, kind)
            if snaps:
                out.append(state(snaps, account, window, now))
    return sorted(out, key=_order)


# ---- blocks --------------------------------------------------------------------------------------------------

def _clusters(rows: Iterable[tuple[str, str, str, int, float | None, str, str]]
              ) -> list[list[tuple[str, str, str, int, float | None, str, str]]]:
    """Rows (provider, account, resets_at, count, peak, first seen, last seen) sorted by provider, account,
    resets_at, grouped where consecutive resets agree within SAME_RESET."""
    groups: list[list[tuple[str, str, str, int, float | None, str, str]]] = []
    for row in rows:
        if groups:
            prev = groups[-1][-1]
            a, b = _epoch(prev[2]), _epoch(row[2])
            if prev[:2] == row[:2] and a is not None and b is not None and b - a <= SAME_RESET:
                groups[-1].append(row)
                continue
        groups.append([row])
    return groups


def blocks(conn: sqlite3.Connection, since: str | None = None, until: str | None = None, window: str = "5h",
           *, now: float | None = None) -> list[Block]:
    """The instances of `window` (plan windows only) overlapping [since, until), oldest first, per account:
    each [resets_at − window length, resets_at) with that account's calls in it; the one still open (its reset
    after `now`) is `active`."""
    now = time.time() if now is None else now
    if not has_table(conn):
        return []
    length_row = conn.execute("SELECT max(window_minutes) FROM plan_snapshots WHERE window = ? AND kind = 'plan'",
                              (window,)).fetchone()
    minutes = window_minutes(window, length_row[0] if length_row else None)
    if minutes is None:
        return []
    length = minutes * 60.0
    where, args = ["window = ?", "kind = 'plan'", "resets_at IS NOT NULL"], [window]
    if since:
        where.append("resets_at > ?")
        args.append(since)
    if until and (until_epoch := _epoch(until)) is not None:
        where.append("resets_at < ?")
        args.append(utc_stamp(until_epoch + length + SAME_RESET))
    rows = conn.execute(
        "SELECT provider, account, resets_at, count(*), max(utilization), min(seen_at), max(seen_at) "
        f"FROM plan_snapshots WHERE {' AND '.join(where)} GROUP BY provider, account, resets_at "
        "ORDER BY provider, account, resets_at", args).fetchall()
    out = []
    for group in _clusters(rows):
        provider, account = group[0][0], group[0][1]
        last = max(group, key=lambda r: r[6])
        end_epoch = _epoch(last[2])
        if end_epoch is None:
            continue
        start, end = utc_stamp(end_epoch - length), utc_stamp(end_epoch)
        if (since and end <= since) or (until and start >= until):
            continue
        peaks = [r[4] for r in group if r[4] is not None]
        block = Block(provider=provider, account=account, window=window, start=start, end=end,
                      peak=max(peaks) if peaks else None, snapshots=sum(r[3] for r in group),
                      active=end_epoch > now)
        status = conn.execute(
            "SELECT status FROM plan_snapshots WHERE account = ? AND window = ? AND provider = ? AND kind = 'plan' "
            "AND seen_at >= ? AND seen_at <= ? AND status IS NOT NULL ORDER BY seen_at DESC, id DESC LIMIT 1",
            (account, window, provider, min(r[5] for r in group), last[6])).fetchone()
        block.status = status[0] if status else None
        sums = conn.execute(
            "SELECT count(*), ifnull(sum(input_tokens), 0), ifnull(sum(output_tokens), 0), "
            "ifnull(sum(cache_read_tokens), 0), ifnull(sum(cache_write_tokens), 0), ifnull(sum(cost_nanos), 0) FROM calls WHERE ifnull(key_fingerprint, '') = ? "
            "AND provider = ? AND started_at >= ? AND started_at < ? AND ifnull(endpoint_kind, '') != 'self_test' "
            "AND incomplete_reason IS NOT 'in_progress'", (account, provider, start, end)).fetchone()
        block.calls = sums[0]
        block.input_tokens, block.output_tokens, block.cache_read_tokens, block.cache_write_tokens = (
            int(v) for v in sums[1:5])
        block.cost_nanos = int(sums[5])
        out.append(block)
    return sorted(out, key=lambda b: (b.start, b.provider, b.account))
