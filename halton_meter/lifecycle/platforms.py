"""What platform this is, decided fast (under a second) and without side effects."""

from __future__ import annotations

import sys
from pathlib import Path

from halton_meter.lifecycle.commands import CommandRunner
from halton_meter.types import PlatformInfo


def _system() -> str:
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "darwin"
    if sys.platform in ("win32", "cygwin"):
        return "windows"
    return sys.platform


def _in_container() -> bool:
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return True
    try:
        cgroup = Path("/proc/1/cgroup").read_text()
    except OSError:
        return False
    return any(word in cgroup for word in ("docker", "kubepods", "containerd", "lxc"))


def _is_wsl() -> bool:
    try:
        return "microsoft" in Path("/proc/sys/kernel/osrelease").read_text().lower()
    except OSError:
        return False


def has_systemd_user(runner: CommandRunner) -> bool:
    """A systemd user manager answers. Without `/run/systemd/system` systemd is not PID 1 and nothing is
    asked at all; otherwise `systemctl --user` gets one second."""
    if not Path("/run/systemd/system").is_dir() or runner.which("systemctl") is None:
        return False
    result = runner.run(["systemctl", "--user", "show-environment"], check=False, timeout=1.0)
    return result.ok


def detect_platform(runner: CommandRunner) -> PlatformInfo:
    system = _system()
    if system != "linux":
        return PlatformInfo(system=system)
    return PlatformInfo(system="linux", has_systemd_user=has_systemd_user(runner), in_container=_in_container(),
                        is_wsl=_is_wsl())
