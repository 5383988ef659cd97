"""init, status, start/stop, uninstall, reset-proxy, logs and `run` on this machine, for real.

This machine has no systemd user session, so `init` must pick the built-in supervisor within a second
and succeed. Every test gets its own HOME and HALTON_METER_HOME and free ports; whatever it started is
stopped however it ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from halton_meter.lifecycle.init import BLOCK_BEGIN
from halton_meter.paths import Paths
from halton_meter.serve.runtime import read_runtime

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Machine:
    def __init__(self, root: Path) -> None:
        self.user = root / "user"
        self.user.mkdir()
        self.home = self.user / ".halton-meter"
        self.edge_port, self.api_port = free_port(), free_port()

    def config(self, extra: str = "") -> None:
        self.home.mkdir(mode=0o700, exist_ok=True)
        (self.home / "config.toml").write_text(
            f"[edge]\nport = {self.edge_port}\n[api]\nport = {self.api_port}\n{extra}"
        )

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.lower().endswith("_proxy") and k not in ("XDG_CONFIG_HOME", "HALTON_METER_LOG_DIR")}
        env.update(HOME=str(self.user), HALTON_METER_HOME=str(self.home), SHELL="/bin/bash", NO_COLOR="1",
                   COLUMNS="200")
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "halton_meter", *args], env=self.env(**env),
                              capture_output=True, text=True, timeout=timeout, cwd=self.user)

    def files(self) -> dict[str, str]:
        """Digest of every file under the user's HOME except the meter's own home (what init may touch)."""
        out = {}
        for path in sorted(self.user.rglob("*")):
            if path.is_file() and self.home not in path.parents:
                out[str(path.relative_to(self.user))] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out

    def stop_everything(self) -> None:
        runtime = read_runtime(Paths(self.home))
        if runtime and runtime.get("pid"):
            try:
                os.kill(runtime["pid"], signal.SIGTERM)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(runtime["pid"], 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    m = Machine(tmp_path)
    m.config()
    yield m
    m.stop_everything()


def steps_of(output: str) -> dict[str, str]:
    """`3/9 ✓ service: done · …` → {"service": "done"}."""
    steps = {}
    for line in output.splitlines():
        if "/" in line[:5] and ": " in line:
            title, _, rest = line.split(" ", 2)[2].partition(": ")
            steps[title] = rest.split(" · ")[0]
    return steps


def test_init_env_only_status_run_and_uninstall_purge(machine: Machine) -> None:
    before = machine.files()
    started = time.monotonic()
    result = machine.cli("init", "--non-interactive")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "built-in supervisor (no service manager found)" in result.stdout
    steps = steps_of(result.stdout)
    assert steps["certificate authority"] == "done"
    assert steps["OS trust for the CA"] == "skipped"
    assert steps["start the meter"] == "done"
    assert steps["self-test through edge and core"] == "done"
    assert steps["environment for new shells and apps"] == "skipped"
    assert result.stdout.strip().endswith("init complete · mode: env · meter a command with: halton-meter run -- claude")
    assert time.monotonic() - started < 30  # no 30-second wait for a service manager that is not there
    assert machine.files() == before  # env-only mode touches nothing outside the meter's home

    status = machine.cli("status", "--json")
    data = json.loads(status.stdout)
    assert status.returncode == 0 and data["verdict"] == "HEALTHY", status.stdout
    assert {r["id"]: r["status"] for r in data["rows"]} == {
        "config": "ok", "edge": "ok", "core": "ok", "api": "ok", "writes": "ok", "gaps": "ok", "ca": "ok", "disk": "ok",
        "supervisor": "ok", "plan": "ok", "budgets": "ok", "sync": "ok"}
    text = machine.cli("status").stdout
    assert text.startswith("HEALTHY") and f"listening on 127.0.0.1:{machine.edge_port}" in text

    call = machine.cli("run", "--", sys.executable, "-c",
                       "import httpx; print(httpx.post('https://selftest.halton-meter.invalid/v1/selftest', "
                       "json={'model': 'm'}).status_code)")
    assert call.returncode == 0 and call.stdout.strip() == "200", call.stderr

    again = machine.cli("init", "--non-interactive")  # idempotent: nothing to do but prove it works
    assert again.returncode == 0
    again_steps = steps_of(again.stdout)
    assert again_steps["certificate authority"] == "already in place"
    assert again_steps["start the meter"] == "already in place"
    assert again_steps["self-test through edge and core"] == "done"

    logs = machine.cli("logs", "-n", "5")
    shown = {line[13:18].strip() for line in logs.stdout.splitlines() if line[:2].isdigit()}  # 09:46:42.876 core
    assert {"core", "edge"} <= shown, logs.stdout
    raw = machine.cli("logs", "-n", "5", "--raw").stdout
    assert "process='core'" in raw and "process='edge'" in raw

    gone = machine.cli("uninstall", "--purge")
    assert gone.returncode == 0, gone.stderr
    assert "kept your calls in" in gone.stdout
    left = sorted(p.name for p in machine.home.iterdir())
    assert left in (["db.sqlite", "db.sqlite-shm", "db.sqlite-wal", "fingerprint.key"],
                    ["db.sqlite", "fingerprint.key"]), left  # the secret behind the calls' key fingerprints
    assert machine.files() == before
    assert machine.cli("status").returncode == 5  # BROKEN: nothing runs any more


def test_apps_mode_switches_cleanly_and_uninstall_restores_rc_byte_for_byte(machine: Machine) -> None:
    bashrc = machine.user / ".bashrc"
    original = b"# my rc\nalias ll='ls -l'\nexport EDITOR=vim"  # no trailing newline, on purpose
    bashrc.write_bytes(original)
    before = machine.files()

    apps = machine.cli("init", "--apps", "--non-interactive")
    assert apps.returncode == 0, apps.stdout + apps.stderr
    text = bashrc.read_text()
    assert text.startswith(original.decode() + "\n" + BLOCK_BEGIN)
    assert f'export HTTPS_PROXY="http://127.0.0.1:{machine.edge_port}"' in text
    env_d = machine.user / ".config" / "environment.d" / "60-halton-meter.conf"
    assert f"HTTPS_PROXY=http://127.0.0.1:{machine.edge_port}" in env_d.read_text()
    # The block really works in a new shell: the proxy variables point at the running meter.
    shell = subprocess.run(["bash", "-ic", "echo $HTTPS_PROXY; echo $NO_PROXY"], env=machine.env(NO_PROXY="corp.lan"),
                           capture_output=True, text=True, timeout=30, cwd=machine.user)
    assert shell.stdout.split() == [f"http://127.0.0.1:{machine.edge_port}", "corp.lan,localhost,127.0.0.1,::1"]

    twice = machine.cli("init", "--apps", "--non-interactive")
    assert twice.returncode == 0 and bashrc.read_text() == text  # no second block

    back = machine.cli("init", "--non-interactive")  # switch back to env-only
    assert back.returncode == 0
    assert steps_of(back.stdout)["environment for new shells and apps"] == "undone"
    assert bashrc.read_bytes() == original and not env_d.exists()
    assert not (machine.user / ".config").exists()  # the directories init made for it went with it

    machine.cli("init", "--apps", "--no-shell-rc", "--non-interactive")
    assert bashrc.read_bytes() == original and env_d.exists()

    assert machine.cli("uninstall").returncode == 0
    assert machine.files() == before
    assert bashrc.read_bytes() == original
    assert not (machine.user / ".config").exists()  # no empty ~/.config/environment.d left behind


def test_dry_run_changes_nothing(machine: Machine) -> None:
    before = machine.files()
    listing = sorted(p.name for p in machine.home.iterdir())
    result = machine.cli("init", "--apps", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Dry run: nothing was changed." in result.stdout
    assert "will apply" in result.stdout
    assert machine.files() == before
    assert sorted(p.name for p in machine.home.iterdir()) == listing
    assert read_runtime(Paths(machine.home)) is None


def test_full_mode_is_refused_on_linux_before_anything_changes(machine: Machine) -> None:
    before = machine.files()
    result = machine.cli("init", "--full")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "halton-meter: error: --full (a system-wide proxy) is not supported on this platform (linux); "
        "--apps covers new shells and every app that honours HTTPS_PROXY"
    )
    assert machine.files() == before


FAILING_STEP = '''
from halton_meter import hookimpl
from halton_meter.types import InitStep

def boom(ctx):
    raise RuntimeError("injected failure")

@hookimpl
def halton_register_init_steps(register):
    register(InitStep("test.fails", "a step that fails", lambda ctx: False, boom,
                      requires=("init.environment",)))
'''


def test_a_failing_step_rolls_back_this_run_and_names_the_step(machine: Machine, tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "failing_step-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: failing-step\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[halton_meter]\nfailing = failing_step_plugin\n")
    (site / "failing_step_plugin.py").write_text(FAILING_STEP)
    bashrc = machine.user / ".bashrc"
    bashrc.write_text("# mine\n")
    before = machine.files()

    result = machine.cli("init", "--apps", "--non-interactive", PYTHONPATH=str(site))
    assert result.returncode == 1
    assert "✗ a step that fails: FAILED" in result.stdout
    assert result.stderr.strip() == (
        "halton-meter: error: init step test.fails (a step that fails) failed: RuntimeError: injected failure"
    )
    assert "undid the" in result.stdout
    assert machine.files() == before  # the shell rc block and environment.d file were taken back
    assert bashrc.read_text() == "# mine\n"
    state = json.loads((machine.home / "system_state.json").read_text())
    assert state["changes"] == []


def test_run_warns_when_the_core_is_down_but_still_runs(machine: Machine) -> None:
    assert machine.cli("init", "--non-interactive").returncode == 0
    core_state = machine.home / "run" / "core.json"
    real = core_state.read_text()
    core_state.write_text(json.dumps({"port": free_port(), "pid": 1}))  # the edge now finds no core
    try:
        result = machine.cli("run", "--", sys.executable, "-c", "print('ran')")
        status = machine.cli("status", "--json")
    finally:
        core_state.write_text(real)
    assert result.returncode == 0 and result.stdout.strip() == "ran"
    assert "core is not running: this command's calls pass through UNMETERED" in result.stderr
    data = json.loads(status.stdout)
    assert status.returncode == 6 and data["verdict"] == "DEGRADED"
    assert {r["id"]: r["status"] for r in data["rows"]}["core"] == "fail"


def test_stop_start_restart_keep_the_port(machine: Machine) -> None:
    assert machine.cli("init", "--non-interactive").returncode == 0
    assert machine.cli("stop").returncode == 0
    assert machine.cli("status").returncode == 5
    assert machine.cli("start").returncode == 0
    assert machine.cli("restart").returncode == 0
    assert read_runtime(Paths(machine.home))["edge_port"] == machine.edge_port
    assert machine.cli("status").returncode == 0


def test_foreground_serve_is_healthy_and_unsupervised(machine: Machine) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "halton_meter", "serve"], env=machine.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while read_runtime(Paths(machine.home)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        data = json.loads(machine.cli("status", "--json").stdout)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    rows = {r["id"]: r for r in data["rows"]}
    assert data["verdict"] == "DEGRADED"  # healthy meter, but not set up with init: one warn row
    assert [r["id"] for r in data["rows"] if r["status"] != "ok"] == ["supervisor"], data["rows"]
    assert rows["supervisor"]["status"] == "warn"
    assert rows["supervisor"]["summary"].startswith("no service installed: the meter runs under `halton-meter serve`")
    assert rows["supervisor"]["fix"].startswith("halton-meter init")


def test_uninstall_include_logs_needs_purge(machine: Machine) -> None:
    result = machine.cli("uninstall", "--include-logs")
    assert result.returncode == 2 and "use it together with --purge" in result.stderr


def fill_home(paths: Paths) -> None:
    """A home as a meter leaves it: calls, a backup, the fingerprint secret, config, CA, logs, spool."""
    (paths.home / "ca").mkdir(parents=True)
    (paths.home / "logs").mkdir()
    (paths.home / "spool").mkdir()
    for name in ("db.sqlite", "db.sqlite-wal", "db.sqlite-shm", "db.sqlite.v7-20261201.bak", "fingerprint.key",
                 "config.toml", "api-token", "ca/mitmproxy-ca.pem", "logs/core.log", "spool/records.jsonl"):
        (paths.home / name).write_text("# empty\n" if name.endswith(".toml") else "x")


def test_uninstall_purge_keeps_the_calls_and_the_fingerprint_key(cli, paths: Paths, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    fill_home(paths)
    result = cli("uninstall", "--purge")
    assert result.exit_code == 0, result
    assert sorted(p.name for p in paths.home.iterdir()) == [
        "db.sqlite", "db.sqlite-shm", "db.sqlite-wal", "db.sqlite.v7-20261201.bak", "fingerprint.key"]
    assert "kept your calls in" in result.stdout and "fingerprint.key" in result.stdout
    assert "--include-data" in result.stdout


@pytest.mark.parametrize("flag", ["--include-data", "--include-logs"])
def test_uninstall_purge_include_data_deletes_everything(cli, paths: Paths, monkeypatch, tmp_path, flag) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    fill_home(paths)
    alone = cli("uninstall", flag)
    assert alone.exit_code == 2 and alone.stderr == (
        f"halton-meter: error: {flag} deletes the call database; use it together with --purge\n")
    assert (paths.home / "db.sqlite").exists()
    result = cli("uninstall", "--purge", flag)
    assert result.exit_code == 0, result
    assert not paths.home.exists()


def test_uninstall_help_names_include_data_and_the_old_alias(cli) -> None:
    text = cli("uninstall", "--help").stdout
    assert "--include-data" in text and "Old name of --include-data" in text


def test_directories_made_for_a_file_go_when_it_is_undone_if_empty(tmp_path: Path) -> None:
    from halton_meter.config import load_config
    from halton_meter.lifecycle.commands import RecordingRunner
    from halton_meter.lifecycle.init import InitContext, InitOptions, rollback
    from halton_meter.lifecycle.state import SystemState
    from halton_meter.types import PlatformInfo
    from halton_meter_plugins.installers.linux import environment_d

    paths = Paths(tmp_path / "home")
    user = tmp_path / "user"
    user.mkdir()

    def context(state: SystemState | None = None) -> InitContext:
        ctx = InitContext(paths=paths, config=load_config(paths), options=InitOptions(mode="apps"),
                          runner=RecordingRunner(), installer=None, platform=PlatformInfo("linux"),
                          user_home=user, state=state or SystemState())
        ctx.current_step = "init.environment"
        return ctx

    env = {"HTTPS_PROXY": "http://127.0.0.1:1"}
    ctx = context()
    conf = environment_d(ctx, env)
    assert conf.exists() and ctx.state.changes[0].created_dirs == [str(conf.parent), str(user / ".config")]
    ctx.state.save(tmp_path / "state.json")  # the record survives a save and load
    ctx = context(SystemState.load(tmp_path / "state.json"))
    assert ctx.undo_step("init.environment") == 1
    assert sorted(user.iterdir()) == []  # ~/.config and ~/.config/environment.d were ours: gone

    (user / ".config").mkdir()  # the user's own ~/.config stays; only environment.d was made by init
    ctx = context()
    conf = environment_d(ctx, env)
    ctx.undo_step("init.environment")
    assert (user / ".config").is_dir() and not conf.parent.exists()

    ctx = context()
    conf = environment_d(ctx, env)
    (conf.parent / "50-mine.conf").write_text("EDITOR=vim\n")  # something else lives there now: kept
    ctx.undo_step("init.environment")
    assert not conf.exists() and (conf.parent / "50-mine.conf").exists()

    (conf.parent / "50-mine.conf").unlink()
    conf.parent.rmdir()
    ctx = context()
    environment_d(ctx, env)
    assert rollback(ctx) == 1  # a failed init takes the directory back too
    assert not conf.parent.exists() and (user / ".config").is_dir()


def test_a_taken_default_port_is_replaced_and_saved_but_a_configured_one_is_an_error(tmp_path: Path) -> None:
    import dataclasses

    from halton_meter.config import load_config
    from halton_meter.errors import HaltonError
    from halton_meter.lifecycle.commands import RecordingRunner
    from halton_meter.lifecycle.init import InitContext, InitOptions
    from halton_meter.lifecycle.state import SystemState
    from halton_meter.types import PlatformInfo
    from halton_meter_plugins.init_steps import choose_ports, ports_ok

    paths = Paths(tmp_path / "home")
    paths.home.mkdir(mode=0o700)
    holder = socket.create_server(("127.0.0.1", 0))
    taken = holder.getsockname()[1]
    try:
        config = dataclasses.replace(load_config(paths), edge_port=taken, api_port=free_port())
        ctx = InitContext(paths=paths, config=config, options=InitOptions(), runner=RecordingRunner(),
                          installer=None, platform=PlatformInfo("linux"), user_home=tmp_path, state=SystemState())
        ctx.current_step = "init.ports"
        assert not ports_ok(ctx)
        choose_ports(ctx)
        assert ctx.config.edge_port not in (taken, 0) and ports_ok(ctx)
        assert f"port = {ctx.config.edge_port}" in paths.config.read_text()
        assert ctx.notes[-1].startswith(f"port {taken} (edge) is in use by PID {os.getpid()}")
        assert [c.kind for c in ctx.state.changes] == ["file"]  # recorded: uninstall removes it again

        paths.config.write_text(f"[edge]\nport = {taken}\n")
        explicit = InitContext(paths=paths, config=load_config(paths), options=InitOptions(),
                               runner=RecordingRunner(), installer=None, platform=PlatformInfo("linux"),
                               user_home=tmp_path, state=SystemState())
        with pytest.raises(HaltonError, match=rf"port {taken} \(edge, set in .*config.toml\) is in use by PID"):
            choose_ports(explicit)
    finally:
        holder.close()


def test_start_with_a_taken_port_fails_at_once_naming_the_holder_and_the_config_key(machine: Machine) -> None:
    import socket

    import psutil

    holder = socket.create_server(("127.0.0.1", machine.edge_port))
    try:
        started = time.monotonic()
        result = machine.cli("start")
        took = time.monotonic() - started
    finally:
        holder.close()
    assert result.returncode == 4, result.stderr
    assert took < 10, took  # not the 45 s wait for a service that cannot bind
    [line] = result.stderr.strip().splitlines()
    assert line == (f"halton-meter: error: port {machine.edge_port} (edge) is in use by PID {os.getpid()} "
                    f"({psutil.Process().name()}); stop that process, or set `[edge] port = N` in "
                    f"{machine.home / 'config.toml'} to another port, then `halton-meter start`")
