"""The record journal: every record is on disk before `Writer.submit` says it is queued.

The writer commits to SQLite in batches, behind a queue. Without a journal, whatever sat in that queue when
the core was killed (or stopped while the database was locked) was gone. With it, `submit` first appends the
record to a journal segment with one `pwrite` — no fsync: the data is in the kernel's page cache the moment
the call returns, and the page cache outlives a crashed or killed process — and the writer thread releases
segments once everything in them has committed. At the next start, whatever the segments still hold is
replayed (an idempotent upsert by call id), so a crash loses nothing the journal took.

Segments are preallocated (`SEGMENT_BYTES` each) and recycled, never grown, so appends need no new disk
blocks: a journal keeps working on a disk that has just filled up, which is exactly when the database stops
taking writes. A spare segment is always allocated ahead (by the writer thread, off the event loop). Only
when every segment is full and no new one can be allocated does a record go unjournaled; those are counted
in a small preallocated counter file (`journal-<pid>-<ns>.unsaved`) rewritten in place, so even then a crash
leaves a count — written as a gap at the next start — rather than nothing.

Segment layout: a header line `{"journal": 1, "fields": [...]}` naming the record fields, then one JSON array
per record in that field order, each line followed by a NUL that the next append overwrites. A reader stops
at the first NUL, so a recycled segment needs only one NUL written at its start, never a full wipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import operator
import os
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from halton_meter.types import CallRecord

log = structlog.get_logger("halton_meter.journal")

SEGMENT_BYTES = 1024 * 1024
"""About 600 records (300 calls) a segment: a spare is allocated ahead, so this is the burst the journal
holds with no allocation at all (a full disk)."""
PREFIX = "journal-"
SUFFIX = ".seg"
UNSAVED_SUFFIX = ".unsaved"
UNSAVED_BYTES = 64
FIELDS = tuple(f.name for f in dataclasses.fields(CallRecord))
_values = operator.attrgetter(*FIELDS)
_HEADER = json.dumps({"journal": 1, "fields": FIELDS}, separators=(",", ":")).encode() + b"\n"


def encode(record: CallRecord) -> bytes:
    return json.dumps(_values(record), separators=(",", ":"), default=_bytes_as_text).encode() + b"\n"


def _bytes_as_text(value: object) -> object:
    if isinstance(value, bytes | bytearray):  # raw capture buffers, before redaction
        return bytes(value).decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _reserve(fd: int, size: int) -> None:
    """Own `size` bytes of disk for the file now, so later writes inside it cannot fail for space."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (95, 22):  # EOPNOTSUPP / EINVAL: the file system cannot; write zeros instead
                raise
    block = b"\0" * 65536
    for offset in range(0, size, len(block)):
        os.pwrite(fd, block[: size - offset], offset)


@dataclasses.dataclass
class _Segment:
    path: Path
    fd: int
    offset: int = 0
    last_seq: int = 0
    """Sequence number of the last record appended; the segment is free once that one has committed."""

    def restart(self) -> None:
        os.pwrite(self.fd, _HEADER + b"\0", 0)
        self.offset = len(_HEADER)
        self.last_seq = 0


class Journal:
    """Appends from the event loop (`append`), releases from the writer thread (`committed`)."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._current: _Segment | None = None
        self._full: list[_Segment] = []
        """Segments written up to their end, waiting for their last record to commit."""
        self._spares: list[_Segment] = []
        self._seq = 0
        self.committed_seq = 0
        self._unsaved = 0
        self._unsaved_fd: int | None = None
        self.counter_path = directory / f"{PREFIX}{os.getpid()}-{time.time_ns()}{UNSAVED_SUFFIX}"
        self.available = False
        self.problem: str | None = None

    # ---- start-up ----------------------------------------------------------------------------------

    def leftovers(self) -> list[Path]:
        """Segments and the unsaved counter a previous core left behind (call before `open`)."""
        return sorted(self.directory.glob(f"{PREFIX}*{SUFFIX}"))

    def open(self) -> Journal:
        """Allocate this process's segments. A journal that cannot be opened (read-only or full disk) leaves
        the writer working without one; `problem` says why, and status reports it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._unsaved_fd = self._open_counter()
            self._current = self._allocate()
            self._spares.append(self._allocate())
        except OSError as exc:
            self.problem = f"cannot allocate the record journal in {self.directory}: {exc.strerror or exc}"
            log.error("record journal unavailable: queued records are not crash-safe", error=self.problem)
            return self
        self.available = True
        return self

    def _open_counter(self) -> int:
        fd = os.open(self.counter_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _reserve(fd, UNSAVED_BYTES)
        except OSError:
            os.close(fd)
            self.counter_path.unlink(missing_ok=True)
            raise
        return fd

    def _allocate(self) -> _Segment:
        path = self.directory / f"{PREFIX}{os.getpid()}-{time.time_ns()}{SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _reserve(fd, self.segment_bytes)
            segment = _Segment(path, fd)
            segment.restart()
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return segment

    # ---- event loop side ---------------------------------------------------------------------------

    def append(self, record: CallRecord, line: bytes | None = None) -> int | None:
        """Journal one record; its sequence number, or None when it could not be journaled (counted).
        `line`: the record already encoded (`encode`), as a core worker sends it: not encoded twice."""
        line = line if line is not None else encode(record)
        with self._lock:
            segment = self._room_for(len(line) + 1)
            if segment is None:
                self._unsaved += 1
                self._write_unsaved()
                return None
            try:
                os.pwrite(segment.fd, line + b"\0", segment.offset)
            except OSError as exc:
                self.problem = f"record journal write failed: {exc.strerror or exc}"
                self._unsaved += 1
                self._write_unsaved()
                return None
            self._seq += 1
            segment.offset += len(line)
            segment.last_seq = self._seq
            return self._seq

    def _room_for(self, size: int) -> _Segment | None:
        current = self._current
        if current is None:
            return None
        if current.offset + size <= self.segment_bytes:
            return current
        if size + len(_HEADER) > self.segment_bytes or not self._spares:
            return None  # a record bigger than a segment (a huge capture), or no spare ready
        self._full.append(current)
        self._current = self._spares.pop()
        return self._current

    # ---- writer thread side ------------------------------------------------------------------------

    def committed(self, seq: int, unsaved_done: int = 0) -> None:
        """Every journaled record up to `seq` has committed (and `unsaved_done` unjournaled ones): free what
        only held those, and keep a spare segment allocated ahead."""
        with self._lock:
            self.committed_seq = max(self.committed_seq, seq)
            if unsaved_done:
                self._unsaved = max(0, self._unsaved - unsaved_done)
                self._write_unsaved()
            still_full = []
            for segment in self._full:
                if segment.last_seq <= seq:
                    segment.restart()
                    self._spares.append(segment)
                else:
                    still_full.append(segment)
            self._full = still_full
            current = self._current
            if current is not None and current.last_seq and current.last_seq <= seq:
                current.restart()
            need_spare = self.available and not self._spares
        if need_spare:
            try:
                spare = self._allocate()
            except OSError as exc:  # full disk: appends carry on in what is allocated
                self.problem = f"cannot allocate a journal segment: {exc.strerror or exc}"
                return
            with self._lock:
                self._spares.append(spare)
            self.problem = None

    @property
    def unsaved(self) -> int:
        return self._unsaved

    @property
    def appended(self) -> int:
        """Sequence number of the last record appended (0: none)."""
        return self._seq

    def _write_unsaved(self) -> None:
        if self._unsaved_fd is not None:
            with contextlib.suppress(OSError):
                os.pwrite(self._unsaved_fd, str(self._unsaved).encode().ljust(UNSAVED_BYTES - 1) + b"\n", 0)

    def close(self, remove: bool) -> None:
        """Close the files; with `remove` (everything committed) delete them too."""
        with self._lock:
            segments = [s for s in (self._current, *self._full, *self._spares) if s is not None]
            self._current, self._full, self._spares = None, [], []
            for segment in segments:
                with contextlib.suppress(OSError):
                    os.close(segment.fd)
                if remove:
                    segment.path.unlink(missing_ok=True)
            if self._unsaved_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._unsaved_fd)
                self._unsaved_fd = None
            if remove and not self._unsaved:
                self.counter_path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# Reading what a journal holds (replay at start, `status` while the core is down)
# --------------------------------------------------------------------------------------------------


def read_segment(path: Path) -> list[dict[str, Any]]:
    """The records in a segment as field dicts, oldest first; a torn or unreadable line is skipped."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    data = data.split(b"\0", 1)[0]
    header, _, body = data.partition(b"\n")
    try:
        fields = json.loads(header)["fields"]
    except (ValueError, KeyError, TypeError):
        return []
    out = []
    for line in body.splitlines():
        try:
            values = json.loads(line)
        except ValueError:
            continue
        if isinstance(values, list) and len(values) == len(fields):
            out.append(dict(zip(fields, values, strict=True)))
    return out


def read_unsaved(path: Path) -> int:
    try:
        return max(0, int(path.read_bytes().split(b"\0", 1)[0].strip() or b"0"))
    except (OSError, ValueError):
        return 0


def backlog(directory: Path) -> tuple[int, int]:
    """(records in journal segments, unjournaled records counted) — what a core that is not running left
    to write. Distinct calls are counted once (a provisional row and its final row are one call)."""
    ids: set[str | None] = set()
    for path in sorted(directory.glob(f"{PREFIX}*{SUFFIX}")):
        ids.update(r.get("id") for r in read_segment(path))
    ids.discard(None)
    return len(ids), sum(read_unsaved(p) for p in directory.glob(f"{PREFIX}*{UNSAVED_SUFFIX}"))
