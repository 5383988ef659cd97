"""Importers: read the usage other tools already keep on disk, for `halton-meter import` (docs/import.md).

One module per tool, each a plugin listed in `halton_meter.host.BUILTIN_PLUGINS`; `_jsonl` holds what they
share (line reading that never raises, timestamps, token counts).
"""
