"""The core's budget counters: what each budget has spent this period, and what the calls in flight may
still spend, in memory, so deciding whether a call may start never reads the database.

* `load()` (a worker thread, at start and on config reload) reads each budget's spend exactly from the
  database (`spend.spent`), with the thresholds already alerted this period and the overrides running. Until
  it has, or if it cannot, every call passes (fail open) and a `spend_unknown` event says so.
* `admit(call_id, dims, estimate)` (the event loop, per call) returns the `block` budget that refuses the
  call, or None. A call is refused when, for a block budget in its scope with no override running,
  `spent + reserved ≥ limit`. An admitted call reserves its estimate (max_tokens at the model's output
  price plus the request's size at its input price, worked out by the caller) against every budget in its
  scope, until its row commits.
* `committed(record)` (the writer thread, after each commit) releases the call's reservation and adds its
  cost to the budgets in scope whose current period holds the call's start; crossing a warn threshold or
  the limit raises an alert once per period.
* `refresh()` (every few seconds, a worker thread) picks up overrides written by `halton-meter budgets
  override` and re-reads rolling budgets, whose spend falls as calls age out of the span.

The bound this gives (docs/budgets.md): once the budget is reached, no new call starts; the calls already
in flight when it was reached finish, so a period overshoots its limit by at most what those calls cost
beyond their reservations. Calls admitted together while the budget was nearly spent each reserve their
estimate first, so they cannot all slip in: admissions stop as soon as the reservations fill what is left.

Periods roll over by the clock: at the end of a day, week or month the spend starts again from 0 and the
thresholds re-arm; a call that started in the old period and commits in the new one counts for the old.
"""

from __future__ import annotations

import datetime
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halton_meter.budget_config import Budget
from halton_meter.budgets import spend
from halton_meter.clock import utc_stamp
from halton_meter.store.schema import connect_read_only
from halton_meter.types import BILLING_API, CallRecord

Alert = Callable[[Budget, spend.Event], None]
ROLLING_REFRESH_SECONDS = 30.0
"""How often rolling budgets are re-read (their spend falls as calls leave the span)."""


@dataclass(frozen=True)
class Refusal:
    """Why a call may not start: the budget, what its period has spent and holds reserved, and when the
    period ends (None for a rolling span)."""

    budget: Budget
    spent: int
    reserved: int
    period_end: datetime.datetime | None
    utilization: float | None = None
    """For a plan budget: the window's utilization that reached `limit_plan`."""


@dataclass
class _State:
    budget: Budget
    start: datetime.datetime
    end: datetime.datetime
    spent: int = 0
    reserved: dict[str, int] = field(default_factory=dict)
    alerted: set[float] = field(default_factory=set)
    override_until: str | None = None
    block: str = ""
    """For a rolling span: the block of its own length its alerts belong to (`spend.period_start`)."""
    pending: list[tuple[str, int]] = field(default_factory=list)
    """(started_at, cost) of rows committed while a read of the database was under way (see `_reload`)."""


class Ledger:
    def __init__(self, budgets: Sequence[Budget], db: Path, *, alert: Alert | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self.alert = alert
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._budgets: tuple[Budget, ...] = tuple(budgets)
        self.loaded = False
        self.problem: str | None = None
        self._reading: set[str] = set()
        self._last_rolling = 0.0
        self._plan: dict[tuple[str, str, str], tuple[float | None, str | None]] = {}
        """(provider, account, window) → the latest (utilization, resets_at) seen, for plan budgets."""
        self._plan_alerted: dict[tuple[str, str, str], set[float]] = {}
        """(budget, account, resets_at) → thresholds alerted in that window instance."""
        self._overrides: dict[str, str] = {}

    # ---- what the event loop asks -----------------------------------------------------------------

    @property
    def budgets(self) -> tuple[Budget, ...]:
        return self._budgets

    @property
    def blocking(self) -> bool:
        """Whether any budget can refuse a call (else the core skips `admit` and the estimate)."""
        return any(b.blocks for b in self._budgets)

    def admit(self, call_id: str, dims: Mapping[str, str | None], estimate: int, *,
              money: bool = True) -> Refusal | None:
        """None: the call may start (its estimate is now reserved); else why it may not. `money` False: a
        call that spends no money (a subscription login): only plan budgets apply to it."""
        if not self.loaded:
            return None  # fail open: the spend is not known yet (or could not be read)
        now = self._now()
        stamp = utc_stamp(now)
        with self._lock:
            states = [s for s in self._states.values() if money and s.budget.matches(dims)]
            for state in states:
                self._roll(state, now)
            for state in states:
                if not state.budget.blocks or (state.override_until is not None and state.override_until > stamp):
                    continue
                reserved = sum(state.reserved.values())
                if state.spent + reserved >= state.budget.limit_nanos:
                    end = state.end if state.budget.rolling_seconds is None else None
                    return Refusal(state.budget, state.spent, reserved, end)
            for budget in self._budgets:
                refusal = self._plan_refusal(budget, dims, stamp)
                if refusal is not None:
                    return refusal
            for state in states:
                state.reserved[call_id] = max(0, estimate)
        return None

    def _plan_refusal(self, budget: Budget, dims: Mapping[str, str | None], stamp: str) -> Refusal | None:
        """A block plan budget whose window (for this call's account) is at or past its `limit_plan`."""
        if not budget.is_plan or not budget.blocks or budget.limit_plan is None or not budget.matches(dims):
            return None
        until = self._overrides.get(budget.name)
        if until is not None and until > stamp:
            return None
        entry = self._plan.get((dims.get("provider") or "", dims.get("key") or "", budget.plan_window or ""))
        if entry is None:
            return None
        utilization, resets = entry
        if utilization is None or (resets is not None and resets <= stamp) or utilization < budget.limit_plan:
            return None
        end = datetime.datetime.fromisoformat(resets.replace("Z", "+00:00")) if resets else None
        return Refusal(budget, 0, 0, end, utilization)

    def forget(self, call_id: str) -> None:
        """Drop a call's reservations (a call that will not commit a row, e.g. refused)."""
        with self._lock:
            for state in self._states.values():
                state.reserved.pop(call_id, None)

    def status(self) -> list[dict[str, Any]]:
        """Each budget's counters, for the core's stats and tests."""
        with self._lock:
            return [{"name": s.budget.name, "spent_nanos": s.spent, "reserved_nanos": sum(s.reserved.values()),
                     "limit_nanos": s.budget.limit_nanos, "period_start": utc_stamp(s.start),
                     "override_until": s.override_until, "loaded": self.loaded} for s in self._states.values()]

    # ---- what the writer thread reports ------------------------------------------------------------

    def committed(self, record: CallRecord) -> None:
        alerts: list[tuple[Budget, spend.Event]] = []
        dims = call_dims(record)
        cost = (record.cost_nanos or 0) if record.billing == BILLING_API else 0
        now = self._now()
        with self._lock:
            for state in self._states.values():
                state.reserved.pop(record.id, None)
                if not cost or not state.budget.matches(dims):
                    continue
                self._roll(state, now)
                if state.budget.name in self._reading:
                    state.pending.append((record.started_at, cost))
                if record.started_at < utc_stamp(state.start):
                    continue  # counts for a period already over (or, rolling, already out of the span)
                before = state.spent
                state.spent += cost
                alerts += self._crossed(state, before, now)
            if record.plan:
                alerts += self._plan_seen(record, dims, now)
        self._send(alerts)

    def _plan_seen(self, record: CallRecord, dims: Mapping[str, str | None],
                   now: datetime.datetime) -> list[tuple[Budget, spend.Event]]:
        """Keep the latest utilization of each plan window; alert plan budgets whose thresholds it crossed."""
        out = []
        for snap in record.plan or ():
            if snap.get("kind") != "plan" or not snap.get("window"):
                continue
            key = (str(snap.get("provider") or record.provider), str(snap.get("account") or ""), str(snap["window"]))
            old = self._plan.get(key)
            utilization, resets = snap.get("utilization"), snap.get("resets_at")
            self._plan[key] = (utilization, resets)
            if utilization is None:
                continue
            before = old[0] if old is not None and old[1] == resets and old[0] is not None else 0.0
            for budget in self._budgets:
                if budget.plan_window != key[2] or budget.limit_plan is None or not budget.matches(
                        {**dims, "key": key[1], "provider": key[0]}):
                    continue
                alerted = self._plan_alerted.setdefault((budget.name, key[1], str(resets)), set())
                for threshold in (*budget.warn_at, 1.0):
                    mark = budget.limit_plan * threshold
                    if before < mark <= utilization and threshold not in alerted:
                        alerted.add(threshold)
                        out.append((budget, spend.Event(
                            at=utc_stamp(now), budget=budget.name, period_start=str(resets or ""),
                            kind="limit" if threshold == 1.0 else "warn", threshold=threshold,
                            detail=f"{key[2]} window at {utilization * 100:.0f} % (limit {budget.limit_plan * 100:.0f} %)")))
        return out

    # ---- loading and refreshing (worker threads) ---------------------------------------------------

    def set_budgets(self, budgets: Sequence[Budget]) -> None:
        """A new config: counters for new or changed budgets are read again; unchanged ones are kept."""
        with self._lock:
            self._budgets = tuple(budgets)
            keep = {b.name: self._states[b.name] for b in budgets
                    if b.name in self._states and self._states[b.name].budget == b}
            self._states = keep
        self.load()

    def load(self) -> None:
        """Read every budget's spend not read yet. Never raises: a failure leaves calls passing."""
        missing = [b for b in self._budgets if not b.is_plan and b.name not in self._states]
        try:
            self._reload(missing, first=True)
            self._load_plan()
            self.problem = None
            self.loaded = True
        except (sqlite3.Error, OSError, ValueError) as exc:
            self.problem = f"{type(exc).__name__}: {exc}"
            self.loaded = False
            self._note_unknown()

    def refresh(self) -> None:
        """Overrides from the database; rolling budgets re-read every `ROLLING_REFRESH_SECONDS`. Never raises."""
        if not self.loaded:
            self.load()
            return
        if not self._budgets:
            return  # nothing to override or re-read: no connection every few seconds for nothing
        try:
            now = self._now()
            with _reader(self.db) as conn:
                overrides = spend.overrides(conn, now)
            with self._lock:
                self._overrides = overrides
                for state in self._states.values():
                    state.override_until = overrides.get(state.budget.name)
            if time.monotonic() - self._last_rolling >= ROLLING_REFRESH_SECONDS:
                self._last_rolling = time.monotonic()
                self._reload([b for b in self._budgets if b.rolling_seconds is not None], first=False)
        except (sqlite3.Error, OSError, ValueError):
            pass  # the counters carry on from commits; the next refresh tries again

    def _load_plan(self) -> None:
        """The latest snapshot of every plan window (for plan budgets), and the overrides running."""
        if not any(b.is_plan for b in self._budgets):
            return
        with _reader(self.db) as conn:
            overrides = spend.overrides(conn, self._now())
            try:
                rows = conn.execute(
                    "SELECT provider, account, window, utilization, resets_at FROM plan_snapshots WHERE id IN "
                    "(SELECT max(id) FROM plan_snapshots WHERE kind = 'plan' GROUP BY provider, account, window)"
                ).fetchall()
            except sqlite3.OperationalError:  # a database from before plan snapshots
                rows = []
        with self._lock:
            self._overrides = overrides
            for provider, account, window, utilization, resets in rows:
                self._plan.setdefault((provider, account, window), (utilization, resets))

    def _reload(self, budgets: Sequence[Budget], *, first: bool) -> None:
        """Read the budgets' spend in one snapshot. Rows committed while it runs are in the snapshot or in
        `pending`, never both: the snapshot is taken before `pending` starts collecting."""
        if not budgets:
            return
        now = self._now()
        with self._lock:  # a budget read for the first time collects the commits made while it is read
            for budget in budgets:
                if budget.name not in self._states:
                    self._states[budget.name] = _State(budget, *budget.bounds(now))
        with _reader(self.db) as conn:
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
            names = {b.name for b in budgets}
            with self._lock:
                self._reading |= names
                for state in self._states.values():
                    if state.budget.name in names:
                        state.pending.clear()
            try:
                now = self._now()
                overrides = spend.overrides(conn, now)
                fresh = {}
                for budget in budgets:
                    start, end = budget.bounds(now)
                    block = spend.period_start(budget, now)
                    state = _State(budget, start, end, spent=spend.spent(conn, budget, now),
                                   alerted=spend.alerted(conn, budget, block), override_until=overrides.get(budget.name),
                                   block=block)
                    fresh[budget.name] = state
            finally:
                with self._lock:
                    self._reading -= names
            conn.execute("COMMIT")
        with self._lock:
            for name, state in fresh.items():
                old = self._states.get(name)
                if old is not None:
                    state.reserved = old.reserved
                    state.alerted |= old.alerted
                    since = utc_stamp(state.start)
                    state.spent += sum(cost for started, cost in old.pending if started >= since)
                    old.pending.clear()
                self._states[name] = state

    # ---- helpers -------------------------------------------------------------------------------------

    def _now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.clock(), datetime.UTC)

    def _roll(self, state: _State, now: datetime.datetime) -> None:
        """A calendar period that has ended starts again from 0 with its thresholds re-armed; a rolling span
        moves with the clock (its spend is re-read every `ROLLING_REFRESH_SECONDS`) and re-arms its
        thresholds once per block of its length (`spend.period_start`)."""
        if state.budget.rolling_seconds is not None:
            block = spend.period_start(state.budget, now)
            if block != state.block:
                state.block, state.alerted = block, set()
            state.start, state.end = state.budget.bounds(now)
        elif now >= state.end:
            state.start, state.end = state.budget.bounds(now)
            state.spent, state.alerted = 0, set()

    def _crossed(self, state: _State, before: int, now: datetime.datetime) -> list[tuple[Budget, spend.Event]]:
        budget, out = state.budget, []
        for threshold in (*budget.warn_at, 1.0):
            mark = budget.limit_nanos * threshold
            if before < mark <= state.spent and threshold not in state.alerted:
                state.alerted.add(threshold)
                kind = "limit" if threshold == 1.0 else "warn"
                out.append((budget, spend.Event(at=utc_stamp(now), budget=budget.name,
                                                period_start=spend.period_start(budget, now), kind=kind,
                                                threshold=threshold, spent_nanos=state.spent,
                                                limit_nanos=budget.limit_nanos)))
        return out

    def _send(self, alerts: list[tuple[Budget, spend.Event]]) -> None:
        if self.alert is None:
            return
        for budget, event in alerts:
            try:
                self.alert(budget, event)
            except Exception:  # an alert must never cost the writer or the call
                pass

    def _note_unknown(self) -> None:
        if self.alert is None:
            return
        now = self._now()
        for budget in self._budgets:
            self._send([(budget, spend.Event(at=utc_stamp(now), budget=budget.name,
                                             period_start=spend.period_start(budget, now), kind="spend_unknown",
                                             limit_nanos=budget.limit_nanos, detail=self.problem))])


def call_dims(record: CallRecord) -> dict[str, str | None]:
    """A call's values for the budget scope dimensions."""
    return {"project": record.project, "key": record.key_fingerprint, "branch": record.branch,
            "client": record.client, "provider": record.provider, "model": record.model or record.model_requested}


class _reader:
    """A read-only connection to the database, closed on exit."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.conn: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        if not self.db.exists():
            raise FileNotFoundError(f"no database at {self.db}")
        self.conn = connect_read_only(self.db)
        self.conn.isolation_level = None
        return self.conn

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()
