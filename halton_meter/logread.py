"""Reading the meter's logs back (`halton-meter logs`): parse, merge in time order, follow.

Two line formats reach the files (see `halton_meter.logs`):

* structlog's key=value lines, values as Python reprs, timestamp (UTC) first:
  `timestamp='2026-12-03T09:46:42.876543Z' process='core' level='warning' event='…' reason='…'`
* the standard library's, local time:
  `2026-12-03 09:46:46,486 core ERROR mitmproxy.proxy: message`, a traceback on the lines after it.

A line in neither format (a traceback, anything a process printed) belongs to the entry above it, so the
merge never tears an entry apart. Nothing here imports rich: `cli/logs.py` draws the entries.
"""

from __future__ import annotations

import ast
import datetime
import heapq
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_STDLIB = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+) ([A-Z]+) (.*)\Z", re.S)
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_CLOSE = {"(": ")", "[": "]", "{": "}", "<": ">"}
_EPOCH = datetime.datetime.min.replace(tzinfo=datetime.UTC)


@dataclass
class LogEntry:
    """One logged event: its first line and any continuation lines (a traceback)."""

    process: str
    """The log file's name (`core` for core.log): what wrote it."""
    raw: list[str]
    at: datetime.datetime | None = None
    """When (aware); None when the first line had no timestamp (it then sorts with the entry before it)."""
    level: str = ""
    event: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    """structlog's other keys, values decoded from their repr when they can be."""
    parsed: bool = False


def parse_line(process: str, line: str) -> LogEntry:
    """One line as an entry; `parsed` is False for a line in neither format (a continuation)."""
    line = line.rstrip("\n")
    if line.startswith("timestamp="):
        pairs = _key_values(line)
        if pairs is not None and isinstance(pairs.get("timestamp"), str):
            try:
                at = datetime.datetime.fromisoformat(pairs.pop("timestamp").replace("Z", "+00:00"))
            except ValueError:
                at = None
            if at is not None:
                if at.tzinfo is None:
                    at = at.replace(tzinfo=datetime.UTC)
                name = pairs.pop("process", None)
                level = pairs.pop("level", "")
                event = pairs.pop("event", "")
                return LogEntry(name if isinstance(name, str) and name else process, [line], at, str(level),
                                str(event), pairs, parsed=True)
    match = _STDLIB.match(line)
    if match:
        stamp, name, level, message = match.groups()
        try:
            at = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").astimezone()  # written in local time
        except ValueError:
            at = None
        if at is not None:
            return LogEntry(name, [line], at, level.lower(), message, parsed=True)
    return LogEntry(process, [line])


def _key_values(line: str) -> dict[str, Any] | None:
    """`a='x' b=1 c=['y z']` → {"a": "x", "b": 1, "c": ["y z"]}; None when the line is not in that form."""
    out: dict[str, Any] = {}
    i, n = 0, len(line)
    while i < n:
        match = _KEY.match(line, i)
        if match is None:
            return None
        key, i = match.group(1), match.end()
        end = _value_end(line, i)
        if end is None:
            return None
        text = line[i:end]
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            out[key] = text  # an object's repr (<Foo at 0x…>): shown as written
        i = end
        if i < n:
            if line[i] != " ":
                return None
            i += 1
    return out


def _value_end(line: str, i: int) -> int | None:
    """Where the repr starting at `i` ends: at a space outside quotes and brackets, or the line's end."""
    stack: list[str] = []
    quote = ""
    n = len(line)
    while i < n:
        char = line[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in _CLOSE:
            stack.append(_CLOSE[char])
        elif stack and char == stack[-1]:
            stack.pop()
        elif char == " " and not stack:
            return i
        i += 1
    return None if quote or stack else n


def entries(process: str, lines: Iterable[str]) -> list[LogEntry]:
    """A file's lines as entries: each unparsed line joins the entry above it (or starts one of its own
    when it comes first)."""
    out: list[LogEntry] = []
    for line in lines:
        entry = parse_line(process, line)
        if not entry.parsed and out:
            out[-1].raw.append(entry.raw[0])
        else:
            out.append(entry)
    return out


def merge(per_file: Iterable[list[LogEntry]]) -> list[LogEntry]:
    """Entries of several files in time order. Each file keeps its own order (it was written in time order;
    its two formats differ in precision, so their times alone could swap neighbours); an entry without a
    time stays after the one before it; equal times keep the files' order."""
    def keyed(index: int, group: list[LogEntry]) -> Iterator[tuple[datetime.datetime, int, LogEntry]]:
        last = _EPOCH
        for entry in group:
            last = max(last, entry.at or last)
            yield last, index, entry

    streams = [keyed(index, group) for index, group in enumerate(per_file)]
    return [entry for _, _, entry in heapq.merge(*streams, key=lambda item: (item[0], item[1]))]


def tail(path: Path, lines: int) -> tuple[list[str], int]:
    """The last `lines` complete lines of `path` and the offset just after them (a partial last line is
    left for the next read)."""
    with path.open("rb") as fh:
        data = fh.read()
    end = data.rfind(b"\n") + 1
    text = data[:end].decode(errors="replace")
    kept = deque(text.splitlines(), maxlen=lines) if lines else deque()
    return list(kept), end


class Follower:
    """New complete lines of each log file since the last call, across rotation (the file starting over)."""

    def __init__(self, paths: Iterable[Path], positions: dict[Path, int] | None = None) -> None:
        self.paths = list(paths)
        self.positions = dict(positions or {})

    def poll(self) -> list[list[LogEntry]]:
        out = []
        for path in self.paths:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            start = self.positions.get(path, 0)
            if size < start:  # rotated: start over from the new file
                start = 0
            if size <= start:
                continue
            with path.open("rb") as fh:
                fh.seek(start)
                data = fh.read()
            end = data.rfind(b"\n") + 1
            if not end:
                continue  # only a partial line so far
            self.positions[path] = start + end
            out.append(entries(path.stem, data[:end].decode(errors="replace").splitlines()))
        return out

