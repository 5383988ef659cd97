"""The Linux installers: which one a platform gets, the systemd unit (verified by systemd-analyze) and the
exact systemctl commands, recorded through the command-runner seam; detection within a second."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from halton_meter.config import load_config
from halton_meter.host import PluginHost
from halton_meter.lifecycle.commands import CommandResult, RecordingRunner, SystemRunner
from halton_meter.lifecycle.init import InitContext, InitOptions, rollback, undo_all
from halton_meter.lifecycle.platforms import detect_platform
from halton_meter.lifecycle.state import SystemState
from halton_meter.paths import Paths
from halton_meter.types import PlatformInfo
from halton_meter_plugins.installers.systemd import UNIT, SystemdInstaller, unit_file


def installer_for(platform: PlatformInfo):
    return PluginHost().load(entry_points=False).hook.halton_platform_installer(platform=platform)


def test_each_platform_gets_exactly_one_installer() -> None:
    assert installer_for(PlatformInfo("linux", has_systemd_user=True)).id == "installer.systemd"
    assert installer_for(PlatformInfo("linux", has_systemd_user=False)).id == "installer.builtin"
    assert installer_for(PlatformInfo("darwin")).id == "installer.launchd"
    assert installer_for(PlatformInfo("windows")).id == "installer.windows"


def test_detection_on_this_machine_is_fast_and_finds_no_systemd_user_manager() -> None:
    started = time.monotonic()
    platform = detect_platform(SystemRunner())
    assert time.monotonic() - started < 1.0
    assert platform.system == "linux"
    assert platform.has_systemd_user is Path("/run/systemd/system").is_dir()


def context(tmp_path: Path, runner: RecordingRunner, mode: str = "env") -> InitContext:
    paths = Paths(tmp_path / "home")
    return InitContext(paths=paths, config=load_config(paths), options=InitOptions(mode=mode), runner=runner,
                       installer=SystemdInstaller(PlatformInfo("linux", has_systemd_user=True)),
                       platform=PlatformInfo("linux", has_systemd_user=True), user_home=tmp_path / "user",
                       state=SystemState())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("version", [252, 256])
def test_the_unit_file_passes_systemd_analyze_verify(tmp_path: Path, version: int) -> None:
    unit = tmp_path / UNIT
    unit.write_text(unit_file(Paths(tmp_path / "home"), version))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=30)
    own_lines = [line for line in result.stderr.splitlines() if str(unit) in line]
    if version <= 252:  # the systemd here is 252: it must accept every key we write for it
        assert own_lines == [] and result.returncode == 0, result.stderr
    text = unit.read_text()
    assert ("RestartSteps=6" in text) is (version >= 254)
    assert "Restart=on-failure" in text and "StartLimitBurst=10" in text and "RestartPreventExitStatus=2 3 4" in text


def test_install_enables_the_unit_and_uninstall_reverses_it_exactly(tmp_path: Path) -> None:
    runner = RecordingRunner(script={
        ("systemctl", "--version"): CommandResult(("systemctl",), 0, "systemd 256 (256.5)\n+PAM +AUDIT\n"),
        "loginctl": CommandResult(("loginctl",), 0, "Linger=no\n"),
    })
    ctx = context(tmp_path, runner)
    ctx.current_step = "init.service"
    ctx.installer.install_services(ctx)
    unit_path = tmp_path / "user" / ".config" / "systemd" / "user" / UNIT
    assert unit_path.read_text() == unit_file(ctx.paths, 256)
    mutating = [c for c in runner.calls if c[:2] == ("systemctl", "--user")]
    assert mutating == [("systemctl", "--user", "daemon-reload"), ("systemctl", "--user", "enable", UNIT)]
    assert any("loginctl enable-linger" in note for note in ctx.notes)

    runner.calls.clear()
    ctx.installer.install_services(ctx)  # again: the unit is unchanged, so no reload
    assert ("systemctl", "--user", "daemon-reload") not in runner.calls
    assert len(ctx.state.changes) == 3  # unit file, reload, enable: recorded once each

    runner.calls.clear()
    undo_all(ctx, {})
    assert runner.calls == [("systemctl", "--user", "disable", "--now", UNIT), ("systemctl", "--user", "daemon-reload")]
    assert not unit_path.exists() and ctx.state.changes == []


def test_apps_environment_through_the_user_manager_and_rollback(tmp_path: Path) -> None:
    runner = RecordingRunner()
    ctx = context(tmp_path, runner, mode="apps")
    ctx.current_step = "init.environment"
    ctx.installer.persist_env(ctx, {"HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "localhost"})
    conf = tmp_path / "user" / ".config" / "environment.d" / "60-halton-meter.conf"
    assert conf.read_text().splitlines()[1:] == ["HTTPS_PROXY=http://127.0.0.1:9", "NO_PROXY=localhost"]
    assert runner.calls == [("systemctl", "--user", "set-environment", "HTTPS_PROXY=http://127.0.0.1:9",
                             "NO_PROXY=localhost")]
    runner.calls.clear()
    rollback(ctx)
    assert runner.calls == [("systemctl", "--user", "unset-environment", "HTTPS_PROXY", "NO_PROXY")]
    assert not conf.exists()


def test_service_state_reads_systemctl(tmp_path: Path) -> None:
    runner = RecordingRunner(script={
        ("systemctl", "--user", "is-enabled", UNIT): CommandResult((), 0, "enabled\n"),
        ("systemctl", "--user", "is-active", UNIT): CommandResult((), 3, "failed\n"),
    })
    state = context(tmp_path, runner).installer.service_state(context(tmp_path, runner))
    assert (state.installed, state.running) == (True, False)
    assert state.detail == f"systemd user unit {UNIT} failed"
    assert "journalctl --user -u" in state.fix


def test_trust_system_runs_sudo_visibly_and_only_when_asked(tmp_path: Path) -> None:
    runner = RecordingRunner()
    ctx = context(tmp_path, runner)
    ctx.current_step = "init.os-trust"
    assert ctx.installer.trust_ca(ctx) is False and runner.calls == []
    ctx.options.trust_system, ctx.options.non_interactive = True, True
    assert ctx.installer.trust_ca(ctx) is True
    assert runner.calls[0][:3] == ("sudo", "-n", "install")  # -n: never waits for a password prompt
    assert runner.calls[1] == ("sudo", "-n", "update-ca-certificates")
