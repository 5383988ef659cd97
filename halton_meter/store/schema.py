"""The SQLite schema, its versions and migrations.

The schema version lives in `PRAGMA user_version`. Opening a database:

* no file, or an empty one: create the latest schema;
* an older version: copy the file with `VACUUM INTO` (a consistent backup beside it), then migrate;
* a newer version: refuse, naming both versions (never write a schema we do not understand);
* not a SQLite file: refuse, naming the file and what to do. Nothing is moved or deleted.

Why this module is long: the tables, every migration since version 1 and the file checks that guard
opening (SQLite header, declared size, WAL identity, read-only access) change together: a migration read
apart from the schema it produces is how versions drift.
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from halton_meter.errors import DatabaseError
from halton_meter.store import daycache, rawfile, rollup, synclog

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

# The SQLAlchemy tables (`metadata`, `calls`, `gaps`, `captures`, `meta`) are defined on first use: importing
# SQLAlchemy takes longer than a whole `report`, which reads through sqlite3 alone.
_TABLE_NAMES = ("metadata", "calls", "gaps", "captures", "meta")
_tables: dict[str, Any] = {}


CALLS_SPEC: tuple[tuple[str, str, str], ...] = (
    # (name, SQLAlchemy type, constraint): "key", "required", "optional" or "required, default <value>"
    ("id", "Text", "key"),
    ("started_at", "Text", "required"),
    ("ended_at", "Text", "optional"),
    ("recorded_at", "Text", "required"),
    ("provider", "Text", "required"),
    ("endpoint_kind", "Text", "required"),
    ("host", "Text", "required"),
    ("method", "Text", "required"),
    ("path", "Text", "required"),
    ("model", "Text", "optional"),
    ("model_requested", "Text", "optional"),
    ("streamed", "Boolean", "required"),
    ("status", "Integer", "optional"),
    ("complete", "Boolean", "required"),
    ("billable", "Boolean", "required"),
    ("usage_reported", "Boolean", "required"),
    ("estimated", "Boolean", "required"),
    ("input_tokens", "Integer", "required"),
    ("output_tokens", "Integer", "required"),
    ("cache_read_tokens", "Integer", "required"),
    ("cache_write_tokens", "Integer", "required"),
    ("cache_write_1h_tokens", "Integer", "required"),
    ("reasoning_tokens", "Integer", "optional"),
    ("error_type", "Text", "optional"),
    ("incomplete_reason", "Text", "optional"),
    ("cost_nanos", "Integer", "optional"),
    ("priced", "Boolean", "required"),
    ("price_source", "Text", "optional"),
    ("billing", "Text", "required"),
    ("price_provider_id", "Text", "optional"),
    ("project", "Text", "required"),
    ("project_source", "Text", "required"),
    ("client", "Text", "optional"),
    ("client_process", "Text", "optional"),
    ("latency_ms", "Float", "optional"),
    ("ttft_ms", "Float", "optional"),
    ("provider_request_id", "Text", "optional"),
    ("extra", "JSON", "required"),
    ("repo", "Text", "optional"),
    ("branch", "Text", "optional"),
    ("key_fingerprint", "Text", "optional"),
    ("user_agent", "Text", "optional"),
    ("cache_savings_nanos", "Integer", "optional"),
    ("source", "Text", "required, default proxy"),
    ("import_key", "Text", "optional"),
    ("session_id", "Text", "optional"),
)
"""The `calls` table's columns in table order, as plain data: the meter's writer needs only the names, and
importing SQLAlchemy would cost the core about 12 MB of memory for them."""
CALLS_COLUMNS = tuple(name for name, _, _ in CALLS_SPEC)


def __getattr__(name: str) -> Any:
    if name in _TABLE_NAMES:
        if not _tables:
            _tables.update(_define_tables())
        return _tables[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _column(sa: Any, name: str, kind: str, constraint: str) -> Any:
    default = constraint.partition(", default ")[2] or None
    return sa.Column(name, getattr(sa, kind), primary_key=constraint == "key",
                     nullable=constraint == "optional", server_default=default)


def _define_tables() -> dict[str, Any]:
    import sqlalchemy as sa

    metadata = sa.MetaData()
    calls = sa.Table("calls", metadata, *(_column(sa, *column) for column in CALLS_SPEC))

    gaps = sa.Table(
        "gaps",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("project", sa.Text),
        sa.Column("client", sa.Text),
        sa.Column("bytes_up", sa.Integer),
        sa.Column("bytes_down", sa.Integer),
        sa.Column("kind", sa.Text),
        sa.Column("connections", sa.Integer),
        sa.Column("calls", sa.Integer),
        sa.Column("calls_estimated", sa.Integer),
        sa.Column("duration_ms", sa.Float),
        sa.Column("ended_at", sa.Text),
    )

    meta = sa.Table("meta", metadata, sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text))
    captures = sa.Table(
        "captures",
        metadata,
        sa.Column("call_id", sa.Text, primary_key=True),
        sa.Column("request", sa.Text),
        sa.Column("response", sa.Text),
        sa.Column("request_truncated", sa.Boolean, nullable=False),
        sa.Column("response_truncated", sa.Boolean, nullable=False),
    )
    return {"metadata": metadata, "calls": calls, "gaps": gaps, "captures": captures, "meta": meta}


# Each migration takes the database from version N-1 to N. Never edit one that has shipped; add another.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE calls (
            id TEXT PRIMARY KEY,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            recorded_at TEXT NOT NULL,
            provider TEXT NOT NULL,
            endpoint_kind TEXT NOT NULL,
            host TEXT NOT NULL,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            model TEXT,
            model_requested TEXT,
            streamed INTEGER NOT NULL,
            status INTEGER,
            complete INTEGER NOT NULL,
            billable INTEGER NOT NULL,
            usage_reported INTEGER NOT NULL,
            estimated INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER,
            error_type TEXT,
            incomplete_reason TEXT,
            cost_nanos INTEGER,
            priced INTEGER NOT NULL,
            price_source TEXT,
            project TEXT NOT NULL,
            project_source TEXT NOT NULL,
            client TEXT,
            client_process TEXT,
            latency_ms REAL,
            ttft_ms REAL,
            provider_request_id TEXT,
            extra TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX calls_started_at ON calls (started_at)",
    ],
    2: [
        # Calls that passed through unmetered (core down, queue full): counted, never silently missing.
        """CREATE TABLE gaps (
            id TEXT PRIMARY KEY,
            at TEXT NOT NULL,
            host TEXT NOT NULL,
            reason TEXT NOT NULL,
            project TEXT,
            client TEXT,
            bytes_up INTEGER,
            bytes_down INTEGER
        )""",
        "CREATE INDEX gaps_at ON gaps (at)",
        "CREATE INDEX calls_project_started_at ON calls (project, started_at)",
    ],
    3: [
        # How a call is paid for (per token, or covered by a subscription), and which price list it uses,
        # so `reprice` can recompute stored costs.
        "ALTER TABLE calls ADD COLUMN billing TEXT NOT NULL DEFAULT 'api'",
        "ALTER TABLE calls ADD COLUMN price_provider_id TEXT",
    ],
    5: [
        # The database's identity, to recognise a write-ahead log that belongs to another database (the
        # writer touches `writes` on every commit, so our own WAL always carries this page).
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta VALUES ('db_id', lower(hex(randomblob(16))))",
        "INSERT INTO meta VALUES ('writes', '0')",
        f"PRAGMA application_id = {0x484D4554}",
    ],
    6: [
        # Attribution: the git repository and branch the client worked in, a keyed fingerprint of the
        # credential (never the credential), the client's User-Agent; and what cache reads saved against
        # the base input price (NULL when unpriced).
        "ALTER TABLE calls ADD COLUMN repo TEXT",
        "ALTER TABLE calls ADD COLUMN branch TEXT",
        "ALTER TABLE calls ADD COLUMN key_fingerprint TEXT",
        "ALTER TABLE calls ADD COLUMN user_agent TEXT",
        "ALTER TABLE calls ADD COLUMN cache_savings_nanos INTEGER",
    ],
    4: [
        # Opt-in body capture ([capture] projects), redacted; nothing is written here by default.
        """CREATE TABLE captures (
            call_id TEXT PRIMARY KEY,
            request TEXT,
            response TEXT,
            request_truncated INTEGER NOT NULL DEFAULT 0,
            response_truncated INTEGER NOT NULL DEFAULT 0
        )""",
    ],
    # Rollups for fast reports, kept exact by triggers (see halton_meter/store/rollup.py), backfilled.
    7: rollup.migration(),
    8: [
        # Gaps say what they covered (store/gaps.py): a pass-through tunnel is one connection carrying an
        # unknown number of calls (with an estimate, labelled as such); a plain-HTTP request or a record the
        # writer could not keep is exactly one call. Rows from before were one per tunnel or per record.
        "ALTER TABLE gaps ADD COLUMN kind TEXT",
        "ALTER TABLE gaps ADD COLUMN connections INTEGER",
        "ALTER TABLE gaps ADD COLUMN calls INTEGER",
        "ALTER TABLE gaps ADD COLUMN calls_estimated INTEGER",
        "ALTER TABLE gaps ADD COLUMN duration_ms REAL",
        "ALTER TABLE gaps ADD COLUMN ended_at TEXT",
        "UPDATE gaps SET kind = 'record', calls = 1 WHERE reason = 'writer_queue_full'",
        "UPDATE gaps SET kind = 'tunnel', connections = 1 WHERE kind IS NULL",
    ],
    9: [
        # Where a row comes from: `proxy` (metered on the wire) or `import` (read from a tool's own logs by
        # `halton-meter import`, see docs/import.md). An imported call's key in those logs is unique, so an
        # import run twice adds nothing. Both indexes are partial: they hold imported rows only, so the meter's
        # own rows never enter them.
        "ALTER TABLE calls ADD COLUMN source TEXT NOT NULL DEFAULT 'proxy'",
        "ALTER TABLE calls ADD COLUMN import_key TEXT",
        "CREATE UNIQUE INDEX calls_import_key ON calls (import_key) WHERE import_key IS NOT NULL",
        "CREATE INDEX calls_imported_started_at ON calls (started_at) WHERE source = 'import'",
    ],
    10: [
        # Self-test rows (the meter's canary) belong to no project: the project is the empty string, which no
        # project can be named, so no `projects`, `retag` or `--project` count includes them.
        "UPDATE calls SET project = '', project_source = 'self-test' WHERE endpoint_kind = 'self_test'",
    ],
    11: [
        # The dashboard's call explorer (store/explore.py) pages newest first on (started_at, id), never by
        # OFFSET, under one filter or none: each filter gets an index on the very expression it compares, then
        # started_at (ties on started_at, rare, are put in id order from the rowid the index carries), and the
        # rare statuses a partial index, so a first page is a seek whatever the filter. `project` and no filter
        # have theirs since migrations 1 and 2. The search by provider request id is an exact lookup.
        "CREATE INDEX calls_x_model ON calls (coalesce(model, model_requested, ''), started_at)",
        "CREATE INDEX calls_x_provider ON calls (provider, started_at)",
        "CREATE INDEX calls_x_client ON calls (ifnull(client, ''), started_at)",
        "CREATE INDEX calls_x_branch ON calls (ifnull(branch, ''), started_at)",
        "CREATE INDEX calls_x_key ON calls (ifnull(key_fingerprint, ''), started_at)",
        "CREATE INDEX calls_x_request_id ON calls (provider_request_id) WHERE provider_request_id IS NOT NULL",
        "CREATE INDEX calls_x_error ON calls (started_at) WHERE error_type IS NOT NULL",
        "CREATE INDEX calls_x_incomplete ON calls (started_at) WHERE complete = 0",
        "CREATE INDEX calls_x_estimated ON calls (started_at) WHERE estimated != 0",
        "CREATE INDEX calls_x_unpriced ON calls (started_at) WHERE billable != 0 AND priced = 0",
        "CREATE INDEX calls_x_subscription ON calls (started_at) WHERE billing = 'subscription'",
    ],
    # A count of the writes that change rollup buckets older than 6 hours (reprice, retag, import, hand-run
    # SQL): the dashboard caches closed days' sums while it stays the same (store/daycache.py).
    12: daycache.migration(),
    13: [
        # Subscription plans and rate limits (docs/plans.md). A call's client session (Claude Code, Codex),
        # for the statusline's session cost; and what the provider's rate-limit headers said on each
        # response: one row per window, only the figures (utilization, reset, status, limit and remaining),
        # never another header. Unique per call and window, so a final row written twice adds nothing.
        "ALTER TABLE calls ADD COLUMN session_id TEXT",
        "CREATE INDEX calls_session ON calls (session_id, started_at) WHERE session_id IS NOT NULL",
        """CREATE TABLE plan_snapshots (
            id INTEGER PRIMARY KEY,
            call_id TEXT NOT NULL,
            seen_at TEXT NOT NULL,
            provider TEXT NOT NULL,
            account TEXT NOT NULL,
            kind TEXT NOT NULL,
            window TEXT NOT NULL,
            window_minutes INTEGER,
            utilization REAL,
            resets_at TEXT,
            status TEXT,
            limit_value INTEGER,
            remaining INTEGER,
            claim TEXT,
            fallback_percentage REAL,
            UNIQUE (call_id, window)
        )""",
        "CREATE INDEX plan_snapshots_window ON plan_snapshots (account, window, seen_at)",
        "CREATE INDEX plan_snapshots_seen ON plan_snapshots (seen_at)",
    ],
    15: synclog.migration(),
    14: [
        # Budgets' history (docs/budgets.md): thresholds crossed (`warn` at a fraction, `limit` at 1.0), at
        # most once per budget, period and threshold (the unique index); overrides (`override` until a time,
        # `override_cleared`); `spend_unknown` when the meter could not read a budget's spend (calls passed).
        """CREATE TABLE budget_events (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            budget TEXT NOT NULL,
            period_start TEXT NOT NULL,
            kind TEXT NOT NULL,
            threshold REAL,
            spent_nanos INTEGER,
            limit_nanos INTEGER,
            until TEXT,
            detail TEXT
        )""",
        "CREATE UNIQUE INDEX budget_events_once ON budget_events (budget, period_start, kind, threshold) "
        "WHERE kind IN ('warn', 'limit')",
        "CREATE INDEX budget_events_budget ON budget_events (budget, at)",
    ],
}
MIGRATIONS = dict(sorted(MIGRATIONS.items()))
LATEST_VERSION = max(MIGRATIONS)

SQLITE_HEADER = b"SQLite format 3\x00"


def _prepare_file(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite would use the umask, often 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        return
    header, _ = rawfile.read_start(path, len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise DatabaseError(
            f"database {path} is not a valid SQLite file; nothing was moved. Move it aside "
            f"(mv {path} {path}.corrupt) and Halton Meter will start a new one"
        )


CONNECTION_PRAGMAS = ("PRAGMA busy_timeout = 5000", "PRAGMA synchronous = NORMAL")
"""Run on every connection that writes (SQLAlchemy engines from `make_engine`, the writer's own connection)."""


def connect(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with the engine's pragmas, in autocommit mode (the caller issues BEGIN
    IMMEDIATE / COMMIT itself), usable from a thread other than the one that opened it (one at a time)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        for pragma in CONNECTION_PRAGMAS:
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


def make_engine(path: Path, *, immediate: bool = False, read_only: bool = False) -> Engine:
    """An engine on the database file. `immediate`: transactions take the write lock at BEGIN, so a writer
    never deadlocks upgrading a read lock (SQLite's BEGIN IMMEDIATE). `read_only`: connections from
    `connect_read_only` (reports, `calls`: they work on a read-only file system too)."""
    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy.pool import NullPool

    if read_only:
        engine = sa.create_engine("sqlite://", poolclass=NullPool, creator=lambda: connect_read_only(path))
    else:
        engine = sa.create_engine(f"sqlite:///{path}", poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in CONNECTION_PRAGMAS if not read_only else ("PRAGMA busy_timeout = 5000",):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def declared_size(header: bytes) -> int | None:
    """The database size (bytes) the SQLite header declares, when it is valid (the "version-valid-for" number
    matches the change counter), else None. Our files never shrink (no VACUUM, no auto-vacuum), so a file
    shorter than this was truncated."""
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        return None
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid_size = 512 <= page_size <= 65536 and page_size & (page_size - 1) == 0
    fixed = header[18] in (1, 2) and header[19] in (1, 2) and header[21:24] == b"\x40\x20\x20"
    if header[92:96] != header[24:28] or not pages or not valid_size or not fixed:
        return None  # not a header SQLite itself would trust: the other checks say what is wrong
    return pages * page_size


def wal_pages(path: Path, page_size: int) -> set[int]:
    """Page numbers the write-ahead log holds in committed frames of its current generation (frames whose
    salts match the log's header, up to the last commit frame). Empty when there is no usable log."""
    wal = path.with_name(path.name + "-wal")
    pages: set[int] = set()
    try:
        with wal.open("rb") as fh:
            header = fh.read(32)
            if len(header) < 32 or int.from_bytes(header[0:4], "big") not in (0x377F0682, 0x377F0683) \
                    or int.from_bytes(header[8:12], "big") != page_size:
                return pages
            salts = header[16:24]
            pending: set[int] = set()
            while True:
                frame = fh.read(24)
                if len(frame) < 24 or frame[8:16] != salts:
                    break
                pending.add(int.from_bytes(frame[0:4], "big"))
                if int.from_bytes(frame[4:8], "big"):  # a commit frame: what came before it counts
                    pages |= pending
                    pending = set()
                fh.seek(page_size, os.SEEK_CUR)
    except OSError:
        return pages
    return pages


def check_intact(path: Path, settle: int = 5) -> None:
    """DatabaseError (exit 3) when the file is shorter than its own header says and the write-ahead log
    does not hold the missing pages: it was truncated (by a sync client, a bad restore, `: > db.sqlite`).
    Costs a 100-byte read in the common case. A checkpoint writes the header page before the pages that
    extend the file, and one cut short (a full disk) leaves those pages in the log, which is fine; a short
    file is also looked at again `settle` times, 50 ms apart, before it is called truncated."""
    for attempt in range(settle + 1):
        try:
            header, size = rawfile.read_start(path, 100)
        except OSError:
            return
        declared = declared_size(header)
        if declared is None or size >= declared:
            return
        page_size = declared // int.from_bytes(header[28:32], "big")
        first_missing, last = size // page_size + 1, declared // page_size
        held = sum(1 for page in wal_pages(path, page_size) if first_missing <= page <= last)
        if held == last - first_missing + 1:
            return  # an unfinished checkpoint: the log has every page the file lacks
        if attempt < settle:
            time.sleep(0.05)
    if declared is not None and size < declared:
        raise DatabaseError(
            f"database {path} is truncated: it holds {size:,} bytes of the {declared:,} its header declares, so "
            f"rows are missing; nothing was changed. Move it aside (mv {path} {path}.truncated) and restore a "
            f"backup (db.sqlite.v*.bak beside it), or let Halton Meter start a new one"
        )


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _backup(conn: sqlite3.Connection, path: Path, version: int) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.v{version}-{stamp}.bak")
    conn.execute("VACUUM INTO ?", (str(backup),))
    os.chmod(backup, 0o600)
    return backup


def _db_id(uri: str) -> str | None:
    conn = sqlite3.connect(uri, uri=True, timeout=5)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
            return None
        row = conn.execute("SELECT value FROM meta WHERE key='db_id'").fetchone()
        return row[0] if row else None
    finally:
        conn.close()


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One BEGIN IMMEDIATE transaction on an autocommit connection: committed when the block ends, rolled
    back when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def check_wal_belongs(path: Path) -> None:
    """Refuse a write-ahead log that belongs to another database: SQLite would silently replay it over
    ours. The identity read from the main file alone must match the one read with the log applied."""
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        return
    try:
        own = _db_id(f"file:{path}?immutable=1")
    except sqlite3.DatabaseError:
        return  # the main file itself is checked (and refused if bad) by the caller
    if own is None:
        return  # no identity yet (created before schema v5, or by a migration still in the log)
    try:
        live = _db_id(f"file:{path}?mode=ro")
    except sqlite3.DatabaseError:
        live = None
    if live != own:
        raise DatabaseError(
            f"database {path} has a write-ahead log ({wal.name}) that belongs to another database; nothing was "
            f"changed. Move {wal.name} and {path.name}-shm aside, then start again"
        )


def migrate(path: Path, on_start: Callable[[int, int], None] | None = None) -> Path | None:
    """Bring the database at `path` to LATEST_VERSION. Returns the backup made, if any. `on_start(from, to)`
    is called once before a migration that has work to do (a large database can take a while: the
    backup copies it, and building the rollups reads every call)."""
    _prepare_file(path)
    check_intact(path)
    check_wal_belongs(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from None
    try:
        try:
            version = _version(conn)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(
                f"database {path} is not a valid SQLite file ({exc}); nothing was moved. Move it aside "
                f"(mv {path} {path}.corrupt) and Halton Meter will start a new one"
            ) from None
        if version > LATEST_VERSION:
            raise DatabaseError(
                f"database {path} has schema version {version}, newer than this Halton Meter understands "
                f"({LATEST_VERSION}); upgrade halton-meter (pip install -U halton-meter)"
            )
        if version == LATEST_VERSION:
            return None
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise DatabaseError(
                f"database {path} holds tables but was not created by Halton Meter; nothing was changed. "
                f"Move it aside (mv {path} {path}.foreign) or set HALTON_METER_HOME elsewhere"
            )
        if on_start is not None and version > 0:  # a new database is made in moments: no upgrade to announce
            on_start(version, LATEST_VERSION)
        backup = _backup(conn, path, version) if version > 0 else None
        for target in range(version + 1, LATEST_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return backup
    except sqlite3.OperationalError as exc:
        raise DatabaseError(f"cannot prepare database {path}: {exc}") from None
    finally:
        conn.close()


def read_only_uri(path: Path) -> str:
    """A URI that reads the database without changing anything beside it: `mode=ro` while a write-ahead
    log exists (a meter is using the file, so its recent commits are there), else `immutable=1`, which
    creates no `-wal` or `-shm` files next to a file nobody is writing."""
    wal = path.with_name(path.name + "-wal")
    return f"file:{path}?mode=ro" if wal.exists() else f"file:{path}?immutable=1"


def connect_read_only(path: Path, timeout: float = 5.0) -> sqlite3.Connection:
    """A read-only connection that also works where nothing may be written beside the file (a read-only
    file system, a directory you cannot write): `mode=ro` first (it sees a running meter's latest commits);
    if SQLite cannot open it that way (it needs to create `-shm`), `immutable=1` when no write-ahead log
    is there to read."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError:
        if path.with_name(path.name + "-wal").exists():
            raise
        return sqlite3.connect(f"file:{path}?immutable=1", uri=True, timeout=timeout)


def check_readable(path: Path) -> int:
    """Read-only: the schema version, or DatabaseError when the file is unusable or too new."""
    if not path.exists():
        raise DatabaseError(f"no database at {path} yet; start the meter with `halton-meter serve`",
                            exit_code=None)
    conn, version = _open_checked(path)
    conn.close()
    return version


def _open_checked(path: Path) -> tuple[sqlite3.Connection, int]:
    """A read-only connection to the existing file at `path` and its schema version, after the checks every
    reader makes: a SQLite header, intact, readable, not newer than this version. DatabaseError otherwise."""
    try:
        start, _ = rawfile.read_start(path, len(SQLITE_HEADER))
    except OSError as exc:
        raise DatabaseError(f"database {path} is not readable ({exc.strerror})") from None
    if start not in (SQLITE_HEADER, b""):
        raise DatabaseError(f"database {path} is not a valid SQLite file; move it aside and restart the meter")
    check_intact(path)
    try:
        conn = connect_read_only(path)
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"database {path} is not readable ({exc})") from None
    try:
        version = _version(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise DatabaseError(f"database {path} is not readable ({exc})") from None
    if version > LATEST_VERSION:
        conn.close()
        raise DatabaseError(
            f"database {path} has schema version {version}, newer than this Halton Meter ({LATEST_VERSION}); "
            "upgrade halton-meter"
        )
    return conn, version


def open_initialised(path: Path) -> sqlite3.Connection | None:
    """`initialised` and `check_readable` on one read-only connection, returned open (None when there is no
    schema yet): what a reader answering many small requests (the API) opens once per request."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    conn, version = _open_checked(path)
    if version == 0:
        conn.close()
        return None
    return conn


def initialised(path: Path) -> bool:
    """Whether there is a database with a schema at `path` (the meter creates it on first start; until then,
    or while the file is still empty, readers show nothing). DatabaseError when the file is unusable."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    return check_readable(path) > 0
