"""Budget alerts: what happens when the core's ledger says a budget crossed a threshold (or that its spend
could not be read). The ledger calls an `Alerter` from the writer thread, so `__call__` only puts the event
on a bounded queue and returns; one daemon worker thread takes each event in turn and

1. stores it in `budget_events` (`spend.record`, on its own short-lived writable connection, in a
   `BEGIN IMMEDIATE` transaction). A warn or limit event is stored once per budget, period and threshold
   (a unique index): when the row was already there — the threshold alerted before a restart — nothing
   more happens, so an alert is never shown twice;
2. logs one sentence (`budget acme-monthly reached 80 % of $200.00 ($161.20 spent this month)`);
3. shows a desktop notification where one can be shown: `notify-send` (Linux and the BSDs, when it is on
   PATH), `osascript` (macOS), a WinRT toast through Windows PowerShell (Windows); anywhere else, or when the
   program is missing, nothing, silently. Title and body are passed as arguments (`osascript`'s `on run
   argv`) or escaped (the toast's XML inside a PowerShell single-quoted string), never interpolated raw;
4. runs the budget's `on_alert` command, if any, with the event as one JSON object on stdin (`hook_json`).

Every program runs through an injectable runner (default: `subprocess.run`, no shell, a 10 s timeout,
output discarded), so tests assert the exact command lines. Nothing here raises into the caller: a full
queue drops the event with a counted warning, a failing notification is ignored, a failing `on_alert`
command is one warning in the log.

`spend_unknown` events (the ledger could not read the database) are shown once per budget, period and
reason for the Alerter's lifetime: the ledger retries every few seconds and would otherwise repeat them.
"""

from __future__ import annotations

import json
import queue
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import structlog

from halton_meter.budget_config import Budget, usd
from halton_meter.budgets.spend import Event, record

log = structlog.get_logger("halton_meter.budgets")

Runner = Callable[[Sequence[str], bytes | None], int]
"""Runs argv (no shell) with `stdin` bytes (or none), returns the exit status; may raise OSError or
subprocess.TimeoutExpired (the Alerter catches both)."""

TIMEOUT_SECONDS = 10.0
QUEUE_SIZE = 256
APP_NAME = "Halton Meter"
POWERSHELL_APP_ID = r"{1AC14E77-02E7-4E5D-B744-2EB1AE5198B7}\WindowsPowerShell\v1.0\powershell.exe"
"""The AppUserModelID toasts are shown under: Windows PowerShell's own, registered on every Windows 10/11
(an unregistered id shows nothing), so no shortcut or module (BurntToast) has to be installed."""

_STOP = object()


def run(argv: Sequence[str], stdin: bytes | None = None) -> int:
    """The default runner: no shell, 10 s timeout, output discarded."""
    result = subprocess.run(list(argv), input=stdin if stdin is not None else b"", timeout=TIMEOUT_SECONDS,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return result.returncode


# ---- the words -------------------------------------------------------------------------------------------

def _percent(threshold: float) -> str:
    return f"{round(threshold * 100, 1):g} %"


def period_phrase(budget: Budget) -> str:
    """`today`, `this week`, `this month`, `in the last 5h`."""
    if budget.rolling_seconds is not None:
        return "in the last " + budget.period_label.removeprefix("rolling ")
    return "today" if budget.period == "day" else f"this {budget.period}"


def sentence(budget: Budget, event: Event) -> str:
    """The log line: one human sentence."""
    limit = f"${usd(event.limit_nanos if event.limit_nanos is not None else budget.limit_nanos)}"
    spent = f"${usd(event.spent_nanos)} spent {period_phrase(budget)}" if event.spent_nanos is not None else ""
    if event.kind == "warn" and event.threshold is not None:
        return f"budget {budget.name} reached {_percent(event.threshold)} of {limit} ({spent})"
    if event.kind == "limit":
        then = ("new calls are refused until it resets or is overridden" if budget.blocks
                else "calls still pass (action = \"warn\")")
        return f"budget {budget.name} reached its limit of {limit} ({spent}); {then}"
    if event.kind == "spend_unknown":
        why = f" ({event.detail})" if event.detail else ""
        return f"budget {budget.name}: spend could not be read{why}; calls pass until it can"
    if event.kind == "override":
        return f"budget {budget.name} overridden until {event.until}: calls pass"
    if event.kind == "override_cleared":
        return f"budget {budget.name}: override cleared"
    return f"budget {budget.name}: {event.kind}"


def notification_text(budget: Budget, event: Event) -> tuple[str, str]:
    """(title, body) of the desktop notification."""
    limit = f"${usd(event.limit_nanos if event.limit_nanos is not None else budget.limit_nanos)}"
    spent = f"${usd(event.spent_nanos)}" if event.spent_nanos is not None else "?"
    of = f"{spent} of {limit} spent {period_phrase(budget)}."
    if event.kind == "warn" and event.threshold is not None:
        then = " Calls will be refused at the limit." if budget.blocks else ""
        return f"{APP_NAME}: {budget.name} at {_percent(event.threshold)}", of + then
    if event.kind == "limit":
        then = (f" New calls are refused; `halton-meter budgets override {budget.name} --for 1h` lets them through."
                if budget.blocks else "")
        return f"{APP_NAME}: {budget.name} reached its limit", of + then
    if event.kind == "spend_unknown":
        return (f"{APP_NAME}: {budget.name} spend unknown",
                "The meter could not read the spend; calls pass until it can (`halton-meter doctor`).")
    return f"{APP_NAME}: {budget.name}", sentence(budget, event)


def hook_json(budget: Budget, event: Event) -> dict[str, Any]:
    """What an `on_alert` command reads on stdin (dollars as decimal strings; `period_start` the period's
    start, for a rolling budget the start of the block of its length the alert belongs to)."""
    return {"budget": budget.name, "kind": event.kind, "threshold": event.threshold,
            "spent_usd": usd(event.spent_nanos) if event.spent_nanos is not None else None,
            "limit_usd": usd(event.limit_nanos if event.limit_nanos is not None else budget.limit_nanos),
            "period": budget.period_label, "period_start": event.period_start or None, "at": event.at,
            "scope": budget.scope_dict()}


def _powershell_quote(text: str) -> str:
    """`text` inside a PowerShell single-quoted string: `'` doubled; the typographic quotes PowerShell also
    ends such a string at were already turned into XML character references."""
    return text.replace("'", "''")


def toast_script(title: str, body: str) -> str:
    """A Windows PowerShell script showing a WinRT toast (no module to install: BurntToast is not there by
    default). Non-ASCII becomes XML character references, so only `'` needs escaping for PowerShell."""
    def xml(text: str) -> str:
        return escape(text).encode("ascii", "xmlcharrefreplace").decode("ascii")

    toast = (f'<toast><visual><binding template="ToastGeneric"><text>{xml(title)}</text><text>{xml(body)}</text>'
             "</binding></visual></toast>")
    return ("$ErrorActionPreference = 'Stop'; "
            "[Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, "
            "ContentType = WindowsRuntime] | Out-Null; "
            "[Windows.Data.Xml.Dom.XmlDocument, Windows.Data.Xml.Dom.XmlDocument, ContentType = WindowsRuntime] "
            "| Out-Null; "
            "$xml = New-Object Windows.Data.Xml.Dom.XmlDocument; "
            f"$xml.LoadXml('{_powershell_quote(toast)}'); "
            "$toast = New-Object Windows.UI.Notifications.ToastNotification $xml; "
            f"[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier('{POWERSHELL_APP_ID}')"
            ".Show($toast)")


def notification_command(title: str, body: str, *, critical: bool = False) -> list[str] | None:
    """The command that shows a desktop notification on this platform, or None where none is available."""
    if sys.platform == "darwin":
        osascript = shutil.which("osascript")
        if osascript is None:
            return None
        return [osascript, "-e", "on run argv", "-e",
                "display notification (item 2 of argv) with title (item 1 of argv)", "-e", "end run", title, body]
    if sys.platform == "win32":
        powershell = shutil.which("powershell")
        if powershell is None:
            return None
        return [powershell, "-NoProfile", "-NonInteractive", "-Command", toast_script(title, body)]
    notify_send = shutil.which("notify-send")
    if notify_send is None:
        return None
    return [notify_send, f"--app-name={APP_NAME}", f"--urgency={'critical' if critical else 'normal'}", "--",
            title, body]


# ---- the alerter ------------------------------------------------------------------------------------------

class Alerter:
    """The `alert(budget, event)` callable the core's ledger calls (see the module docstring)."""

    def __init__(self, db: Path, *, runner: Runner = run, hook_runner: Runner | None = None,
                 notify: bool = True, maxsize: int = QUEUE_SIZE) -> None:
        self.db = db
        self.runner = runner
        """Runs the notification programs."""
        self.hook_runner = hook_runner or run
        """Runs `on_alert` commands."""
        self.notify = notify
        self.dropped = 0
        self.handled = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._unknown_seen: set[tuple[str, str, str | None]] = set()
        self._thread = threading.Thread(target=self._work, name="budget-alerts", daemon=True)
        self._thread.start()

    def __call__(self, budget: Budget, event: Event) -> None:
        try:
            self._queue.put_nowait((budget, event))
        except queue.Full:
            self.dropped += 1
            try:
                log.warning("budget alert queue full: alert dropped", budget=budget.name, kind=event.kind,
                            dropped=self.dropped)
            except Exception:
                pass
        except Exception:
            pass

    def close(self, timeout: float = 5.0) -> None:
        """Handle what is queued, then stop the worker (waiting at most `timeout` seconds)."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            budget, event = item
            try:
                self.handle(budget, event)
            except Exception as exc:  # a bug here must not stop later alerts
                try:
                    log.warning("budget alert failed", budget=budget.name, error=f"{type(exc).__name__}: {exc}")
                except Exception:
                    pass
            finally:
                self.handled += 1

    def handle(self, budget: Budget, event: Event) -> None:
        """Store, log, notify and run `on_alert` for one event (the worker thread; tests may call it)."""
        if event.kind == "spend_unknown":
            key = (budget.name, event.period_start, event.detail)
            if key in self._unknown_seen:
                return
            self._unknown_seen.add(key)
        if not self._store(event):
            return  # alerted already (before a restart): shown then
        text = sentence(budget, event)
        if event.kind in ("limit", "spend_unknown"):
            log.warning(text, budget=budget.name, kind=event.kind, threshold=event.threshold)
        else:
            log.info(text, budget=budget.name, kind=event.kind, threshold=event.threshold)
        if self.notify:
            self._notify(budget, event)
        if budget.on_alert:
            self._hook(budget, event)

    def _store(self, event: Event) -> bool:
        """True when the event is new (or could not be stored: better shown twice than never)."""
        from halton_meter.store.schema import connect, immediate

        if not self.db.exists():
            return True  # never create the database from here
        try:
            conn = connect(self.db)
        except sqlite3.Error as exc:
            log.warning("budget event not stored", budget=event.budget, kind=event.kind, error=str(exc))
            return True
        try:
            with immediate(conn):
                return record(conn, event)
        except sqlite3.Error as exc:
            log.warning("budget event not stored", budget=event.budget, kind=event.kind, error=str(exc))
            return True
        finally:
            conn.close()

    def _notify(self, budget: Budget, event: Event) -> None:
        title, body = notification_text(budget, event)
        argv = notification_command(title, body, critical=event.kind == "limit")
        if argv is None:
            return
        try:
            self.runner(argv, None)
        except (OSError, subprocess.SubprocessError):
            pass  # no desktop to show it on: the log line and the history have it

    def _hook(self, budget: Budget, event: Event) -> None:
        payload = (json.dumps(hook_json(budget, event)) + "\n").encode()
        command = list(budget.on_alert)
        try:
            status = self.hook_runner(command, payload)
        except subprocess.TimeoutExpired:
            log.warning("budget on_alert command timed out", budget=budget.name, command=command,
                        timeout_s=TIMEOUT_SECONDS)
            return
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("budget on_alert command could not run", budget=budget.name, command=command,
                        error=f"{type(exc).__name__}: {exc}")
            return
        if status != 0:
            log.warning("budget on_alert command failed", budget=budget.name, command=command, exit_status=status)
