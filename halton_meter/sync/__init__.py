"""Sync: every committed row pushed to the team's own infrastructure (docs/sync.md).

The `[[sync]]` blocks (target, privacy preset, field overrides, user label) and the machine id are
`halton_meter.sync_config` (a top-level module: `config` reads it).

* `engine` — the loop that reads what changed after each target's cursor and pushes it, in batches, with
  retries and backoff; the cursor moves only after the target confirms.

The targets themselves are plugins (`halton_register_sync_targets`): `sync.postgres` is built in.
"""
