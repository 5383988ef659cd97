"""`make init`'s install: a copy of Halton Meter in its own virtualenv (not an editable link to the clone),
and `halton-meter` linked into ~/.local/bin so a new shell finds it — with one clear line when that
directory is not on PATH.

The real target installs every dependency (about a minute offline); here the virtualenv is created first
with a `.pth` line onto this test environment's packages and `APP_PIP_ARGS=--no-deps`, so only Halton
Meter itself is built and installed, exactly as `make init` installs it.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_install_app_puts_a_copy_on_the_path_of_a_new_shell(tmp_path: Path) -> None:
    home = tmp_path / "user"
    app, bin_dir = home / ".local/share/halton-meter/app", home / ".local/bin"
    subprocess.run([sys.executable, "-m", "venv", str(app)], check=True, timeout=120)
    [app_site] = (app / "lib").glob("python*/site-packages")
    (app_site / "test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    clone = tmp_path / "clone"  # a copy of the repository, so moving it afterwards proves nothing links to it
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(".venv*", ".git", "__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALTON_METER")}
    env.update(HOME=str(home), PATH=f"/usr/bin:/bin:{Path(sys.executable).parent}")
    done = subprocess.run(["make", "-s", "install-app", f"PYTHON={sys.executable}", "APP_PIP_ARGS=--no-deps"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"installed: {bin_dir}/halton-meter -> {app}/bin/halton-meter" in done.stdout
    assert f"note: {bin_dir} is not on your PATH" in done.stdout and ".profile" in done.stdout
    shutil.rmtree(clone)  # the clone moves away: the installed command does not care
    new_shell = subprocess.run(["sh", "-c", "halton-meter --version && halton-meter status --json >/dev/null; "
                                            "command -v halton-meter"],
                               env={"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin",
                                    "HALTON_METER_HOME": str(tmp_path / "meter-home")},
                               capture_output=True, text=True, timeout=120)
    assert new_shell.stdout.startswith("halton-meter, version "), new_shell.stdout + new_shell.stderr
    assert new_shell.stdout.strip().endswith(f"{bin_dir}/halton-meter")
    import_check = subprocess.run([str(app / "bin/python"), "-c", "import halton_meter; print(halton_meter.__file__)"],
                                  capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert import_check.stdout.strip().startswith(str(app_site)), import_check.stdout  # a copy, not the clone


@pytest.mark.parametrize("prefix,expected", [
    ("/home/ada/.cache/uv/archive-v0/e3Tb5REHC9rRYBx3", "/home/ada/.cache/uv/archive-v0"),
    ("/Users/ada/Library/Caches/uv/builds-v0/.tmpAbc", "/Users/ada/Library/Caches/uv/builds-v0"),
    ("C:\\Users\\Ada\\AppData\\Local\\uv\\cache\\archive-v0\\x1", "C:\\Users\\Ada\\AppData\\Local\\uv\\cache\\archive-v0"),
    ("/home/ada/.local/share/uv/tools/halton-meter", None),  # `uv tool install`: stays
    ("/home/ada/.local/pipx/venvs/halton-meter", None),
    ("/home/ada/.local/share/halton-meter/app", None),
    ("/srv/archive-vault/venv", None),
])
def test_uvx_environments_are_recognised(prefix: str, expected: str | None) -> None:
    from halton_meter.cli.init import throwaway_environment

    assert throwaway_environment(prefix) == expected


def test_init_from_uvx_refuses_in_one_line_and_changes_nothing(cli, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    """`uvx halton-meter init` would leave a service pointing into uv's cache: one line, exit 2, the fix."""
    home = tmp_path / "home"
    monkeypatch.setenv("HALTON_METER_HOME", str(home))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "cache/uv/archive-v0/abc123"))
    result = cli("init", "--non-interactive")
    assert result.exit_code == 2, result
    assert result.stderr.count("\n") == 1 and "uv tool install halton-meter" in result.stderr
    assert not home.exists()
    assert cli("init", "--dry-run").exit_code == 0  # looking is harmless
