"""`sync.postgres`: every meter's rows in one team PostgreSQL (docs/sync.md), through psycopg 3
(`pip install 'halton-meter[postgres]'`) directly: its `COPY` is what makes a million-row backfill take a
minute, and SQLAlchemy would add nothing here but an import.

Config (`[[sync]]` with `target = "postgres"`):

* `url` — `postgresql://user@host:5432/db` (no password in it: a URL is shown in `sync status`);
* `password_env = "NAME"` or `password_file = "path"` (the file must be 0600) — never logged;
* `schema` — default `halton_meter`.

Schema (versioned in `<schema>.schema_version`, created and migrated on first use): `calls`, keyed by call
id, with the machine id, the user label, a `version` and every field the meter sends; and the views
`team_daily` (per day, user, machine, project, provider, model: calls, tokens, cost) the team report and
the Grafana dashboard read.

Writing: a batch is copied (`COPY`) into a temporary table and merged with one `INSERT … ON CONFLICT (id)
DO UPDATE … WHERE calls.version <= excluded.version`, so a replay, or an older version arriving late,
never overwrites newer data.
"""

from __future__ import annotations

import operator
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from halton_meter.plugin import ConfigError, SyncTarget, hookimpl

SCHEMA_VERSION = 1
KEYS = {"url", "password_env", "password_file", "schema"}
COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "text PRIMARY KEY"), ("version", "bigint NOT NULL"), ("machine_id", "text NOT NULL"),
    ("user_label", "text NOT NULL"), ("started_at", "timestamptz NOT NULL"), ("ended_at", "timestamptz"),
    ("provider", "text NOT NULL"), ("endpoint_kind", "text"), ("host", "text"), ("method", "text"), ("path", "text"),
    ("model", "text"), ("model_requested", "text"), ("streamed", "boolean"), ("status", "integer"),
    ("complete", "boolean"), ("billable", "boolean"), ("usage_reported", "boolean"), ("estimated", "boolean"),
    ("input_tokens", "bigint"), ("output_tokens", "bigint"), ("cache_read_tokens", "bigint"),
    ("cache_write_tokens", "bigint"), ("cache_write_1h_tokens", "bigint"), ("reasoning_tokens", "bigint"),
    ("error_type", "text"), ("incomplete_reason", "text"), ("cost_nanos", "bigint"), ("priced", "boolean"),
    ("price_source", "text"), ("billing", "text"), ("project", "text"), ("project_source", "text"), ("repo", "text"),
    ("branch", "text"), ("client", "text"), ("client_process", "text"), ("user_agent", "text"),
    ("key_fingerprint", "text"), ("cache_savings_nanos", "bigint"), ("latency_ms", "double precision"),
    ("ttft_ms", "double precision"), ("provider_request_id", "text"), ("source", "text"), ("session_id", "text"),
    ("extra", "jsonb"),
)
NAMES = [name for name, _ in COLUMNS]
_BOOLEAN_AT = [i for i, (name, kind) in enumerate(COLUMNS) if kind == "boolean"]
_EXTRA_AT = NAMES.index("extra")


def _password(options: Mapping[str, Any], where: str) -> str | None:
    if "password_env" in options:
        name = options["password_env"]
        value = os.environ.get(name) if isinstance(name, str) else None
        if value is None:
            raise ConfigError(f"{where}: password_env names {name!r}, which is not set in the meter's environment")
        return value
    if "password_file" in options:
        path = Path(str(options["password_file"])).expanduser()
        try:
            mode = path.stat().st_mode
            if stat.S_IMODE(mode) & 0o077:
                raise ConfigError(f"{where}: password_file {path} is readable by others; chmod 600 {path}")
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read password_file {path} ({exc.strerror})") from None
    return None


def _settings(options: Mapping[str, Any]) -> tuple[str, str | None, str]:
    where = "config.toml: sync target postgres"
    unknown = sorted(set(options) - KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
    url = options.get("url")
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{where}: url must be like \"postgresql://user@host:5432/dbname\"")
    if "@" in url.split("//", 1)[1] and ":" in url.split("//", 1)[1].split("@", 1)[0]:
        raise ConfigError(f"{where}: put the password in password_env or password_file, not in the url")
    schema = options.get("schema", "halton_meter")
    if not isinstance(schema, str) or not schema.isidentifier():
        raise ConfigError(f"{where}: schema must be a plain identifier, like \"halton_meter\"")
    return url, _password(options, where), schema


class PostgresSink:
    def __init__(self, options: Mapping[str, Any]) -> None:
        import psycopg

        url, password, self.schema = _settings(options)
        self.conn = psycopg.connect(url, password=password, connect_timeout=10, autocommit=False)
        self._migrate()

    def _migrate(self) -> None:
        s = self.schema
        with self.conn.transaction():
            self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)")
            row = self.conn.execute(f"SELECT max(version) FROM {s}.schema_version").fetchone()
            version = row[0] if row and row[0] is not None else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"the team database's schema {s} is at version {version}, newer than this "
                                   f"Halton Meter ({SCHEMA_VERSION}): upgrade halton-meter")
            if version < 1:
                columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
                self.conn.execute(f"CREATE TABLE {s}.calls ({columns})")
                self.conn.execute(f"CREATE INDEX calls_started ON {s}.calls (started_at)")
                self.conn.execute(f"""CREATE VIEW {s}.team_daily AS
                    SELECT date_trunc('day', started_at) AS day, user_label, machine_id, project, provider,
                           coalesce(model, model_requested) AS model, billing, count(*) AS calls,
                           sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                           sum(cache_read_tokens) AS cache_read_tokens, sum(cache_write_tokens) AS cache_write_tokens,
                           sum(coalesce(cost_nanos, 0)) AS cost_nanos
                    FROM {s}.calls WHERE endpoint_kind IS DISTINCT FROM 'self_test'
                    GROUP BY 1, 2, 3, 4, 5, 6, 7""")
                self.conn.execute(f"INSERT INTO {s}.schema_version VALUES (1)")

    def push(self, rows: list[dict[str, Any]]) -> None:
        import json

        s = self.schema
        with self.conn.transaction():
            self.conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS incoming (LIKE {s}.calls) ON COMMIT DELETE ROWS")
            with self.conn.cursor() as cur:
                with cur.copy(f"COPY incoming ({', '.join(NAMES)}) FROM STDIN") as copy:
                    # Every column present (no field dropped): one C-level pick per row.
                    pick = operator.itemgetter(*NAMES) if rows and all(n in rows[0] for n in NAMES) else None
                    for row in rows:
                        values = list(pick(row)) if pick is not None else [row.get(name) for name in NAMES]
                        for i in _BOOLEAN_AT:
                            if values[i] is not None:
                                values[i] = bool(values[i])
                        extra = values[_EXTRA_AT]
                        values[_EXTRA_AT] = extra if isinstance(extra, str) else json.dumps(extra or {})
                        copy.write_row(values)
                updates = ", ".join(f"{n} = excluded.{n}" for n in NAMES if n != "id")
                cur.execute(f"INSERT INTO {s}.calls ({', '.join(NAMES)}) SELECT {', '.join(NAMES)} FROM incoming "
                            f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE {s}.calls.version <= excluded.version")

    def close(self) -> None:
        self.conn.close()


def open_sink(options: Mapping[str, Any]) -> PostgresSink:
    return PostgresSink(options)


def probe(options: Mapping[str, Any]) -> str:
    """`doctor`: connect (5 s at most), read the schema version; write nothing."""
    import psycopg

    url, password, schema = _settings(options)
    with psycopg.connect(url, password=password, connect_timeout=5) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.schema_version",)).fetchone()
        if not exists or exists[0] is None:
            return "reachable; its schema is created by the meter's first sync"
        row = conn.execute(f"SELECT max(version) FROM {schema}.schema_version").fetchone()
        version = (row[0] if row else None) or 0
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"schema {schema} is at version {version}, newer than this Halton Meter ({SCHEMA_VERSION}): "
                           "upgrade halton-meter")
    if version < SCHEMA_VERSION:
        return f"reachable; schema {schema} at version {version}, upgraded by the meter's next sync"
    return f"reachable; schema {schema} current (version {version})"


TEAM_DIMENSIONS = {"user": "user_label", "machine": "machine_id", "project": "project", "provider": "provider",
                   "model": "coalesce(model, model_requested)", "client": "client", "branch": "branch",
                   "key": "key_fingerprint", "day": "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"}
NONE_VALUE = "(none)"


def glob_regex(pattern: str) -> str:
    """A shell glob (`claude-sonnet-*`, `?`, `[abc]`, `[!abc]`) as an anchored POSIX regular expression,
    matching what SQLite's GLOB matches for the local report."""
    out, i = ["^"], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and (close := pattern.find("]", i + (3 if pattern[i + 1:i + 2] in ("!", "^") else 2))) > i:
            body = pattern[i + 1:close]  # a `]` first in the class is one of its characters, as in SQLite
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = close
        else:
            out.append(ch if ch.isalnum() or ch in "-_ /:@" else "\\" + ch)
        i += 1
    return "".join(out) + "$"


def _filter_sql(filters: Mapping[str, Sequence[str]]) -> tuple[str, list[str]]:
    """Each dimension's values OR-ed, dimensions AND-ed: a glob matches as the local report's GLOB does,
    `(none)` matches a missing value, `key` values are fingerprint prefixes."""
    clauses: list[str] = []
    params: list[str] = []
    for name, values in filters.items():
        if not values:
            continue
        if name not in TEAM_DIMENSIONS or name == "day":
            raise ConfigError(f"--{name} is not a team filter (use {', '.join(d for d in TEAM_DIMENSIONS if d != 'day')})")
        column, options = TEAM_DIMENSIONS[name], []
        for value in values:
            if value == NONE_VALUE or value == "":
                options.append(f"coalesce({column}, '') = ''")
            elif name == "key":
                options.append(f"starts_with({column}, %s)")
                params.append(value)
            elif any(ch in value for ch in "*?["):
                options.append(f"{column} ~ %s")
                params.append(glob_regex(value))
            else:
                options.append(f"{column} = %s")
                params.append(value)
        clauses.append("(" + " OR ".join(options) + ")")
    return "".join(f" AND {c}" for c in clauses), params


def team_rows(options: Mapping[str, Any], since: str, until: str, by: Sequence[str],
              filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
    """`report --team`: the team's calls in [since, until) grouped by `by` (user, machine, project, provider,
    model, client, branch, key, day — UTC days), self-tests and calls in flight left out, as `report` does."""
    import psycopg

    url, password, schema = _settings(options)
    unknown = [d for d in by if d not in TEAM_DIMENSIONS]
    if unknown:
        raise ConfigError(f"--by {unknown[0]} is not a team dimension (use {', '.join(TEAM_DIMENSIONS)})")
    where, params = _filter_sql(filters or {})
    keys = [f"{TEAM_DIMENSIONS[d]} AS \"{d}\"" for d in by]
    group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(by)))}" if by else ""
    sql = (f"SELECT {', '.join([*keys, ''])} count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), "
           "sum(cache_write_tokens), sum(CASE WHEN billing = 'subscription' THEN 0 ELSE coalesce(cost_nanos, 0) END), "
           "sum(CASE WHEN billing = 'subscription' THEN coalesce(cost_nanos, 0) ELSE 0 END), "
           "count(DISTINCT user_label), count(DISTINCT machine_id), "
           "to_char(max(started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
           f"FROM {schema}.calls WHERE started_at >= %s AND started_at < %s AND endpoint_kind IS DISTINCT FROM "
           f"'self_test' AND incomplete_reason IS DISTINCT FROM 'in_progress'{where}{group}")
    with psycopg.connect(url, password=password, connect_timeout=10) as conn:
        rows = conn.execute(sql, (since, until, *params)).fetchall()
    names = [*by, "calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_nanos",
             "subscription_cost_nanos", "users", "machines"]
    return [{**{n: (int(v) if v is not None and n not in by else v) for n, v in zip(names, row, strict=False)},
             "last_seen": row[-1]} for row in rows if row[len(by)]]


@hookimpl
def halton_register_sync_targets(register: Callable[[SyncTarget], None], config: object) -> None:
    register(SyncTarget(id="sync.postgres", title="PostgreSQL (a team database)", open=open_sink, probe=probe,
                        team_rows=team_rows))
