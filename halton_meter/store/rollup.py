"""Rollups: what `report` reads instead of a million rows.

Schema version 7 adds these tables, kept exact by triggers on `calls` (an INSERT adds the row's
contribution, a DELETE subtracts it, an UPDATE subtracts the old row's and adds the new one's), so every
writer — the meter, `reprice`, `retag`, a hand-run `sqlite3` — keeps them right without knowing they exist:

* `rollup_dims`: one id per combination of the report's dimensions (project, model, provider, client,
  branch, key fingerprint, billing). Missing values are stored as `''`; the model is the answered model,
  else the requested one.
* `rollup`: per 15-minute UTC bucket and dimension id, the call count and the sums of every token bucket,
  cost, cache savings, the unpriced/estimated/incomplete/error counts, and latency and time-to-first-token
  sums (integer microseconds, so adding and subtracting never drifts) with their counts.
* `rollup_hist` (15-minute buckets) and `rollup_hist_day` (UTC days): latency and TTFT histograms for the
  p95s, per dimension id. Bins are log-spaced by a factor of 1.1 from 1 ms (`rollup_bins`; bin 0 holds
  everything under 1 ms, the last bin everything above ~17 days); a row holds 16 neighbouring bins, so a
  typical bucket needs one or two rows per metric. A p95 is reported as the geometric middle of the bin
  that holds the nearest-rank 95th percentile: within 4.9% (√1.1 − 1) of the true value.

Rows that are not calls anyone paid for never contribute: self-tests (`endpoint_kind = 'self_test'`) and
provisional rows of calls still in flight (`incomplete_reason = 'in_progress'`).

15 minutes is the bucket because every UTC offset in use is a multiple of it: local midnights and local
hours always fall on a bucket edge, in Kolkata and Adelaide too. Windows that do not (`--since 90m`, or
"until now") take whole buckets from the rollup and the rows at the edges from `calls`, so totals are exact.

One caveat: `INSERT OR REPLACE INTO calls` deletes the old row without firing DELETE triggers (unless
`PRAGMA recursive_triggers` is on); Halton Meter never writes that way (the writer upserts by id).

This module's SQL is migration 7 as shipped: never change it; add a migration instead.
"""

from __future__ import annotations

BUCKET_SECONDS = 900
DAY_SECONDS = 86400
BIN_RATIO = 1.1
BINS_PER_ROW = 16
BIN_COUNT = 14 * BINS_PER_ROW  # 224 bins: 0 (< 1 ms), then 1.1**(k-1) ms up to ~17 days
HIST_METRICS = {"latency": (0, "latency_ms"), "ttft": (1, "ttft_ms")}


def bin_floors() -> list[float]:
    """The lower edge of each bin, in ms (what migration 7 stores in `rollup_bins`). Bin 0 takes everything
    below 1 ms, negative values included."""
    return [-1e300] + [float(f"{BIN_RATIO ** (k - 1):.9g}") for k in range(1, BIN_COUNT)]


# The report's dimensions, as stored in rollup_dims, from a `calls` row aliased X.
DIMENSIONS: dict[str, str] = {
    "project": "X.project",
    "model": "coalesce(X.model, X.model_requested, '')",
    "provider": "X.provider",
    "client": "ifnull(X.client, '')",
    "branch": "ifnull(X.branch, '')",
    "key_fingerprint": "ifnull(X.key_fingerprint, '')",
    "billing": "X.billing",
}

# What one `calls` row (aliased X) adds to its rollup row.
SUMS: dict[str, str] = {
    "calls": "1",
    "input_tokens": "ifnull(X.input_tokens, 0)",
    "output_tokens": "ifnull(X.output_tokens, 0)",
    "cache_read_tokens": "ifnull(X.cache_read_tokens, 0)",
    "cache_write_tokens": "ifnull(X.cache_write_tokens, 0)",
    "cache_write_1h_tokens": "ifnull(X.cache_write_1h_tokens, 0)",
    "reasoning_tokens": "ifnull(X.reasoning_tokens, 0)",
    "cost_nanos": "ifnull(X.cost_nanos, 0)",
    "cache_savings_nanos": "ifnull(X.cache_savings_nanos, 0)",
    "unpriced": "(X.billable != 0 AND X.priced = 0)",
    "estimated": "(X.estimated != 0)",
    "incomplete": "(X.complete = 0)",
    "errors": "(X.error_type IS NOT NULL)",
    "latency_us": "ifnull(CAST(round(X.latency_ms * 1000) AS INTEGER), 0)",
    "latency_n": "(X.latency_ms IS NOT NULL)",
    "ttft_us": "ifnull(CAST(round(X.ttft_ms * 1000) AS INTEGER), 0)",
    "ttft_n": "(X.ttft_ms IS NOT NULL)",
}

CONTRIBUTES = "X.endpoint_kind IS NOT 'self_test' AND X.incomplete_reason IS NOT 'in_progress'"


def epoch_sql(row: str) -> str:
    """Whole seconds of `started_at`. Only its first 19 characters: SQLite's date functions round to the
    millisecond, which would put 10:14:59.9999 in the 10:15 bucket while text comparison keeps it before."""
    return f"CAST(strftime('%s', substr({row}.started_at, 1, 19)) AS INTEGER)"


def _bucket(row: str, seconds: int) -> str:
    # A malformed started_at lands in bucket 0 rather than failing the write.
    return f"ifnull(({epoch_sql(row)} / {seconds}) * {seconds}, 0)"


def _x(expr: str, row: str) -> str:
    return expr.replace("X.", f"{row}.")


def _dims_match(row: str, alias: str = "d") -> str:
    return " AND ".join(f"{alias}.{name} = {_x(expr, row)}" for name, expr in DIMENSIONS.items())


def _bin_floor(row: str, column: str) -> str:
    """The lower edge of a value's bin: one index seek (an `ORDER BY lo DESC LIMIT 1` subquery in FROM is
    materialised on every row and made the triggers four times slower). NULL for NULL: nothing counted."""
    return f"(SELECT max(lo) FROM rollup_bins WHERE lo <= {row}.{column})"


def _apply(row: str, sign: str) -> list[str]:
    """Statements that add (sign '') or subtract (sign '-') the contribution of `row` (NEW or OLD)."""
    statements = []
    if not sign:
        columns = ", ".join(DIMENSIONS)
        values = ", ".join(_x(expr, row) for expr in DIMENSIONS.values())
        statements.append(f"INSERT INTO rollup_dims ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING")
    names = ", ".join(SUMS)
    values = ", ".join(f"{sign}({_x(expr, row)})" for expr in SUMS.values())
    updates = ", ".join(f"{name} = {name} + excluded.{name}" for name in SUMS)
    statements.append(
        f"INSERT INTO rollup (bucket, dims, {names}) SELECT {_bucket(row, BUCKET_SECONDS)}, d.id, {values} "
        f"FROM rollup_dims AS d WHERE {_dims_match(row)} "
        f"ON CONFLICT (bucket, dims) DO UPDATE SET {updates}"
    )
    bins = ", ".join(f"c{i}" for i in range(BINS_PER_ROW))
    bin_values = ", ".join(f"{sign}h.c{i}" for i in range(BINS_PER_ROW))
    bin_updates = ", ".join(f"c{i} = c{i} + excluded.c{i}" for i in range(BINS_PER_ROW))
    for table, seconds in (("rollup_hist", BUCKET_SECONDS), ("rollup_hist_day", DAY_SECONDS)):
        for metric, column in HIST_METRICS.values():
            statements.append(
                f"INSERT INTO {table} (bucket, dims, metric, grp, n, {bins}) "
                f"SELECT {_bucket(row, seconds)}, d.id, {metric}, h.grp, {sign}1, {bin_values} "
                f"FROM rollup_dims AS d, rollup_bins AS h "  # the bin's row carries its one-hot counts
                f"WHERE h.lo = {_bin_floor(row, column)} AND {_dims_match(row)} "
                f"ON CONFLICT (bucket, dims, metric, grp) DO UPDATE SET n = n + excluded.n, {bin_updates}"
            )
    if sign:
        dims_id = f"(SELECT d.id FROM rollup_dims AS d WHERE {_dims_match(row)})"
        statements.append(f"DELETE FROM rollup WHERE bucket = {_bucket(row, BUCKET_SECONDS)} AND dims = {dims_id} "
                          "AND calls = 0")
        for table, seconds in (("rollup_hist", BUCKET_SECONDS), ("rollup_hist_day", DAY_SECONDS)):
            statements.append(f"DELETE FROM {table} WHERE bucket = {_bucket(row, seconds)} AND dims = {dims_id} "
                              "AND n = 0")
    return statements


def _trigger(name: str, event: str, row: str, sign: str) -> str:
    body = ";\n  ".join(_apply(row, sign))
    return f"CREATE TRIGGER {name} AFTER {event} ON calls WHEN {_x(CONTRIBUTES, row)}\nBEGIN\n  {body};\nEND"


def _backfill() -> list[str]:
    """Build the rollups from the calls already stored: each row's buckets, dimension id and bins are worked
    out once (a temporary table), then every rollup table is one GROUP BY over them."""
    columns = ", ".join(DIMENSIONS)
    c_dims = ", ".join(_x(expr, "c") for expr in DIMENSIONS.values())
    contributes = _x(CONTRIBUTES, "c")
    sums = ", ".join(f"sum({_x(expr, 'c')})" for expr in SUMS.values())
    statements = [
        f"INSERT INTO rollup_dims ({columns}) SELECT DISTINCT {c_dims} FROM calls AS c WHERE {contributes}",
        f"CREATE TEMP TABLE rollup_backfill AS SELECT c.rowid AS rid, {_bucket('c', BUCKET_SECONDS)} AS b15, "
        f"{_bucket('c', DAY_SECONDS)} AS bday, d.id AS dims, "
        + ", ".join(f"(SELECT bin FROM rollup_bins WHERE lo <= c.{column} ORDER BY lo DESC LIMIT 1) AS bin{metric}"
                    for metric, column in HIST_METRICS.values())
        + f" FROM calls AS c JOIN rollup_dims AS d ON {_dims_match('c')} WHERE {contributes}",
        f"INSERT INTO rollup (bucket, dims, {', '.join(SUMS)}) SELECT f.b15, f.dims, {sums} "
        "FROM rollup_backfill AS f JOIN calls AS c ON c.rowid = f.rid GROUP BY f.b15, f.dims",
    ]
    bins = ", ".join(f"c{i}" for i in range(BINS_PER_ROW))
    for table, bucket in (("rollup_hist", "b15"), ("rollup_hist_day", "bday")):
        for metric, _ in HIST_METRICS.values():
            column = f"bin{metric}"
            bin_sums = ", ".join(f"sum({column} % {BINS_PER_ROW} = {i})" for i in range(BINS_PER_ROW))
            statements.append(
                f"INSERT INTO {table} (bucket, dims, metric, grp, n, {bins}) "
                f"SELECT {bucket}, dims, {metric}, {column} / {BINS_PER_ROW} AS g, count(*), {bin_sums} "
                f"FROM rollup_backfill WHERE {column} IS NOT NULL GROUP BY {bucket}, dims, g"
            )
    statements.append("DROP TABLE temp.rollup_backfill")
    return statements


def migration() -> list[str]:
    """Schema version 7: the rollup tables, their triggers, and a backfill from existing calls."""
    sum_columns = ", ".join(f"{name} INTEGER NOT NULL" for name in SUMS)
    bin_columns = ", ".join(f"c{i} INTEGER NOT NULL" for i in range(BINS_PER_ROW))
    dims = ", ".join(f"{name} TEXT NOT NULL" for name in DIMENSIONS)
    one_hot = [", ".join("1" if i == k % BINS_PER_ROW else "0" for i in range(BINS_PER_ROW)) for k in range(BIN_COUNT)]
    floors = ", ".join(f"({lo!r}, {k}, {k // BINS_PER_ROW}, {one_hot[k]})" for k, lo in enumerate(bin_floors()))
    statements = [
        f"CREATE TABLE rollup_dims (id INTEGER PRIMARY KEY, {dims}, UNIQUE ({', '.join(DIMENSIONS)}))",
        f"CREATE TABLE rollup (bucket INTEGER NOT NULL, dims INTEGER NOT NULL, {sum_columns}, "
        "PRIMARY KEY (bucket, dims)) WITHOUT ROWID",
        # A bin's row also holds its row-of-16 (`grp`) and one-hot counts, so the triggers only copy columns.
        f"CREATE TABLE rollup_bins (lo REAL PRIMARY KEY, bin INTEGER NOT NULL, grp INTEGER NOT NULL, {bin_columns}) "
        "WITHOUT ROWID",
        f"INSERT INTO rollup_bins VALUES {floors}",
    ]
    for table in ("rollup_hist", "rollup_hist_day"):
        statements.append(
            f"CREATE TABLE {table} (bucket INTEGER NOT NULL, dims INTEGER NOT NULL, metric INTEGER NOT NULL, "
            f"grp INTEGER NOT NULL, n INTEGER NOT NULL, {bin_columns}, PRIMARY KEY (bucket, dims, metric, grp)) "
            "WITHOUT ROWID"
        )
    statements += _backfill()
    statements += [
        _trigger("calls_rollup_insert", "INSERT", "NEW", ""),
        _trigger("calls_rollup_delete", "DELETE", "OLD", "-"),
        # Only columns the rollup reads: an update of, say, `extra` or `price_source` costs nothing.
        _trigger("calls_rollup_update_old", f"UPDATE OF {UPDATE_COLUMNS}", "OLD", "-"),
        _trigger("calls_rollup_update_new", f"UPDATE OF {UPDATE_COLUMNS}", "NEW", ""),
    ]
    return statements


UPDATE_COLUMNS = ", ".join((  # the columns the rollups read (migration 12's generation trigger watches them too)
    "started_at", "endpoint_kind", "incomplete_reason", "project", "model", "model_requested", "provider", "client",
    "branch", "key_fingerprint", "billing", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens", "cost_nanos", "cache_savings_nanos",
    "billable", "priced", "estimated", "complete", "error_type", "latency_ms", "ttft_ms",
))

TABLES = ("rollup_dims", "rollup", "rollup_bins", "rollup_hist", "rollup_hist_day")
