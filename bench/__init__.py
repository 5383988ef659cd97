"""Halton Meter's benchmark (issue 7): `python -m bench` (full) or `python -m bench --quick`.

See docs/benchmark.md for what it measures and how to read the table.
"""
