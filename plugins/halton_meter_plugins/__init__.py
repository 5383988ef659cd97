"""Halton Meter's built-in feature plugins: providers, attributors, and (later) installers and sync targets.

Each module here is one plugin, listed by name in `halton_meter.host.BUILTIN_PLUGINS`.
"""
