"""A home on a read-only file system: every command says so in one line, naming the path, and the ones that
only read keep working. (A read-only mount stops root too, so this is tested with a tmpfs remounted
read-only; skipped where mounting is not permitted.)"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from halton_meter.store.schema import migrate
from halton_meter.testing.meter import meter_env


@contextlib.contextmanager
def read_only_home(base: Path) -> Iterator[Path]:
    mount = base / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        home = mount / "home"
        home.mkdir(mode=0o700)
        migrate(home / "db.sqlite")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, timeout=10)
        yield home
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True, timeout=10).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "halton_meter", *args], env=meter_env(home, HOME=str(home.parent)),
                          capture_output=True, text=True, timeout=60, cwd=home.parent.parent)


def test_a_read_only_home_is_named_in_one_line_and_reads_still_work(tmp_path: Path) -> None:
    with read_only_home(tmp_path) as home:
        for command in (["retag", "--from", "a", "--to", "b"], ["init", "--non-interactive"],
                        ["serve", "--edge-port", "0", "--api-port", "0"]):
            result = run(home, *command)
            lines = result.stderr.strip().splitlines()
            assert result.returncode != 0 and len(lines) == 1, (command, result.stderr)
            assert f"{home} is on a read-only file system" in lines[0] and "HALTON_METER_HOME" in lines[0], lines
            assert "Traceback" not in result.stderr and "SELECT" not in result.stderr and "OSError" not in lines[0]
        for command in (["calls"], ["report"], ["projects"], ["reprice"]):  # nothing to write: fine
            result = run(home, *command)
            assert result.returncode == 0 and result.stderr == "", (command, result.stderr)
        doctor = run(home, "doctor")
        assert f"✗ home directory         {home} is on a read-only file system" in doctor.stdout, doctor.stdout
        assert "fix: halton-meter init" not in doctor.stdout  # nothing init could do about it
