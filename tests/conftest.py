from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from halton_meter.paths import Paths

pytest_plugins = ["halton_meter.testing.pytest_plugin"]

settings.register_profile("halton-meter", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("halton-meter")  # a loaded CI machine must not turn a slow example into a failure

SERIAL_MODULES = frozenset({
    "test_faults.py", "test_integrity.py", "test_load.py", "test_health.py", "test_memory_bound.py",
    "test_bench_smoke.py",
})
"""Modules that assert tight time bounds (restart graces, probe timeouts, latency ratios): `make test` runs the
rest on two workers (pytest-xdist), then these on their own, so another test's CPU never decides whether a
restart fits in its grace. Bounds of several seconds (init, the 2 s live tail) hold on a shared CPU."""




# One core process per meter, for meters of any fixture scope (a module's shared meter starts before any
# test's monkeypatch): the suite starts hundreds of meters on two CPUs. The modules that prove several cores
# (test_workers.py, test_load.py, test_portable_serve.py, the K2 variants) ask for theirs explicitly.
os.environ["HALTON_METER_WORKERS"] = "1"

SECRET_CANARIES = (b"CANARY", b"SECRETKEY")
"""Every credential and prompt the suite sends contains one of these (tests/test_secrets_at_rest.py)."""


@pytest.fixture(scope="session", autouse=True)
def _no_secrets_at_rest() -> Iterator[None]:
    """After the session's last test, whatever the order or selection: every meter it started is stopped
    and each file it wrote is searched for the canaries. A hit fails the run."""
    from halton_meter.testing.meter import STARTED, secrets_at_rest

    yield
    if not STARTED:
        return
    searched, hits = secrets_at_rest(list(STARTED), SECRET_CANARIES)
    assert searched >= 3 * len(STARTED), "each meter leaves at least a database, a WAL or log, and its output"
    assert hits == [], f"credentials or prompt text reached disk: {hits}"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's home, proxies, plugin filters or colours."""
    monkeypatch.setenv("HALTON_METER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("HALTON_METER_WORKERS", "1")  # as above, even for a test that changed the environment
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy",
                 "HALTON_METER_PLUGINS", "HALTON_METER_DISABLE_PLUGINS", "HALTON_METER_PROJECT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "home")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[object]:
    """Run `halton-meter ARGS` in-process through the real entry point (error handling included)."""
    from halton_meter.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:  # pragma: no cover - main always exits
            code = 0
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    yield run


@pytest.fixture
def start_meter(fake_provider: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start a `serve` of the test's own (it may be broken on purpose); stopped however the test ends."""
    from halton_meter.testing.meter import MeterProcess

    started: list[MeterProcess] = []

    def start(home: Path | None = None, extra_config: str = "", env: dict[str, str] | None = None) -> MeterProcess:
        meter = MeterProcess.start(home or tmp_path / f"home{len(started)}", fake_provider, extra_config=extra_config,
                                   env=env)
        started.append(meter)
        return meter

    yield start
    for meter in started:
        meter.stop()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: `serial` must be on the items by then
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
    if os.environ.get("HALTON_METER_SLOW") != "1" and "slow" not in (config.getoption("-m") or ""):
        skip = pytest.mark.skip(reason="slow soak variant: run with -m slow or HALTON_METER_SLOW=1")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
