"""The checks that read db.sqlite's bytes directly never drop this process's SQLite locks.

Closing any descriptor of a file drops every POSIX record lock the process holds on it. When the meter's
own header checks did that beside its writer's connection, another process closing its connection could
then delete the write-ahead log under the writer, and the writer's next commits were lost (seen as a row
missing after another tool had held the database locked). These tests read the kernel's lock table
(/proc/locks) to see that the writer's shared lock survives every such check, and then show the
consequence the lock prevents.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from halton_meter.store import rawfile
from halton_meter.store.schema import (
    check_intact,
    check_readable,
    connect,
    initialised,
    migrate,
    open_initialised,
)

pytestmark = pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads the Linux kernel's lock table")

SHARED_FIRST = 0x40000000 + 2  # SQLite's shared-lock byte range on the main file starts here


def holds_shared_lock(db: Path) -> bool:
    """Whether this process holds a read lock on db's shared-lock range, per the kernel."""
    ino = os.stat(db).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        kind, mode, pid, dev_ino, start = fields[1], fields[3], fields[4], fields[5], fields[6]
        if kind == "POSIX" and mode == "READ" and int(pid) == os.getpid() \
                and int(dev_ino.rsplit(":", 1)[1]) == ino and int(start) == SHARED_FIRST:
            return True
    return False


def _reopened(db: Path) -> None:
    conn = open_initialised(db)
    assert conn is not None
    conn.close()


READERS: dict[str, Callable[[Path], object]] = {
    "check_intact": check_intact,
    "check_readable": check_readable,
    "initialised": initialised,
    "open_initialised": _reopened,
    "migrate": migrate,  # at the latest version: the file checks and an immutable read of the log's owner
}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "db.sqlite"
    migrate(path)
    return path


@pytest.mark.parametrize("reader", sorted(READERS))
def test_header_checks_keep_the_writers_lock(db: Path, reader: str) -> None:
    writer = connect(db)
    try:
        writer.execute("SELECT count(*) FROM calls").fetchall()
        assert holds_shared_lock(db), "a WAL connection holds its shared lock while open"
        for _ in range(3):
            READERS[reader](db)
        assert holds_shared_lock(db), f"{reader} dropped the writer's lock"
    finally:
        writer.close()


def test_another_process_closing_cannot_delete_the_log_under_the_writer(db: Path) -> None:
    writer = connect(db)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO meta (key, value) VALUES ('probe', '1') "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        writer.execute("COMMIT")
        for reader in READERS.values():
            reader(db)
        wal = db.with_name(db.name + "-wal")
        inode = os.stat(wal).st_ino
        # The last connection to close in a process that gets the exclusive lock checkpoints and deletes the
        # log: with our lock kept, another process can never get it while the writer is open.
        code = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT count(*) FROM sqlite_master').fetchall(); c.close()"
        subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=30)
        assert wal.exists() and os.stat(wal).st_ino == inode, "the log was deleted under an open writer"
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE meta SET value = '2' WHERE key = 'probe'")
        writer.execute("COMMIT")
    finally:
        writer.close()
    fresh = sqlite3.connect(db)
    try:
        assert fresh.execute("SELECT value FROM meta WHERE key = 'probe'").fetchone() == ("2",)
    finally:
        fresh.close()


def test_descriptors_are_bounded(tmp_path: Path) -> None:
    paths = []
    for i in range(rawfile.KEEP + 5):
        path = tmp_path / f"f{i}"
        path.write_bytes(b"x" * (i + 1))
        paths.append(path)
    for i, path in enumerate(paths):
        assert rawfile.read_start(path, 4) == (b"x" * min(4, i + 1), i + 1)
    assert rawfile.held() == rawfile.KEEP
    paths[-1].write_bytes(b"grown" * 3)  # the same file, longer: the kept descriptor sees it
    assert rawfile.read_start(paths[-1], 5) == (b"grown", 15)
