"""Every module imports on Windows and macOS: no top-level dependency on what only Linux (or only POSIX) has.

We cannot run Windows or macOS here, so each of our modules is imported in a fresh interpreter that claims
to be one (`sys.platform`), with the POSIX-only standard modules made unavailable. The third-party and
standard modules our code uses are imported first, as they are on this machine: what is checked is our
own code, not how mitmproxy or psutil import on Windows.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(180)

PACKAGES = ("halton_meter", "halton_meter_plugins", "halton_meter_checks")
POSIX_ONLY = ("fcntl", "pwd", "grp", "resource", "termios", "tty", "pty", "syslog", "posix")
"""Standard modules Windows does not have (`posix` itself is what `os` wraps there as `nt`)."""

_OURS = f"""
import importlib, pkgutil

def ours():
    names = []
    for package in {PACKAGES!r}:
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, package + "."):
            if info.name.rsplit(".", 1)[-1] != "__main__":  # those run the program when imported
                names.append(info.name)
    return names

def is_ours(name):
    return name.split(".")[0] in {PACKAGES!r}
"""

_FIRST = _OURS + """
import json, sys
for name in ours():
    importlib.import_module(name)
print(json.dumps(sorted(name for name in list(sys.modules) if not is_ours(name))))
"""

_UNDER = _OURS + """
import json, sys
platform, others, blocked = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
names = ours()  # found while this interpreter is still itself, then forgotten
for name in [n for n in list(sys.modules) if is_ours(n)]:
    del sys.modules[name]
for name in others:
    try:
        importlib.import_module(name)
    except Exception:
        pass
sys.platform = platform
for name in blocked:
    sys.modules[name] = None  # `import fcntl` now raises ImportError, as on Windows
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"imported": len(names), "failed": failed}))
"""


def _run(script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def others() -> list[str]:
    """The modules (not ours) that importing all of ours loads here."""
    return [name for name in json.loads(_run(_FIRST)) if name.split(".")[0] not in POSIX_ONLY]


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_every_module_imports_under_another_platform(platform: str, others: list[str]) -> None:
    blocked = POSIX_ONLY if platform == "win32" else ()
    outcome = json.loads(_run(_UNDER, platform, json.dumps(others), json.dumps(list(blocked))))
    assert outcome["imported"] > 150  # it really walked the packages
    assert outcome["failed"] == {}, "\n".join(f"{name}: {error}" for name, error in outcome["failed"].items())


def test_a_top_level_posix_import_is_caught(others: list[str]) -> None:
    """The check can fail: a module that imports `fcntl` at the top is reported under Windows."""
    probe = _UNDER.replace("failed = {}", "failed = {}\ntry:\n    import fcntl\nexcept BaseException as exc:\n"
                                          "    failed['probe'] = type(exc).__name__")
    outcome = json.loads(_run(probe, "win32", json.dumps(others), json.dumps(list(POSIX_ONLY))))
    assert outcome["failed"].get("probe") in ("ImportError", "ModuleNotFoundError")
