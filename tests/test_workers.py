"""Several core processes behind one edge (`[core] workers`, docs/concepts/proxy.md "Several cores"), on a real
`serve`: the edge spreads calls over them, the first core writes every core's rows, budgets hold across
them, and killing either kind of core leaves rows flagged incomplete, never silence."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from faultkit import (
    GATED_EVENTS,
    StreamCall,
    assert_accounting,
    core_pid,
    gated_stream,
    one_shot_client,
    received_since,
    timed_call,
    wait_until,
)

from halton_meter.testing import bodies
from halton_meter.testing.fake_provider import FakeProvider, Gate, Reply
from halton_meter.testing.meter import MeterProcess

pytestmark = pytest.mark.e2e

WORKERS = {"HALTON_METER_WORKERS": "2"}


@pytest.fixture
def two_cores(fake_provider: FakeProvider, tmp_path: Path) -> Any:
    started: list[MeterProcess] = []

    def start(extra_config: str = "") -> MeterProcess:
        meter = MeterProcess.start(tmp_path / f"home{len(started)}", fake_provider, extra_config=extra_config,
                                   env=WORKERS)
        started.append(meter)
        wait_until(lambda: worker_pid(meter) is not None, 30, what="core worker 1 publishing itself")
        return meter

    yield start
    for meter in started:
        meter.stop()


def worker_pid(meter: MeterProcess, index: int = 1) -> int | None:
    try:
        return int(json.loads((meter.home / "run" / f"core-worker-{index}.json").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def core_stats(meter: MeterProcess) -> dict[str, Any]:
    return dict(json.loads((meter.home / "run" / "core-stats.json").read_text()))


def serving(pid: int, fake: FakeProvider) -> bool:
    """Whether this core process has a connection open to the fake provider (it carries a call now)."""
    try:
        return any(c.raddr and c.raddr.port == fake.port and c.status == psutil.CONN_ESTABLISHED
                   for c in psutil.Process(pid).net_connections(kind="tcp"))
    except psutil.Error:
        return False


def two_streams_one_per_core(meter: MeterProcess, fake: FakeProvider, gate: Gate) -> tuple[StreamCall, StreamCall]:
    """Two streams held at the gate: the edge gives the second to the core without a tunnel open."""
    first = StreamCall(meter, fake).start()
    wait_until(lambda: gate.reached, 15, what="the first stream at the gate")
    second = StreamCall(meter, fake).start()
    pids = (core_pid(meter), worker_pid(meter))
    wait_until(lambda: all(p is not None and serving(p, fake) for p in pids), 15,
               what="each core carrying one stream")
    head = len(b"".join(GATED_EVENTS[:3]))
    wait_until(lambda: len(first.body) >= head and len(second.body) >= head, 15,
               what="the first events at both clients")
    return first, second


def test_two_cores_share_the_calls_and_every_call_is_one_row(two_cores, fake_provider) -> None:
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=11, output_tokens=3)))
    meter = two_cores()
    base = len(fake_provider.requests)
    results = []
    with one_shot_client(meter, fake_provider.ca_pem) as client:  # a connection per call: each is balanced
        for _ in range(30):
            results.append(timed_call(client))
    assert {r.status for r in results} == {200}
    ledger = assert_accounting(meter, 30, received=received_since(fake_provider, base))
    assert ledger.gaps == 0
    rows = [r for r in meter.rows() if r["endpoint_kind"] == "messages"]
    assert len(rows) == 30 and all(r["complete"] == 1 and r["input_tokens"] == 11 for r in rows)
    # Both cores metered some of them (the counters are published once a second); the first wrote them all.
    def settled() -> dict[str, Any] | None:
        stats = core_stats(meter)
        linked = stats["workers"]["linked"]
        return stats if linked and stats["calls"]["metered"] >= 30 and linked[0].get("metered") else None

    stats = wait_until(settled, 10, what="every core's counters")
    [linked] = stats["workers"]["linked"]
    assert linked["index"] == 1 and linked["pid"] == worker_pid(meter)
    assert linked["records"] >= 2 * 5  # a provisional and a final record per call it carried, at least 5 calls
    assert 0 < linked["metered"] < stats["calls"]["metered"]
    assert stats["workers"]["configured"] == 2


def test_a_worker_killed_mid_stream_leaves_a_core_crash_row_and_comes_back(two_cores, fake_provider) -> None:
    gate = Gate(timeout=30)
    events = gated_stream(fake_provider, gate)
    meter = two_cores()
    base = len(fake_provider.requests)
    first, second = two_streams_one_per_core(meter, fake_provider, gate)
    victim = worker_pid(meter)
    assert victim is not None
    try:
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        # The worker's stream is cut at once; the first core's goes on.
        cut = wait_until(lambda: next((s for s in (first, second) if s.ended is not None), None), 10,
                         what="the killed worker's stream to end")
        assert cut.error is not None and cut.ended is not None and cut.ended - killed_at < 3.0
        assert bytes(cut.body) == b"".join(events[:3])
        alive = second if cut is first else first
        assert alive.ended is None
    finally:
        gate.open()
    alive.join(15)
    assert alive.error is None and bytes(alive.body) == b"".join(events)
    # No silence: the first core wrote the cut call as core_crash the moment its worker's link closed.
    crashed = wait_until(lambda: [r for r in meter.rows() if r["incomplete_reason"] == "core_crash"], 10,
                         what="a core_crash row")
    assert len(crashed) == 1 and crashed[0]["complete"] == 0
    # The supervisor starts the worker again, and calls keep being metered.
    wait_until(lambda: worker_pid(meter) not in (None, victim), 30, what="a new worker")
    with one_shot_client(meter, fake_provider.ca_pem) as client:
        later = [timed_call(client) for _ in range(6)]
    assert {r.status for r in later} == {200}
    sent = 2 + len(later)
    ledger = assert_accounting(meter, sent, received=received_since(fake_provider, base))
    assert ledger.gaps == 0 and ledger.landed == sent
    wait_until(lambda: core_stats(meter)["workers"]["crashed_calls"] == 1, 5, what="the crash counted")


def test_the_first_core_killed_loses_nothing_its_workers_carried(two_cores, fake_provider) -> None:
    """The first core owns the database. Killed, its own stream is cut (core_crash, as with one core); the
    worker keeps what the first core had not acknowledged, finishes its stream, journals the records and
    exits; the supervisor then starts the first core (whose recovery replays that journal) and the worker."""
    gate = Gate(timeout=30)
    events = gated_stream(fake_provider, gate)
    meter = two_cores()
    base = len(fake_provider.requests)
    first, second = two_streams_one_per_core(meter, fake_provider, gate)
    victim, worker = core_pid(meter), worker_pid(meter)
    assert victim is not None and worker is not None
    try:
        os.kill(victim, signal.SIGKILL)
        cut = wait_until(lambda: next((s for s in (first, second) if s.ended is not None), None), 10,
                         what="the first core's stream to end")
        assert cut.error is not None
        kept = second if cut is first else first
        time.sleep(0.3)
        assert kept.ended is None  # the worker drains its call instead of cutting it
    finally:
        gate.open()
    kept.join(15)
    assert kept.error is None and bytes(kept.body) == b"".join(events)
    wait_until(lambda: core_pid(meter) not in (None, victim), 40, what="a new first core")
    wait_until(lambda: worker_pid(meter) not in (None, worker), 40, what="a new worker")
    rows = wait_until(lambda: (rs := [r for r in meter.rows() if r["endpoint_kind"] == "messages"])
                      and len(rs) == 2 and all(r["incomplete_reason"] != "in_progress" for r in rs) and rs, 20,
                      what="both streams' rows")
    reasons = sorted(str(r["incomplete_reason"]) for r in rows)
    assert reasons == ["None", "core_crash"], rows
    done = next(r for r in rows if r["incomplete_reason"] is None)
    assert done["complete"] == 1 and done["output_tokens"] == 90 and done["input_tokens"] == 700
    with one_shot_client(meter, fake_provider.ca_pem) as client:
        later = [timed_call(client) for _ in range(4)]
    assert {r.status for r in later} == {200}
    ledger = assert_accounting(meter, 2 + len(later), received=received_since(fake_provider, base))
    assert ledger.gaps == 0


def test_a_block_budget_holds_across_cores(two_cores, fake_provider) -> None:
    """One nano-dollar a day: the first call passes and every later one is refused, whichever core reads it
    (a worker asks the first core's ledger; a ledger per core would let each core's first call through)."""
    fake_provider.add("POST", "/v1/messages", Reply(body=bodies.anthropic_message(input_tokens=11, output_tokens=3)))
    meter = two_cores("""
[[budgets]]
name = "tiny"
period = "day"
limit_usd = "0.000000001"
action = "block"
""")
    wait_until(lambda: any(b.get("name") == "tiny" and b.get("loaded")
                           for b in core_stats(meter).get("budgets", [])), 10, what="the ledger loaded")
    base = len(fake_provider.requests)
    with one_shot_client(meter, fake_provider.ca_pem) as client:
        first = timed_call(client)
        assert first.status == 200
        meter.wait_for_calls(1)
        later = [timed_call(client) for _ in range(6)]
    assert [r.status for r in later] == [429] * 6, [(r.status, r.body[:200]) for r in later]
    assert all(b"budget tiny reached" in r.body for r in later)
    assert received_since(fake_provider, base) == 1  # no refused call reached the provider
    # The worker read (refused and recorded) some of them: its records reached the first core.
    wait_until(lambda: core_stats(meter)["workers"]["linked"][0]["records"] >= 3, 5, what="the worker's records")


def test_sigterm_lets_streams_on_every_core_finish(two_cores, fake_provider) -> None:
    gate = Gate(timeout=30)
    events = gated_stream(fake_provider, gate)
    meter = two_cores()
    first, second = two_streams_one_per_core(meter, fake_provider, gate)
    meter.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    gate.open()
    for stream in (first, second):
        stream.join(20)
        assert stream.error is None and bytes(stream.body) == b"".join(events)
    assert meter.proc.wait(40) == 0
    rows = [r for r in meter.rows() if r["endpoint_kind"] == "messages"]
    assert len(rows) == 2 and all(r["complete"] == 1 and r["output_tokens"] == 90 for r in rows), rows
    assert not list((meter.home / "spool").glob("journal-*.seg"))  # everything committed: no journal left
