"""Reading the database file's own bytes without breaking SQLite's locks.

On POSIX systems a process's record locks (`fcntl`) belong to the process and the file, not to a
descriptor: closing *any* descriptor of the file drops every lock the process holds on it, including the
ones its open SQLite connections rely on. SQLite guards its own descriptors against this, but not one
that Python opens beside them. A meter process that read the header with `open()`/`close()` while its
writer was connected therefore lost its shared lock on `db.sqlite` without knowing it; the next process to
close its last connection (a `report`, a locking tool) then took the exclusive lock, checkpointed, and
deleted the write-ahead log under the writer, whose later commits went into the deleted file and were
lost.

So the few checks that read the file directly (its header, its length) go through one read-only
descriptor per file that this module opens once and keeps: it is never closed while the process might
hold a connection to that file. At most `KEEP` files are held; the least recently read is closed beyond
that, which matters only to a process juggling more databases than that at once (a test run), never to
the meter, which has one. Windows locks belong to a handle, so there a plain open and close is safe and
is what happens.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

KEEP = 64

_fds: OrderedDict[tuple[int, int], int] = OrderedDict()
_lock = threading.Lock()


def read_start(path: Path, size: int) -> tuple[bytes, int]:
    """The first `size` bytes of the file at `path` and its current length. OSError when it cannot be read."""
    if not hasattr(os, "pread"):  # Windows: locks are per handle, closing ours touches no one else's
        with path.open("rb") as fh:
            return fh.read(size), os.fstat(fh.fileno()).st_size
    st = os.stat(path)
    key = (st.st_dev, st.st_ino)
    with _lock:
        fd = _fds.get(key)
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            opened = os.fstat(fd)
            key = (opened.st_dev, opened.st_ino)  # the file may have been replaced since the stat
            if key in _fds:  # then we already hold this one: keep both rather than close either
                _fds[(opened.st_dev, -fd)] = fd
                fd = _fds[key]
            else:
                _fds[key] = fd
            while len(_fds) > KEEP:
                _, old = _fds.popitem(last=False)
                os.close(old)
        _fds.move_to_end(key)
        return os.pread(fd, size, 0), os.fstat(fd).st_size


def held() -> int:
    """How many files this process holds a descriptor to (for tests)."""
    with _lock:
        return len(_fds)
