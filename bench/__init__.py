"""Halton Meter's benchmark (issue 7): `python -m bench` (full) or `python -m bench --quick`.

See bench/README_SECTION.md for what it measures and how to read the table.
"""
