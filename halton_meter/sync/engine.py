"""The sync loop: for each configured target, send what changed since its cursor, oldest first, and move the
cursor only once the target has confirmed.

Order of work per target (`sync_state`, store/synclog.py):

1. Backfill, the first time: every call row by `rowid`, up to the highest rowid when sync was switched on
   (`backfill_until`), in batches.
2. Then the log: the calls logged after `log_seq`, each in its latest version.

A row is sent as a JSON-able dict: the record's public fields (after the target's privacy preset), plus
`machine_id`, `user_label` and `version` (the row's latest log `seq`, or 0 for a backfilled row never
changed since: targets keep the highest version, so a replay never overwrites newer data). Calls still in
flight are not sent: their final row is logged when it lands.

Delivery is at least once; targets upsert by call id, so the effect is exactly once. A failing target is
retried with capped exponential backoff (1 s doubling to 5 min) and never holds up another target or the
meter: the loop runs on its own thread, reads the database read-only and writes only `sync_state`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halton_meter.clock import parse_stamp, utc_stamp
from halton_meter.store.schema import connect, connect_read_only, immediate
from halton_meter.store.synclog import enable, prune
from halton_meter.sync_config import SyncSettings, shape_rows
from halton_meter.types import PUBLIC_FIELDS, SyncSink

BATCH = 5000
BACKOFF_MAX = 300.0
IDLE_SECONDS = 2.0
_COLUMNS = [f for f in PUBLIC_FIELDS if f not in ("cost_usd", "cache_savings_usd")] + ["cost_nanos",
                                                                                      "cache_savings_nanos"]


@dataclass
class TargetRun:
    settings: SyncSettings
    sink: SyncSink | None = None
    failures: int = 0
    retry_at: float = 0.0
    last_error: str | None = None


@dataclass
class Progress:
    sent: int = 0
    errors: dict[str, str] = field(default_factory=dict)


class SyncEngine:
    def __init__(self, db: Path, targets: Sequence[SyncSettings], open_sink: Callable[[SyncSettings], SyncSink],
                 *, machine_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.machine_id = machine_id
        self.open_sink = open_sink
        self.clock = clock
        self.runs = {t.name: TargetRun(t) for t in targets}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the loop ------------------------------------------------------------------------------------

    def start(self) -> SyncEngine:
        self.switch_on()
        self._thread = threading.Thread(target=self._loop, name="halton-meter-sync", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for run in self.runs.values():
            if run.sink is not None:
                try:
                    run.sink.close()
                except Exception:
                    pass

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            progress = self.run_once()
            if progress.sent == 0:
                self._wake.wait(IDLE_SECONDS)
                self._wake.clear()

    # ---- one round -----------------------------------------------------------------------------------

    def switch_on(self) -> None:
        """Turn the change log on (or off, with no target) and start each new target's backfill mark."""
        conn = connect(self.db)
        try:
            if not self.runs and conn.execute("SELECT NOT EXISTS (SELECT 1 FROM sync_enabled) AND NOT EXISTS "
                                              "(SELECT 1 FROM sync_log)").fetchone()[0]:
                return  # already off and empty: no write at every start
            with immediate(conn):
                enable(conn, bool(self.runs))
                top = conn.execute("SELECT ifnull(max(rowid), 0) FROM calls").fetchone()[0]
                for name in self.runs:
                    conn.execute("INSERT OR IGNORE INTO sync_state (target, backfill_until) VALUES (?, ?)", (name, top))
        finally:
            conn.close()

    def run_once(self) -> Progress:
        """One batch per target that is due; what was sent and what failed."""
        progress = Progress()
        for name, run in self.runs.items():
            if self.clock() < run.retry_at:
                continue
            try:
                progress.sent += self._one_batch(run)
                run.failures, run.last_error = 0, None
            except Exception as exc:  # a target's failure is its own: logged in sync_state, retried later
                run.failures += 1
                run.retry_at = self.clock() + min(BACKOFF_MAX, 2.0 ** (run.failures - 1))
                run.last_error = _one_line(exc)
                progress.errors[name] = run.last_error
                self._note_error(name, run.last_error)
                if run.sink is not None:
                    try:
                        run.sink.close()
                    except Exception:
                        pass
                    run.sink = None
        return progress

    def _one_batch(self, run: TargetRun) -> int:
        name = run.settings.name
        reader = connect_read_only(self.db)
        try:
            state = reader.execute("SELECT backfill_rowid, backfill_until, log_seq FROM sync_state WHERE target = ?",
                                   (name,)).fetchone()
            if state is None:
                return 0
            done, until, log_seq = state[0], state[1] or 0, state[2]
            select = f"SELECT rowid, {', '.join(_COLUMNS)} FROM calls"
            if done < until:
                rows = reader.execute(f"{select} WHERE rowid > ? AND rowid <= ? AND incomplete_reason IS NOT "
                                      "'in_progress' ORDER BY rowid LIMIT ?", (done, until, BATCH)).fetchall()
                versions = [0] * len(rows)
                cursor = ("backfill_rowid", rows[-1][0] if len(rows) == BATCH else until)
            else:
                logged = dict(reader.execute("SELECT call_id, max(seq) FROM sync_log WHERE seq > ? GROUP BY call_id "
                                             "ORDER BY max(seq) LIMIT ?", (log_seq, BATCH)).fetchall())
                if not logged:
                    return 0
                marks = ", ".join("?" * len(logged))
                rows = reader.execute(f"{select} WHERE id IN ({marks}) AND incomplete_reason IS NOT 'in_progress'",
                                      list(logged)).fetchall()
                versions = [logged[r[1]] for r in rows]
                cursor = ("log_seq", max(logged.values()))
        finally:
            reader.close()
        shaped = shape_rows(_COLUMNS, [r[1:] for r in rows], run.settings, self.machine_id, versions)
        if shaped:
            if run.sink is None:
                run.sink = self.open_sink(run.settings)
            run.sink.push(shaped)
        self._advance(name, cursor, len(shaped))
        return max(len(shaped), 1)  # the cursor moved: there may be more

    def _advance(self, name: str, cursor: tuple[str, int], sent: int) -> None:
        column, value = cursor
        conn = connect(self.db)
        try:
            with immediate(conn):
                conn.execute(f"UPDATE sync_state SET {column} = ?, last_success = ?, sent = sent + ? WHERE target = ?",
                             (value, utc_stamp(), sent, name))
                prune(conn, list(self.runs))
        finally:
            conn.close()

    def _note_error(self, name: str, error: str) -> None:
        try:
            conn = connect(self.db)
            try:
                with immediate(conn):
                    conn.execute("UPDATE sync_state SET last_error = ?, last_error_at = ? WHERE target = ?",
                                 (error, utc_stamp(), name))
            finally:
                conn.close()
        except sqlite3.Error:
            pass


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def status(db: Path, targets: Sequence[SyncSettings], now: float | None = None) -> list[dict[str, Any]]:
    """Per configured target: last success, last error, rows sent, and the lag (rows and seconds) behind the
    local database — what `halton-meter sync status` prints."""
    now = time.time() if now is None else now
    out = []
    conn = connect_read_only(db)
    try:
        conn.row_factory = sqlite3.Row
        top = conn.execute("SELECT ifnull(max(seq), 0) FROM sync_log").fetchone()[0]
        for settings in targets:
            state = conn.execute("SELECT * FROM sync_state WHERE target = ?", (settings.name,)).fetchone()
            if state is None:
                out.append({"target": settings.name, "kind": settings.target, "enabled": True, "state": "not started",
                            "lag_rows": None, "lag_seconds": None, "last_success": None, "last_error": None, "sent": 0})
                continue
            backlog = max(0, (state["backfill_until"] or 0) - state["backfill_rowid"])
            pending = conn.execute("SELECT count(DISTINCT call_id), min(seq) FROM sync_log WHERE seq > ?",
                                   (state["log_seq"],)).fetchone()
            lag_rows = backlog + (pending[0] or 0)
            lag_seconds = None
            if lag_rows and state["last_success"]:
                seen = parse_stamp(state["last_success"])
                lag_seconds = max(0, int(now - seen.timestamp())) if seen is not None else None
            out.append({"target": settings.name, "kind": settings.target, "enabled": True,
                        "state": "backfilling" if backlog else "current" if not lag_rows else "behind",
                        "lag_rows": lag_rows, "lag_seconds": lag_seconds, "last_success": state["last_success"],
                        "last_error": state["last_error"], "last_error_at": state["last_error_at"],
                        "sent": state["sent"], "log_top": top})
    finally:
        conn.close()
    return out


def backfill(db: Path, name: str) -> None:
    """Send everything again to target `name` from the start of history (its upserts make it harmless)."""
    conn = connect(db)
    try:
        with immediate(conn):
            top = conn.execute("SELECT ifnull(max(rowid), 0) FROM calls").fetchone()[0]
            conn.execute("INSERT OR IGNORE INTO sync_state (target) VALUES (?)", (name,))
            conn.execute("UPDATE sync_state SET backfill_rowid = 0, backfill_until = ? WHERE target = ?", (top, name))
    finally:
        conn.close()


