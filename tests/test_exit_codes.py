"""Every documented exit code (halton_meter/errors.py `ExitCode`, listed by `halton-meter --help`) produced
through the real command line: the in-process entry point (`cli`, error handling included), or a real
`halton-meter serve` process where the code comes from a process that would otherwise keep running.

`SCENARIOS` has one entry per code; adding a code without a scenario fails `test_every_code_has_a_scenario`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from halton_meter.errors import EXIT_CODE_HELP, ExitCode
from halton_meter.paths import Paths


def ok(cli: Any, paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    return cli("calls", "--json")


def failure(cli: Any, paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    return cli("prices", "no-such-model-xyz")


def usage(cli: Any, paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    return cli("calls", "--limit", "-3")


def config_invalid(cli: Any, paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    paths.home.mkdir(mode=0o700)
    paths.config.write_text("[edge]\nport = \n")
    return cli("report")


def database(cli: Any, paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    paths.home.mkdir(mode=0o700)
    paths.db.write_bytes(b"garbage" * 100)
    return cli("calls")


def port_in_use(cli: Any, paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        env = {**os.environ, "HALTON_METER_HOME": str(paths.home), "HOME": str(tmp_path)}
        try:
            done = subprocess.run([sys.executable, "-m", "halton_meter", "serve", "--edge-port", str(port),
                                   "--api-port", "0"], env=env, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:  # it started anyway: the code was not produced
            pytest.fail(f"serve kept running with port {port} held")
    return type("Result", (), {"exit_code": done.returncode, "stdout": done.stdout, "stderr": done.stderr})()


def not_running(cli: Any, paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    return cli("status")


def degraded(cli: Any, paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    paths.home.mkdir(mode=0o700)
    paths.config.write_text("[edge]\nport = 1\n[api\n")
    return cli("doctor", "--only", "check.config")


def internal(cli: Any, paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import halton_meter.cli.calls as calls_module

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(calls_module, "load_config", explode)
    return cli("calls")


def not_executable(cli: Any, paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    return cli("run", "--", str(script))  # exec fails, so the test process is never replaced


def not_found(cli: Any, paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    return cli("run", "--", "definitely-not-a-command-xyz")


Scenario = Callable[[Any, Paths, Path, pytest.MonkeyPatch], Any]
SCENARIOS: dict[ExitCode, list[tuple[Scenario, str]]] = {
    ExitCode.OK: [(ok, "")],
    ExitCode.FAILURE: [(failure, "halton-meter: error: no price known for 'no-such-model-xyz'")],
    ExitCode.USAGE: [(usage, "halton-meter: error: Invalid value for '--limit'"),
                     (config_invalid, "halton-meter: error: ")],
    ExitCode.DATABASE: [(database, "halton-meter: error: database ")],
    ExitCode.PORT_IN_USE: [(port_in_use, "halton-meter: error: port ")],
    ExitCode.NOT_RUNNING: [(not_running, "")],
    ExitCode.DEGRADED: [(degraded, "")],
    ExitCode.INTERNAL: [(internal, "halton-meter: internal error: RuntimeError: simulated bug; details in ")],
    ExitCode.COMMAND_NOT_EXECUTABLE: [(not_executable, "halton-meter: error: command not executable: ")],
    ExitCode.COMMAND_NOT_FOUND: [(not_found, "halton-meter: error: command not found: definitely-not-a-command-xyz")],
}
CASES = [(code, scenario, stderr) for code, scenarios in SCENARIOS.items() for scenario, stderr in scenarios]


def test_every_code_has_a_scenario_and_a_line_in_the_help() -> None:
    assert set(SCENARIOS) == set(ExitCode)
    assert set(EXIT_CODE_HELP) == set(ExitCode)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions and exec")
@pytest.mark.parametrize(("code", "scenario", "stderr"), CASES, ids=[f"{int(c)}-{s.__name__}" for c, s, _ in CASES])
def test_the_code_comes_out_of_the_real_cli(code: ExitCode, scenario: Scenario, stderr: str, cli, paths: Paths,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.setenv("HOME", str(user))  # no command may touch the real home
    result = scenario(cli, paths, tmp_path, monkeypatch)
    assert result.exit_code == int(code), (result.exit_code, result.stdout[-500:], result.stderr[-500:])
    assert "Traceback" not in result.stderr
    if stderr:
        *warnings, error = result.stderr.splitlines()
        assert error.startswith(stderr), result.stderr  # the error: one line, the last
        assert all(w.startswith("halton-meter: warning: ") for w in warnings), result.stderr
    elif code != ExitCode.OK:
        assert result.stderr == "" and result.stdout  # the verdict is the output itself, not an error
