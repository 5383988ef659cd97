"""The portable process path (halton_meter/serve/process.py): how `serve` stops its children and hands the
proxy port to the edge where POSIX signals and descriptor passing do not exist (Windows). It runs here for
real: the helpers in child processes, and a whole `serve` with HALTON_METER_PORTABLE=1."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from faultkit import (
    StreamCall,
    assert_accounting,
    core_pid,
    gated_stream,
    one_shot_client,
    received_since,
    timed_call,
    wait_until,
)

from halton_meter.serve import process
from halton_meter.serve.process import CONTROL_ENV, bind_own_port, install_stop_handlers
from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import Gate, Reply
from halton_meter.testing.meter import MeterProcess

CHILD = textwrap.dedent("""
    import asyncio, sys
    from halton_meter.serve.process import watch_stdin

    async def main():
        stopped = asyncio.Event()
        watch_stdin(asyncio.get_running_loop(), stopped.set)
        print("READY", flush=True)
        try:
            await asyncio.wait_for(stopped.wait(), float(sys.argv[1]))
            print("STOPPED", flush=True)
        except TimeoutError:
            print("STILL RUNNING", flush=True)

    asyncio.run(main())
""")


def _child(env: dict[str, str], wait: float) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(wait)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
    assert child.stdout is not None and child.stdout.readline().strip() == "READY"
    return child


def test_closing_the_control_pipe_stops_the_child() -> None:
    child = _child({CONTROL_ENV: "stdin"}, 20)
    began = time.monotonic()
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(10) == 0 and time.monotonic() - began < 5
    assert child.stdout is not None and child.stdout.read().splitlines()[-1] == "STOPPED"


def test_a_child_the_supervisor_did_not_start_ignores_its_stdin() -> None:
    child = _child({CONTROL_ENV: ""}, 1.0)
    assert child.stdin is not None
    child.stdin.close()
    assert child.stdout is not None and child.stdout.readline().strip() == "STILL RUNNING"
    assert child.wait(10) == 0


def test_without_posix_loop_signals_ctrl_c_still_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop with no `add_signal_handler` (Windows' proactor): Ctrl-C is caught with signal.signal."""
    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def unsupported(*_: Any) -> None:
            raise NotImplementedError

        monkeypatch.setattr(loop, "add_signal_handler", unsupported)
        stopped = asyncio.Event()
        install_stop_handlers(loop, stopped.set)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(stopped.wait(), 5)

    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        asyncio.run(scenario())
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def test_the_edge_binds_its_own_port_and_no_one_else_can() -> None:
    first = bind_own_port(0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(OSError) as caught:
            bind_own_port(port)
        assert caught.value.errno == errno.EADDRINUSE
    finally:
        first.close()
    again = bind_own_port(port)  # free again once released
    again.close()


def test_portable_is_on_for_windows_and_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HALTON_METER_PORTABLE", raising=False)
    assert process.portable() is (os.name != "posix")
    monkeypatch.setenv("HALTON_METER_PORTABLE", "1")
    assert process.portable() is True
    monkeypatch.setattr(process.os, "name", "nt")
    monkeypatch.delenv("HALTON_METER_PORTABLE")
    assert process.portable() is True


# --------------------------------------------------------------------------------------------------
# A whole `serve` on the portable path
# --------------------------------------------------------------------------------------------------

PORTABLE = {"HALTON_METER_PORTABLE": "1"}


def edge_pid(meter: MeterProcess) -> int | None:
    try:
        return int(json.loads((meter.home / "run" / "edge-stats.json").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@pytest.mark.e2e
def test_portable_serve_meters_and_its_stop_lets_streams_finish(start_meter, fake_provider) -> None:
    """The edge binds the port itself; the stop reaches every child by its control pipe alone (no signal
    is sent to a child in this mode) and the stream in flight still finishes and is recorded."""
    gate = Gate(timeout=30)
    events = gated_stream(fake_provider, gate)
    meter = start_meter(env={**PORTABLE, "HALTON_METER_WORKERS": "2"})
    with one_shot_client(meter, fake_provider.ca_pem) as client:
        assert [timed_call(client).status for _ in range(4)] == [200] * 4
    stream = StreamCall(meter, fake_provider).start()
    gate.wait_reached(15)
    meter.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    gate.open()
    stream.join(20)
    assert stream.error is None and bytes(stream.body) == b"".join(events)
    assert meter.proc.wait(40) == 0
    rows = [r for r in meter.rows() if r["endpoint_kind"] == "messages"]
    assert len(rows) == 5 and all(r["complete"] == 1 for r in rows)
    log = meter.log()
    # edge, first core and the worker each stopped on the closed pipe
    assert log.count("stop requested: the supervisor closed our control pipe") >= 3, log[-3000:]


@pytest.mark.e2e
def test_portable_serve_restarts_a_killed_edge_on_the_same_port(start_meter, fake_provider) -> None:
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=5, output_tokens=2)))
    meter = start_meter(env=PORTABLE)
    base = len(fake_provider.requests)
    victim = wait_until(lambda: edge_pid(meter), 10, what="the edge's stats")
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: edge_pid(meter) not in (None, victim), 30, what="a new edge")
    with one_shot_client(meter, fake_provider.ca_pem) as client:  # the same proxy port as before
        results = [timed_call(client) for _ in range(4)]
    assert [r.status for r in results] == [200] * 4
    assert_accounting(meter, 4, received=received_since(fake_provider, base))


@pytest.mark.e2e
def test_portable_serve_restarts_a_killed_core_and_marks_its_call(start_meter, fake_provider) -> None:
    gate = Gate(timeout=30)
    gated_stream(fake_provider, gate)
    meter = start_meter(env=PORTABLE)
    base = len(fake_provider.requests)
    victim = core_pid(meter)
    assert victim is not None
    stream = StreamCall(meter, fake_provider).start()
    try:
        gate.wait_reached(15)
        os.kill(victim, signal.SIGKILL)
        stream.join(10)
        assert stream.error is not None
    finally:
        gate.open()
    wait_until(lambda: core_pid(meter) not in (None, victim), 30, what="a new core")
    with one_shot_client(meter, fake_provider.ca_pem, timeout=15) as client:
        later = [timed_call(client) for _ in range(4)]
    assert [r.status for r in later] == [200] * 4
    ledger = assert_accounting(meter, 5, received=received_since(fake_provider, base))
    assert ledger.gaps == 0
    assert [r["incomplete_reason"] for r in meter.rows() if r["incomplete_reason"]] == ["core_crash"]


def test_portable_serve_names_a_taken_port(tmp_path: Path) -> None:
    """The supervisor still checks the port before the edge binds it: one line, exit 4."""
    taken = bind_own_port(0)
    try:
        port = taken.getsockname()[1]
        home = tmp_path / "home"
        result = subprocess.run([sys.executable, "-m", "halton_meter", "serve", "--edge-port", str(port),
                                 "--api-port", "0"], env={**os.environ, **PORTABLE, "HALTON_METER_HOME": str(home)},
                                capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert result.returncode == 4, result
    assert f"port {port} (edge) is in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("portable", [False, True], ids=["posix", "portable"])
def test_children_stop_when_serve_is_killed(start_meter, fake_provider, portable: bool) -> None:
    """`serve` killed with SIGKILL can clean nothing up: its edge and cores notice the end of their control
    pipe, stop and release the ports on their own, well within the grace."""
    import psutil

    meter = start_meter(env={"HALTON_METER_WORKERS": "2", **(PORTABLE if portable else {})})
    wait_until(lambda: (meter.home / "run" / "core-worker-1.json").exists(), 30, what="the worker")
    children = psutil.Process(meter.proc.pid).children()
    assert len(children) == 3  # edge, first core, worker
    meter.proc.kill()
    meter.proc.wait(10)
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert alive == [], [p.cmdline() for p in alive]
