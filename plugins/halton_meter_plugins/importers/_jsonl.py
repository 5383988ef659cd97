"""Reading JSON Lines logs written by other tools: bad input is counted, never raised.

Logs can be gigabytes, mostly conversation text the meter must never keep: a reader looks for a marker in
the raw bytes and parses only the lines that carry one. Every other line is only checked to be a JSON
object (`{…}`), so a torn or foreign line is still counted as unreadable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from halton_meter.plugin import ImportStats, parse_stamp

MAX_LINE = 64 * 1024 * 1024
"""Longer lines are not parsed (counted as unreadable): no usage line comes near it."""


def jsonl_files(location: Path) -> list[Path]:
    """`location` itself when it is a file, else every `*.jsonl` below it (symlinked directories are not
    followed), sorted."""
    if location.is_file():
        return [location]
    found: list[Path] = []
    for root, dirs, names in os.walk(location, onerror=None):
        dirs.sort()
        found += [Path(root) / n for n in names if n.endswith(".jsonl")]
    return sorted(found)


def lines(path: Path, stats: ImportStats, markers: Sequence[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON objects of the lines of `path` that contain any of `markers`; other lines are only checked
    for the shape of a JSON object. A file that cannot be read is counted and named in `stats`."""
    stats.files += 1
    try:
        with path.open("rb") as fh:
            for raw in fh:
                line = raw.strip()
                if not line:
                    continue
                if len(line) > MAX_LINE or not (line.startswith(b"{") and line.endswith(b"}")):
                    stats.unreadable_lines += 1
                    continue
                if not any(marker in line for marker in markers):
                    continue
                try:
                    value = json.loads(line)
                except (ValueError, RecursionError):
                    stats.unreadable_lines += 1
                    continue
                if isinstance(value, dict):
                    yield value
                else:
                    stats.unreadable_lines += 1
    except OSError as exc:
        stats.unreadable_files += 1
        stats.problem(f"{path}: {exc.strerror or exc}")


def timestamp(value: Any) -> str | None:
    """An ISO 8601 time (`2025-09-15T08:52:10.933Z`, or with an offset) as stored: UTC, microseconds, `Z`."""
    moment = parse_stamp(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if moment is not None else None


def tokens(value: Any) -> int | None:
    """A token count: a non-negative integer (an integral float passes), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and 0 <= value < 2**53:
        return int(value)
    return None


def text(value: Any, limit: int = 4096) -> str | None:
    """A non-empty string of at most `limit` characters, else None."""
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
