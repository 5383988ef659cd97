"""The `halton-meter` console script (`[project.scripts]` in pyproject.toml): `halton_meter.__main__.main`,
which sends `statusline` down its fast path without importing click, and everything else to the CLI.

It lives in `__main__` because that is the one module allowed to import `halton_meter.cli`
(tests/test_layout.py); this module only gives the script a name that reads as one.
"""

from __future__ import annotations

from halton_meter.__main__ import main

__all__ = ["main"]
