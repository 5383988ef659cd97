"""Budgets: spend caps from `[[budgets]]` in config.toml (docs/budgets.md).

The budget itself — validated from config.toml, its period's bounds in the local calendar, and whether a
call is in its scope — is `halton_meter.budget_config` (a top-level module: `config` reads it).

* `spend` — what a budget's period has spent, exactly, from the same rollups and rows as `report`, and the
  history (`budget_events`): thresholds crossed, overrides.
* `ledger` — the core's in-memory counters: loaded once from the database, then moved by every committed
  row and by a reservation per call in flight, so the hot path never reads the database.
"""
