"""`halton-meter statusline`: one line for Claude Code's status line, from the database, in a cold process.

Claude Code runs the command after every assistant message with a JSON object on standard input
(`session_id`, `model`, `workspace`, …) and shows the line it prints. So this module is built for a cold
start (docs/statusline.md gives the figure), not for reuse:

* It imports `sqlite3`, `datetime` and builtin modules only: no click, rich, pluggy, sqlalchemy, structlog
  or mitmproxy, no other `halton_meter` module (`halton_meter/__init__.py` is lazy about pluggy), and not
  even `re` or `json` on the normal path (together about 15 ms of a cold start): standard input is decoded
  with `_json`'s C scanner (what `json.loads` runs; `json` itself only as a fallback) and templates are
  read by hand. `halton_meter.__main__` sends `statusline` here before click is imported.
* It reads `$HALTON_METER_HOME/db.sqlite` directly, read-only (`mode=ro`), in one read transaction, and
  never talks to the meter: a stopped meter changes nothing. It never writes and never prompts.
* Every figure is an indexed lookup. The session's cost comes from the `calls_session` index; today's cost
  and the project's month-to-date come from the rollup (`store/rollup.py`): whole 15-minute buckets from
  `rollup`, the rows before the first and after the last whole bucket from `calls`, with the rollup's own
  exclusion rule (`CONTRIBUTES`, copied so the store stays unimported; a test holds the two equal). A
  database older than the rollup is read from `calls` alone.
* All money figures are sums of `cost_nanos`: what the calls cost at API list price, calls covered by a
  subscription included (in `report --json` terms, `cost_usd + subscription_list_price_usd`).
* Plan windows: the latest `plan_snapshots` row (kind `plan`) per window of the account that made the
  session's latest call or, before the session's first call, of the account whose plan was seen last.
* It never fails: whatever goes wrong (no input, bad JSON, no database, an older schema, a locked file, a
  bad `--format`) ends as the figures it could read or one short line, and exit status 0 (Claude Code
  blanks the line on any other).

Why this module is long: it is the whole fast path (input, queries, plan windows, template) in one file on
purpose: every module a cold start imports costs it time, and nothing here is shared with the rest.

`HALTON_METER_STATUSLINE_NOW` (epoch seconds or ISO 8601) fixes "now", for tests; the zone is the
process's (`TZ`).
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import sys
import time

TYPE_CHECKING = False  # typing itself is not imported: a cold start pays for every module
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    Pieces = list[tuple[str, str]]
    """A placeholder's value: pieces of text with their colour ('' for none), joined by ` · `."""

NOW_ENV = "HALTON_METER_STATUSLINE_NOW"
HOME_ENV = "HALTON_METER_HOME"
BUCKET_SECONDS = 900
CONTRIBUTES = "X.endpoint_kind IS NOT 'self_test' AND X.incomplete_reason IS NOT 'in_progress'"
"""store.rollup.CONTRIBUTES: the calls the rollup counts (no self-tests, no rows of calls still in flight)."""
SEPARATOR = " · "
DEFAULT_FORMAT = "{session} session · {today} today · {project} {month} month · {plan}"
PLACEHOLDERS = ("session", "today", "month", "project", "plan", "5h", "7d", "model")
"""Besides these, any plan window's name is a placeholder (`{7d_opus}`): a digit first, then [a-z0-9_]."""
FIRST_WINDOWS = ("5h", "7d")
NOT_WINDOWS = ("unified", "overage")
"""Plan rows that carry the account's overall status, not a window's use."""
RED, YELLOW, RESET = "\033[31m", "\033[33m", "\033[0m"
BUSY_TIMEOUT = 0.25
STDIN_WAIT = 1.0
STDIN_LIMIT = 1 << 20
PREFIX = "halton-meter statusline:"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the line; always return 0."""
    try:
        line = build_line(list(sys.argv[2:] if argv is None else argv))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # never a traceback in the status line: one line saying what broke
        line = f"halton-meter: statusline failed ({type(exc).__name__}: {exc})"[:200]
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (OSError, ValueError, KeyboardInterrupt):  # a closed pipe or stdout: nobody to tell
        pass
    return 0


def build_line(argv: list[str]) -> str:
    template, problem = parse_args(argv)
    if problem is None:
        problem = check_template(template)
    if problem is not None:
        return problem
    given = parse_input(read_stdin())
    now = current_time()
    path = database_path()
    if not os.path.exists(path):
        return "halton-meter: no calls yet (no database)"
    try:
        conn = open_read_only(path)
    except sqlite3.Error as exc:
        return _db_problem(path, exc)
    try:
        conn.execute("BEGIN")  # one snapshot for every figure
        values = gather(conn, given, now)
    except sqlite3.Error as exc:
        return _db_problem(path, exc)
    finally:
        conn.close()
    if values is None:
        return "halton-meter: no calls yet"
    if given.get("model"):
        values["model"] = [(given["model"], "")]
    return render(template, values, colour="NO_COLOR" not in os.environ)


def _db_problem(path: str, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return "halton-meter: database busy, shown next time"
    return f"halton-meter: cannot read {path} ({text})"


# ---- input -------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> tuple[str, str | None]:
    """(template, problem): `--format TEMPLATE` or `--format=TEMPLATE`, nothing else."""
    template = DEFAULT_FORMAT
    args = iter(argv)
    for arg in args:
        if arg == "--format":
            value = next(args, None)
            if value is None:
                return template, f"{PREFIX} --format needs a TEMPLATE, e.g. --format '{{today}} today'"
            template = value
        elif arg.startswith("--format="):
            template = arg.partition("=")[2]
        else:
            return template, f"{PREFIX} unknown argument {arg!r} (usage: halton-meter statusline [--format TEMPLATE])"
    return template, None


def read_stdin() -> bytes:
    """What Claude Code sent: nothing from a terminal, at most STDIN_LIMIT bytes, and no more than
    STDIN_WAIT seconds of waiting on a writer that never closes the pipe."""
    try:
        if sys.stdin is None or sys.stdin.isatty():
            return b""
        fd = sys.stdin.fileno()
    except (OSError, ValueError):
        return b""
    wait = _waiter(fd)
    chunks: list[bytes] = []
    size = 0
    while size < STDIN_LIMIT and wait():
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:STDIN_LIMIT]


def _waiter(fd: int) -> Callable[[], bool]:
    """A function that waits (until the deadline) for `fd` to be readable; on Windows, reads just block."""
    if os.name == "nt":
        return lambda: True
    import select

    deadline = time.monotonic() + STDIN_WAIT

    def wait() -> bool:
        left = deadline - time.monotonic()
        try:
            return left > 0 and bool(select.select([fd], [], [], left)[0])
        except (OSError, ValueError):
            return True
    return wait


def parse_input(raw: bytes) -> dict[str, str]:
    """The fields used: `session_id` and `model` (display name, else id). From bad JSON, the session id if
    one can be seen in the text; anything else unusable is ignored."""
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return {}
    data = _json_object(text)
    if data is None:
        return _salvage(text)
    given: dict[str, str] = {}
    session = data.get("session_id")
    if isinstance(session, str) and session.strip() and len(session) <= 200:
        given["session_id"] = session.strip()
    model = data.get("model")
    if isinstance(model, dict):
        name = model.get("display_name") or model.get("id")
        if isinstance(name, str):
            given["model"] = "".join(ch for ch in name if ch.isprintable())[:80]
    return given


class _Decoding:
    """The settings `_json.make_scanner` reads: those of a plain `json.loads`."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int, parse_constant = float, int, float


def _json_object(text: str) -> dict[str, Any] | None:
    """A JSON object at the start of `text`, or None. The C scanner behind `json.loads` decodes it without
    importing `json` (and `re`); `json` is only imported to raise a decoding error, or where `_json` is
    missing."""
    try:
        import _json

        data, _ = _json.make_scanner(_Decoding())(text, 0)  # type: ignore[arg-type]
    except ImportError:
        import json

        try:
            data = json.loads(text)
        except ValueError:
            return None
    except (StopIteration, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _salvage(text: str) -> dict[str, str]:
    import re

    found = re.search(r'"session_id"\s*:\s*"([^"\\]{1,200})"', text)
    return {"session_id": found.group(1).strip()} if found and found.group(1).strip() else {}


def current_time() -> float:
    """Now, or HALTON_METER_STATUSLINE_NOW (epoch seconds or ISO 8601; UTC unless it says) when valid."""
    fixed = os.environ.get(NOW_ENV, "").strip()
    try:
        return float(fixed)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(fixed)
    except ValueError:
        return time.time()
    return (moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)).timestamp()


def database_path() -> str:
    """`$HALTON_METER_HOME/db.sqlite`, the home found as `halton_meter.paths.default_home` finds it (which
    would import pathlib and dataclasses: milliseconds a status line does not have)."""
    configured = os.environ.get(HOME_ENV)
    home = os.path.expanduser(configured) if configured else os.path.join(_user_home(), ".halton-meter")
    return os.path.join(home, "db.sqlite")


def _user_home() -> str:
    home = os.environ.get("HOME")
    if home:
        return home
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        return os.path.expanduser("~")


def open_read_only(path: str) -> sqlite3.Connection:
    """As `store.schema.connect_read_only`: `mode=ro` (sees a running meter's latest commits); where SQLite
    cannot open it so (no `-shm` can be made beside it), `immutable=1` when there is no write-ahead log."""
    uri = "file:" + path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    try:
        conn = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or os.path.exists(path + "-wal"):
            raise
        return sqlite3.connect(uri + "?immutable=1", uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)


# ---- the figures -------------------------------------------------------------------------------------------


class Schema:
    """What this database has: older ones lack the rollup (before 7), `session_id` and `plan_snapshots`
    (before 13)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.calls = "calls" in tables
        self.rollup = {"rollup", "rollup_dims"} <= tables
        self.plans = "plan_snapshots" in tables
        columns = {row[1] for row in conn.execute("PRAGMA table_info(calls)")} if self.calls else set()
        self.session = "session_id" in columns


def gather(conn: sqlite3.Connection, given: dict[str, str], now: float) -> dict[str, Pieces] | None:
    """The placeholders' values (missing ones absent), or None when there are no calls at all."""
    schema = Schema(conn)
    if not schema.calls or conn.execute("SELECT 1 FROM calls LIMIT 1").fetchone() is None:
        return None
    figures: dict[str, str | None] = {}
    session = given.get("session_id") if schema.session else None
    latest = _optional(lambda: _session_latest(conn, session)) if session else None
    if session:
        figures["session"] = dollars(_optional(lambda: session_cost(conn, session)))
    figures["today"] = dollars(_optional(lambda: window_cost(conn, schema, local_midnight(now), now)))
    if latest is not None and latest[0]:
        figures["project"] = latest[0]
        figures["month"] = dollars(_optional(lambda: window_cost(conn, schema, month_start(now), now, latest[0])))
    values = {name: [(text, "")] for name, text in figures.items() if text}
    if schema.plans:
        account = latest[1] if latest is not None else _optional(lambda: last_plan_account(conn))
        if account is not None:
            values.update(plan_values(_optional(lambda: plan_windows(conn, account)) or [], now))
    return values


def _optional(read: Callable[[], Any]) -> Any:
    """A figure that may be missing (a locked page, a table of a shape not foreseen): None, not a failure."""
    try:
        return read()
    except sqlite3.Error:
        return None


def dollars(nanos: int | None) -> str | None:
    """Nano-dollars as `$1,234.57` (rounded half up to the cent); None for None."""
    if nanos is None:
        return None
    cents = (abs(nanos) + 5_000_000) // 10_000_000
    return f"{'-' if nanos < 0 else ''}${cents // 100:,}.{cents % 100:02d}"


def _session_latest(conn: sqlite3.Connection, session: str) -> tuple[str, str] | None:
    """(project, account) of the session's most recent call, or None before its first."""
    row = conn.execute("SELECT project, ifnull(key_fingerprint, '') FROM calls WHERE session_id = ? "
                       "ORDER BY started_at DESC LIMIT 1", (session,)).fetchone()
    return (row[0] or "", row[1]) if row else None


def session_cost(conn: sqlite3.Connection, session: str) -> int:
    sql = f"SELECT sum(X.cost_nanos) FROM calls AS X WHERE X.session_id = ? AND {CONTRIBUTES}"
    return int(conn.execute(sql, (session,)).fetchone()[0] or 0)


def local_midnight(now: float) -> float:
    """00:00 local today, as the report takes it (`timewindow.local_midnight`)."""
    day = datetime.datetime.fromtimestamp(now).date()
    return datetime.datetime.combine(day, datetime.time()).astimezone().timestamp()


def month_start(now: float) -> float:
    day = datetime.datetime.fromtimestamp(now).date().replace(day=1)
    return datetime.datetime.combine(day, datetime.time()).astimezone().timestamp()


def iso(epoch: float) -> str:
    """As `started_at` is stored: UTC, microseconds, Z (sorts as text)."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def window_cost(conn: sqlite3.Connection, schema: Schema, since: float, until: float, project: str | None = None) -> int:
    """Sum of cost_nanos of the calls with since <= started_at < until (of `project`, if given): the whole
    15-minute buckets inside from `rollup`, the edges from `calls` (as `store.aggregate.collect` does)."""
    first = int(-(-since // BUCKET_SECONDS)) * BUCKET_SECONDS  # the first bucket edge at or after `since`
    last = int(until // BUCKET_SECONDS) * BUCKET_SECONDS
    if not schema.rollup or first >= last:
        return _raw_cost(conn, [(since, until)], project)
    edges = [(a, b) for a, b in ((since, first), (last, until)) if a < b]
    sql = "SELECT sum(cost_nanos) FROM rollup WHERE bucket >= ? AND bucket < ?"
    if project is not None:
        sql += " AND dims IN (SELECT id FROM rollup_dims WHERE project = ?)"
    rolled = conn.execute(sql, (first, last) if project is None else (first, last, project)).fetchone()[0]
    return int(rolled or 0) + _raw_cost(conn, edges, project)


def _raw_cost(conn: sqlite3.Connection, ranges: list[tuple[float, float]], project: str | None) -> int:
    total = 0
    for since, until in ranges:
        sql = f"SELECT sum(X.cost_nanos) FROM calls AS X WHERE X.started_at >= ? AND X.started_at < ? AND {CONTRIBUTES}"
        params = [iso(since), iso(until)]
        if project is not None:
            sql += " AND X.project = ?"
            params.append(project)
        total += int(conn.execute(sql, params).fetchone()[0] or 0)
    return total


# ---- plan windows ------------------------------------------------------------------------------------------


def _next_value(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...], limit: int = 64) -> list[Any]:
    """Distinct values by repeated index seeks (a skip scan): `sql` selects min(value) above the last one,
    whose bound is the final parameter."""
    found: list[Any] = []
    value = conn.execute(sql, (*params, "")).fetchone()[0]
    while value is not None and len(found) < limit:
        found.append(value)
        value = conn.execute(sql, (*params, value)).fetchone()[0]
    return found


def _latest_rows(conn: sqlite3.Connection, account: str) -> list[tuple[Any, ...]]:
    """The latest row of each of `account`'s windows: (window, seen_at, kind, utilization, resets_at,
    status), one index seek per window."""
    windows = _next_value(conn, "SELECT min(window) FROM plan_snapshots WHERE account = ? AND window > ?", (account,))
    return [conn.execute("SELECT window, seen_at, kind, utilization, resets_at, status FROM plan_snapshots "
                         "WHERE account = ? AND window = ? ORDER BY seen_at DESC, id DESC LIMIT 1",
                         (account, window)).fetchone() for window in windows]


def plan_windows(conn: sqlite3.Connection, account: str) -> list[tuple[Any, ...]]:
    """`account`'s plan windows (kind 'plan', not the overall status rows), 5h and 7d first."""
    rows = [r for r in _latest_rows(conn, account) if r[2] == "plan" and r[0] not in NOT_WINDOWS]
    order = {name: i for i, name in enumerate(FIRST_WINDOWS)}
    return sorted(rows, key=lambda r: (order.get(r[0], len(order)), r[0]))


def last_plan_account(conn: sqlite3.Connection) -> str | None:
    """The account whose plan was seen most recently."""
    seen = []
    for account in _next_value(conn, "SELECT min(account) FROM plan_snapshots WHERE account > ?", ()):
        seen += [(r[1], account) for r in _latest_rows(conn, account) if r[2] == "plan"]
    return max(seen)[1] if seen else None


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)).timestamp()


def window_text(row: tuple[Any, ...], now: float) -> tuple[str, str] | None:
    """(text, colour) of one window: `62% ↻14:05`. A window past its reset reads 0%. The reset time shows
    for the 5-hour window, and for any other once it is hot (75% or more, or rejected)."""
    name, _, _, utilization, resets_at, status = row
    reset = _epoch(resets_at)
    if reset is not None and reset <= now:
        return "0%", ""
    if utilization is None and status != "rejected":
        return None
    used = float(utilization) if utilization is not None else 1.0
    colour = RED if status == "rejected" or used >= 0.9 else YELLOW if used >= 0.75 else ""
    text = f"{int(used * 100 + 0.5)}%"
    if reset is not None and (name == "5h" or colour):
        text += f" ↻{reset_text(reset, now)}"
    return text, colour


def reset_text(reset: float, now: float) -> str:
    """Local HH:MM; with the weekday (`Mon 09:00`) when more than 24 hours away."""
    return time.strftime("%a %H:%M" if reset - now > 86400 else "%H:%M", time.localtime(reset))


def plan_values(rows: list[tuple[Any, ...]], now: float) -> dict[str, Pieces]:
    """Each window under its own name (`{5h}`: `62% ↻14:05`), and `plan`: all of them, named."""
    values: dict[str, Pieces] = {"plan": []}
    for row in rows:
        shown = window_text(row, now)
        if shown is not None:
            values[row[0]] = [shown]
            values["plan"].append((f"{row[0]} {shown[0]}", shown[1]))
    return values


# ---- the template ------------------------------------------------------------------------------------------


def tokens(template: str) -> list[tuple[str, str]]:
    """The template as ('text', literal) and ('field', name) pieces; `{{` and `}}` are literal braces. An
    unmatched brace is a ('bad', …) piece."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(template):
        ch = template[i]
        if template.startswith(("{{", "}}"), i):
            out.append(("text", ch))
            i += 2
        elif ch == "{" and (end := template.find("}", i)) > i and "{" not in template[i + 1:end]:
            out.append(("field", template[i + 1:end]))
            i = end + 1
        elif ch in "{}":
            out.append(("bad", ch))
            i += 1
        else:
            out.append(("text", ch))
            i += 1
    return out


def known(name: str) -> bool:
    return name in PLACEHOLDERS or (name[:1].isdigit() and all(c.isdigit() or "a" <= c <= "z" or c == "_"
                                                                for c in name))


def check_template(template: str) -> str | None:
    """One line naming what is wrong with a `--format` template, or None."""
    for kind, value in tokens(template):
        if kind == "bad":
            return f"{PREFIX} unmatched {value!r} in --format (write {{{{ or }}}} for a literal brace)"
        if kind == "field" and not known(value):
            names = " ".join("{" + p + "}" for p in PLACEHOLDERS)
            return f"{PREFIX} unknown placeholder {{{value}}} in --format (use {names})"
    return None


def render(template: str, values: dict[str, Pieces], colour: bool) -> str:
    """The template with its placeholders filled. The template is cut at ` · `; a piece whose placeholders
    are all empty is left out with its separator, so a missing figure leaves no dangling label."""
    kept = []
    for piece in template.split(SEPARATOR):
        parts = tokens(piece)
        names = [value for kind, value in parts if kind == "field"]
        if names and not any(values.get(name) for name in names):
            continue
        kept.append("".join(value if kind != "field" else _fill(values.get(value, []), colour)
                            for kind, value in parts))
    return SEPARATOR.join(kept)


def _fill(pieces: Pieces, colour: bool) -> str:
    return SEPARATOR.join(f"{tint}{text}{RESET}" if colour and tint else text for text, tint in pieces)
